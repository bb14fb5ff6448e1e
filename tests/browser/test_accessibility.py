"""axe-core (npm ``axe-core``, pinned in package-lock.json) on the widget and the demo, in Chromium and Firefox.

axe is evaluated in the page through the automation protocol (the page's CSP does not govern that) and checks the
document with the widget's open shadow root. A bare host page is checked in every state a visitor meets (idle, the
call-back form, an error, live, muted, ended), in the light and dark themes and a site's brand colours, at a phone's
and a laptop's size; the demo idle, live and ended at both sizes. No serious or critical violation is allowed, and
a minor or moderate one only if it is listed in ``ACCEPTED`` with the reason, so a new finding fails the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webcall.emulator.server import EmulatorServer

from .conftest import NewTab, Site
from .shared import LIVE, TAG
from .tabs import ChromiumTab, Tab

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SIZES = {"phone": (390, 844), "laptop": (1280, 800)}
BRAND = {"--webcall-accent": "#e11d48", "--webcall-radius": "4px", "--webcall-bg": "#fff7ed", "--webcall-fg": "#431407"}
"""The demo's brand theme: a site's own colours on the widget."""
ACCEPTED: dict[str, str] = {}
"""Minor or moderate axe rules accepted on these pages, with the reason (none at present)."""

RUN_AXE = """async () => {
  const result = await axe.run(document, { resultTypes: ["violations"] });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" > ")),
  }));
}"""


def axe_source() -> str:
    assert AXE.is_file(), f"{AXE} is missing: run `npm ci`"
    return AXE.read_text(encoding="utf-8")


async def violations(tab: Tab, where: str) -> list[str]:
    """What axe finds on the page now that is not accepted, one line each."""
    if not await tab.call("() => typeof window.axe === 'object'"):
        await tab.call("() => { " + axe_source() + "\n return true; }")
    found: list[dict[str, Any]] = await tab.call(RUN_AXE)
    return [
        f"{where}: {v['id']} ({v['impact']}): {v['help']} at {v['nodes']}"
        for v in found
        if v["impact"] in ("serious", "critical") or v["id"] not in ACCEPTED
    ]


async def dress(tab: Tab, theme: str) -> None:
    """The widget in ``theme``: light or dark (its attribute), or the brand's colours (custom properties), with the
    system in light or (``brand-on-dark``, Chromium's media emulation) dark mode."""
    if theme == "brand-on-dark":
        if not isinstance(tab, ChromiumTab):
            pytest.skip("the system's dark mode is emulated in Chromium")
        await tab.page.emulate_media(color_scheme="dark")
    if theme.startswith("brand"):
        await tab.call(
            "(tag, props) => { const el = document.querySelector(tag);"
            " for (const [k, v] of Object.entries(props)) el.style.setProperty(k, v); }",
            TAG,
            BRAND,
        )
    else:
        await tab.call(
            "(tag, theme) => document.querySelector(tag).setAttribute('theme', theme)", "dialnexa-webcall", theme
        )


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("theme", ["light", "dark", "brand", "brand-on-dark"])
async def test_the_widget_in_every_state_theme_and_size_has_no_axe_violation(
    theme: str, size: str, site: Site, emu: EmulatorServer, new_tab: NewTab
) -> None:
    tab = await new_tab(site)
    await tab.set_viewport(*SIZES[size])
    await dress(tab, theme)
    await tab.call("(tag) => document.querySelector(tag).setAttribute('callback', 'true')", TAG)
    start = tab.button("Start call")
    await start.wait_visible()
    found = await violations(tab, "idle")

    await tab.button("Call me back instead").click()
    await tab.role("textbox", "Your phone number").wait_visible()
    found += await violations(tab, "call-back form")
    await tab.button("Back").click()

    await emu.control.add_fault(route="POST /v1/web-calls/{call_id}/whip", kind="status", status=500, count=1)
    await start.click()
    await tab.wait_state("error", within=15)
    found += await violations(tab, "error")

    await tab.button("Try again").click()
    await tab.wait_state(*LIVE, within=15)
    found += await violations(tab, "live")
    await tab.button("Mute").click()
    await tab.button("Mute").wait_attribute("aria-pressed", "true")
    found += await violations(tab, "muted")
    await tab.button("End call").click()
    await tab.wait_state("ended", within=10)
    found += await violations(tab, "ended")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("size", sorted(SIZES))
async def test_the_demo_has_no_axe_violation(size: str, demo_url: str, new_tab: NewTab) -> None:
    tab = await new_tab(demo_url, "/?agent=sales")
    await tab.set_viewport(*SIZES[size])
    found = await violations(tab, "demo idle")
    await tab.button("Open voice call").click()
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE, within=15)
    found += await violations(tab, "demo live")
    await tab.button("End call").click()
    await tab.wait_state("ended", within=10)
    await tab.text("call.ended").wait_visible(within=10)
    found += await violations(tab, "demo ended")
    assert found == [], "\n".join(found)
