"""The sales demo as a salesperson runs it: ``python -m demo`` starts within seconds on the embedded emulator; pick an
agent, say who you are, call from the floating widget, hear your name, watch the backend's events, end, read the
summary. The demo's own pages carry a strict CSP too, in Chromium and in Firefox."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import expect

from .conftest import NewTab
from .shared import LIVE, TAG, start_demo
from .tabs import ChromiumTab

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parents[2]
STARTUP_BUDGET = 5.0  # seconds from launch to the first page served


@dataclass
class Demo:
    url: str
    started_in: float


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def demo() -> AsyncIterator[Demo]:
    """``python -m demo --port N`` in a subprocess, on the embedded emulator (no DialNexa settings in its env)."""
    process, url, started_in = await start_demo(stderr=asyncio.subprocess.PIPE)
    try:
        yield Demo(url=url, started_in=started_in)
    finally:
        if process.returncode is None:
            process.terminate()
        _, errors = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, errors.decode(errors="replace")[-2000:]


# The demo's own pages (agent links by pattern, forms, the event console's list) are driven with Playwright's
# locators; the widget's call itself runs in both engines in test_call.py.
@pytest.mark.engines("chromium")
async def test_demo_call_with_the_visitors_name_events_and_summary(demo: Demo, new_tab: NewTab) -> None:
    assert demo.started_in < STARTUP_BUDGET, f"the demo took {demo.started_in:.1f} s to serve its first page"
    tab = await new_tab(demo.url, inject_probe=True)
    assert isinstance(tab, ChromiumTab)
    page = tab.page
    await expect(page.get_by_role("heading", level=1)).to_contain_text("voice agent")

    await page.get_by_role("link", name=re.compile(r"^Support\b")).click()
    await page.wait_for_url(re.compile(r"agent=support"))
    await expect(page.get_by_role("link", name=re.compile(r"^Support\b"))).to_have_attribute("aria-current", "true")
    await page.get_by_role("textbox", name="Your name").fill("Ana")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(re.compile(r"agent=support"))
    await expect(page.get_by_text("The agent will greet Ana.")).to_be_visible()
    await page.locator(TAG).wait_for(state="attached")

    await tab.button("Open voice call").click()
    await expect(page.get_by_role("region", name="Talk to Support")).to_be_visible()
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    await tab.wait_audible()
    await tab.transcript.wait_contains("Hi Ana, you are through to support.")

    console = page.get_by_role("list", name="Event console")
    await expect(console.get_by_role("listitem").filter(has_text="session.created")).to_contain_text("name=Ana")
    await expect(console.get_by_role("listitem").filter(has_text="call.started")).to_contain_text("support")

    await tab.button("End call").click()
    await tab.wait_state("ended")
    summary = page.locator(f"{TAG} [part=summary]")
    await expect(summary).to_be_visible(timeout=10_000)
    await expect(summary).to_contain_text("Ana spoke with Sam from Support")
    await expect(console.get_by_role("listitem").filter(has_text="call.ended")).to_have_count(1)
    await expect(console.get_by_role("listitem").filter(has_text="summary")).to_contain_text(
        "Ana spoke with Sam from Support"
    )
    await expect(console.get_by_role("listitem").filter(has_text="transcript")).not_to_have_count(0)
    await tab.assert_clean()


@pytest.mark.engines("chromium", "firefox")
@pytest.mark.parametrize("path", ["/?theme=dark", "/?theme=brand&agent=collections", "/embed?theme=brand"])
async def test_demo_pages_run_under_their_csp_without_errors(demo: Demo, new_tab: NewTab, path: str) -> None:
    tab = await new_tab(demo.url, path, inject_probe=True)
    csp = await tab.call("() => fetch(location.href).then((r) => r.headers.get('content-security-policy'))")
    assert csp and "default-src 'self'" in csp and "unsafe" not in csp
    await tab.button("Open voice call").click()
    await tab.button("Start call").wait_visible()
    await tab.assert_clean()


async def call_and_hang_up(tab: ChromiumTab, name: str) -> None:
    """Save the persona, call the Sales agent, hear it greet ``name``, hang up and read the summary."""
    page = tab.page
    full_name, company = name.split(" / ")
    await page.get_by_role("textbox", name="Your name").fill(full_name)
    await page.get_by_role("textbox", name="Company").fill(company)
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text(f"The agent will greet {full_name}.")).to_be_visible()
    await page.locator(TAG).wait_for(state="attached")
    await tab.button("Open voice call").click()
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    await tab.transcript.wait_contains(f"Hello {full_name}!")
    await tab.button("End call").click()
    await tab.wait_state("ended")
    console = page.get_by_role("list", name="Event console")
    await expect(console.get_by_role("listitem").filter(has_text="summary").filter(has_text=full_name)).to_have_count(1)


async def assert_console_private(tab: ChromiumTab, own: str, other: str) -> None:
    """The tab's console shows its visitor's one call, with transcript and summary, and nothing of the other's."""
    console = tab.page.get_by_role("list", name="Event console")
    items = console.get_by_role("listitem")
    own_name, own_company = own.split(" / ")
    await expect(items.filter(has_text="session.created")).to_have_count(1)
    await expect(items.filter(has_text="session.created")).to_contain_text(f"name={own_name}")
    await expect(items.filter(has_text="session.created")).to_contain_text(f"company={own_company}")
    await expect(items.filter(has_text="call.ended")).to_have_count(1)
    await expect(items.filter(has_text="transcript").filter(has_text=own_name)).not_to_have_count(0)
    text = await console.inner_text()
    for word in [*other.replace(" / ", " ").split()]:
        assert word not in text, f"{own}'s console shows {word!r} of {other}'s call:\n{text}"


@pytest.mark.engines("chromium")
async def test_each_visitor_sees_only_their_own_calls_in_the_console(demo: Demo, new_tab: NewTab) -> None:
    """Two visitors (two browser contexts, two cookie jars) on the same demo: each console shows that visitor's
    call, its transcript and summary, live and after a reload, and never the other's name, company or words."""
    ada, grace = "Ada Lovelace / Analytical", "Grace Hopper / Navy"
    ada_tab = await new_tab(demo.url, "/?agent=sales", inject_probe=True)
    grace_tab = await new_tab(demo.url, "/?agent=sales", inject_probe=True)
    assert isinstance(ada_tab, ChromiumTab) and isinstance(grace_tab, ChromiumTab)
    cookies = {c["name"]: c for c in await ada_tab.context.cookies()}
    visitor = cookies["demo_visitor"]
    assert visitor["httpOnly"] and visitor["sameSite"] == "Lax"
    assert visitor["value"] != {c["name"]: c for c in await grace_tab.context.cookies()}["demo_visitor"]["value"]

    await call_and_hang_up(ada_tab, ada)  # Grace's console is open while Ada calls
    await call_and_hang_up(grace_tab, grace)  # and Ada's while Grace calls
    await assert_console_private(ada_tab, ada, grace)
    await assert_console_private(grace_tab, grace, ada)

    for tab, own, other in ((ada_tab, ada, grace), (grace_tab, grace, ada)):
        await tab.page.reload()  # the backlog, too, is the visitor's own
        await assert_console_private(tab, own, other)
        await tab.assert_clean()
