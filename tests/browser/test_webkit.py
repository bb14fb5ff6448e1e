"""A browser that cannot make voice calls: Debian's WebKitGTK, which has no RTCPeerConnection.

The widget says so in words, offers "call me back" as its main action instead of a start button that cannot work,
places that call back, and lays out on a phone and a laptop screen as it does in the other engines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from webcall.emulator.testing import eventually

from .conftest import Site
from .shared import TAG
from .webkit import WebKit, missing, webkit_session

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

UNSUPPORTED = "This browser can't make voice calls."
PHONE_NUMBER = "+14155550123"

# The widget's parts as a visitor meets them, read through its open shadow root.
WIDGET_STATE = """
const host = document.querySelector(arguments[0]);
if (!host || !host.shadowRoot || !customElements.get(arguments[0])) return null;
const root = host.shadowRoot;
const shown = (el) => !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
const button = (name) => [...root.querySelectorAll("button")].find(
  (b) => (b.getAttribute("aria-label") || b.textContent.trim()) === name);
const start = button("Start call");
const callBack = button("Call me back instead");
return {
  state: host.getAttribute("state"),
  status: (root.querySelector("[role=status]") || {}).textContent,
  startShown: shown(start),
  callBackShown: shown(callBack),
  callBackIsMain: !!callBack && callBack.classList.contains("primary-button"),
  formShown: shown(root.querySelector("form")),
  text: [...root.querySelectorAll("*")].filter((el) => shown(el) && !el.children.length)
    .map((el) => el.textContent.trim()).filter(Boolean),
  focused: root.activeElement ? (root.activeElement.getAttribute("aria-label") || root.activeElement.id) : null,
};
"""

CLICK = """
const root = document.querySelector(arguments[0]).shadowRoot;
const target = [...root.querySelectorAll("button")].find(
  (b) => (b.getAttribute("aria-label") || b.textContent.trim()) === arguments[1]);
if (!target) return false;
target.click();
return true;
"""

FILL_CALL_BACK_FORM = """
const root = document.querySelector(arguments[0]).shadowRoot;
root.querySelector("input[type=tel]").value = arguments[1];
const consent = root.querySelector("input[type=checkbox]");
if (consent) consent.checked = true;
root.querySelector("form").requestSubmit();
return true;
"""

LAYOUT = """
const host = document.querySelector(arguments[0]);
const root = host.shadowRoot;
const launcher = root.querySelector("[part~=launcher]");
const box = launcher ? launcher.getBoundingClientRect() : null;
const visible = (el) => el.getClientRects().length > 0;
const buttons = [...root.querySelectorAll("button")].filter(visible).map((b) => {
  const r = b.getBoundingClientRect();
  return { name: b.getAttribute("aria-label") || b.textContent.trim(), w: r.width, h: r.height };
});
const icons = [...root.querySelectorAll("svg")].filter(visible).map((s) => s.getBoundingClientRect().width);
return {
  viewport: innerWidth,
  scrollWidth: document.documentElement.scrollWidth,
  launcher: box && { x: box.x, y: box.y, w: box.width, h: box.height },
  launcherOnTop: !!box && root.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2)?.closest("button")
    === launcher,
  buttons,
  icons,
};
"""


@pytest.fixture(scope="module")
def webkit_available() -> None:
    absent = missing()
    if absent is not None:
        pytest.fail(f"{absent} is missing: apt-get install webkit2gtk-driver xvfb (.ci/run installs them)")


@pytest_asyncio.fixture(loop_scope="session")
async def webkit(webkit_available: None) -> AsyncIterator[WebKit]:
    async with webkit_session() as browser:
        yield browser


async def widget(webkit: WebKit) -> dict[str, Any]:
    """The widget's state once it is defined and rendered."""
    found: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal found
        found = await webkit.run(WIDGET_STATE, TAG) or {}
        return bool(found.get("status"))

    await eventually(ready, 10, what="the widget rendered in WebKit")
    return found


async def call_back_offered(webkit: WebKit) -> dict[str, Any]:
    """The widget's state once it offers "call me back" (after the plugin said it rings phones back)."""
    found: dict[str, Any] = {}

    async def offered() -> bool:
        nonlocal found
        found = await widget(webkit)
        return bool(found.get("callBackShown"))

    await eventually(offered, 10, what="the widget offered a call back in WebKit")
    return found


async def test_webkit_is_told_it_cannot_call_and_is_offered_a_call_back(webkit: WebKit, site: Site) -> None:
    assert await webkit.run("return typeof RTCPeerConnection") == "undefined", "this WebKit can make calls now"
    await webkit.resize(1280, 800)
    await webkit.goto(site.origin + "/")
    seen = await call_back_offered(webkit)
    assert seen["status"] == UNSUPPORTED, seen
    assert not seen["startShown"], "a start button that cannot work is hidden"
    assert seen["callBackShown"] and seen["callBackIsMain"], seen
    assert not any("right here in your browser" in line for line in seen["text"]), "no invitation to a browser call"
    assert seen["state"] == "idle"


async def test_webkit_places_a_call_back(webkit: WebKit, site: Site, tmp_path: Path) -> None:
    assert site.emulator is not None
    await webkit.resize(1280, 800)
    await webkit.goto(site.origin + "/")
    await call_back_offered(webkit)
    assert await webkit.run(CLICK, TAG, "Call me back instead")
    form = await widget(webkit)
    assert form["formShown"], form
    assert await webkit.run(FILL_CALL_BACK_FORM, TAG, PHONE_NUMBER)
    requested = await site.event("callback.requested")
    assert requested.context is not None and requested.context["phone_number"] == PHONE_NUMBER

    async def thanked() -> bool:
        return "Thanks! We'll call you shortly." in (await widget(webkit)).get("text", [])

    await eventually(thanked, 10, what="the widget thanked the visitor")
    await webkit.screenshot(tmp_path / "webkit-call-back-sent.png")


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 800)])
async def test_webkit_layout(webkit: WebKit, site: Site, width: int, height: int, tmp_path: Path) -> None:
    await webkit.resize(width, height)
    await webkit.goto(site.origin + "/zero")
    await widget(webkit)
    layout: dict[str, Any] = await webkit.run(LAYOUT, TAG)
    viewport = layout["viewport"]
    # MiniBrowser's toolbar keeps its window at least ~450 px wide: the narrowest WebKit here is a small phone's.
    assert width - 40 <= viewport <= max(width, 460), f"the window is {viewport} px wide, not about {width}"
    assert layout["scrollWidth"] <= viewport, layout
    launcher = layout["launcher"]
    assert launcher and launcher["x"] >= 0 and launcher["x"] + launcher["w"] <= viewport, layout
    assert layout["launcherOnTop"], layout
    assert await webkit.run(CLICK, TAG, "Open voice call")
    opened: dict[str, Any] = await webkit.run(LAYOUT, TAG)
    assert opened["scrollWidth"] <= viewport, opened
    small = [b for b in opened["buttons"] if round(b["w"]) < 44 or round(b["h"]) < 44]  # layout rounds sub-pixels
    assert small == [], small
    assert opened["icons"] and max(opened["icons"]) <= 32, opened["icons"]
    await webkit.screenshot(tmp_path / f"webkit-{width}.png")
