"""Phones and tablets are first-class, and the widget copes with the browser it gets (Chromium, with a phone's viewport
and touch where it matters).

Layout: the demo and the widget at 360, 390, 820 and 1280 px wide never scroll sideways, the floating call button is on
screen and is what a tap at its centre hits, every button is a touch target of at least 44 x 44 px, and the event
console's lines stay readable. Robustness: a cross-origin ``<iframe>`` without ``allow="microphone"`` (in Firefox too,
which can only tell once the call asks for the microphone), a browser without
constructable stylesheets, the screen wake lock kept through a hidden page, and a headset plugged in mid-call.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from webcall.emulator.testing import eventually

from ..hosting import served
from .bidi import Firefox
from .conftest import MakeSite, SessionBrowsers, Site
from .shared import LIVE, TAG
from .tabs import FirefoxTab, open_tab

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

PHONE = {"width": 390, "height": 844}
SIZES = {
    "phone-360": {"width": 360, "height": 740},
    "phone-390": PHONE,
    "tablet-820": {"width": 820, "height": 1180},
    "laptop-1280": {"width": 1280, "height": 800},
}
TOUCH_TARGET = 44  # px, WCAG 2.5.5 and both platforms' guidelines

# Every check on one page, through the widget's open shadow root.
MEASURE_PAGE = """tag => {
  const host = document.querySelector(tag);
  const root = host.shadowRoot;
  const box = (el) => { const r = el.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; };
  const launcher = root.querySelector("[part=launcher]");
  const l = launcher.getBoundingClientRect();
  const hit = root.elementFromPoint(l.x + l.width / 2, l.y + l.height / 2);
  const visible = (el) => el.checkVisibility() && el.getBoundingClientRect().width > 0;
  // What a finger aims at: buttons, and the volume slider.
  const targets = "button, input[type=range]";
  const buttons = [...document.querySelectorAll(targets), ...root.querySelectorAll(targets)].filter(visible);
  return {
    viewport: innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    launcher: launcher.checkVisibility() ? box(launcher) : null,
    launcherHit: hit !== null && hit.closest("button") === launcher,
    panel: visible(root.querySelector("[part=panel]")) ? box(root.querySelector("[part=panel]")) : null,
    buttons: buttons.map((b) => {
      const name = b.getAttribute("aria-label") || b.textContent.trim() || (b.labels[0] || b).textContent.trim();
      return { name, ...box(b) };
    }),
  };
}"""


@dataclass
class Opened:
    page: Page
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        return [text for kind, text in self.console if kind == "warning"]


async def open_page(
    browser: Browser,
    contexts: list[BrowserContext],
    url: str,
    *,
    viewport: dict[str, int] = PHONE,
    init_script: str | None = None,
) -> Opened:
    """``url`` in a fresh context with a phone's touch screen (below 1000 px) and, optionally, a script that runs
    before any of the page's own."""
    mobile = viewport["width"] < 1000
    context = await browser.new_context(viewport=viewport, has_touch=mobile, is_mobile=mobile)  # type: ignore[arg-type]
    contexts.append(context)
    if init_script is not None:
        await context.add_init_script(script=init_script)
    page = await context.new_page()
    opened = Opened(page)

    def on_console(message: ConsoleMessage) -> None:
        opened.console.append((message.type, message.text))

    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.errors.append(str(error)))
    response = await page.goto(url)
    assert response is not None and response.ok, f"GET {url} failed"
    return opened


@pytest_asyncio.fixture(loop_scope="session")
async def contexts() -> AsyncIterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        await context.close()


async def widget_ready(page: Page) -> None:
    await page.wait_for_function("tag => customElements.get(tag) !== undefined", arg=TAG)
    await page.locator(TAG).wait_for(state="attached")


async def start_call(page: Page) -> None:
    """Click "Start call" and wait until the agent listens."""
    await page.get_by_role("button", name="Start call", exact=True).click()
    await expect(page.locator(TAG)).to_have_attribute("state", "listening", timeout=15_000)


async def measure(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(MEASURE_PAGE, TAG)
    return result


def assert_fits(layout: dict[str, Any]) -> None:
    """No sideways scrolling, the launcher on screen and on top, every button big enough to tap."""
    width = layout["viewport"]
    assert layout["scrollWidth"] <= width, f"the page is {layout['scrollWidth']} px wide in a {width} px viewport"
    launcher = layout["launcher"]
    assert launcher is not None, "the call button is not shown"
    assert launcher["x"] >= 0 and launcher["x"] + launcher["w"] <= width, f"the call button is off screen: {launcher}"
    assert layout["launcherHit"], "a tap at the call button's centre lands on something else"
    small = [b for b in layout["buttons"] if b["w"] < TOUCH_TARGET or b["h"] < TOUCH_TARGET]
    assert small == [], f"buttons smaller than {TOUCH_TARGET} x {TOUCH_TARGET} px: {small}"


# -- the demo on every size ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", sorted(SIZES))
async def test_demo_fits_the_screen(
    chromium: Browser, contexts: list[BrowserContext], demo_url: str, size: str
) -> None:
    viewport = SIZES[size]
    opened = await open_page(chromium, contexts, demo_url + "/", viewport=viewport)
    page = opened.page
    await widget_ready(page)
    layout = await measure(page)
    assert_fits(layout)
    headline = await page.get_by_role("heading", level=1).bounding_box()
    assert headline is not None and headline["width"] >= min(600, viewport["width"] - 48), f"headline {headline}"
    console = await page.get_by_role("list", name="Event console").bounding_box()
    assert console is not None and console["width"] >= min(400, viewport["width"] - 80), f"console {console}"

    # Scrolled to the very end, the call button still sits on top of the page and covers no control.
    await page.evaluate("scrollTo(0, document.documentElement.scrollHeight)")
    assert_fits(await measure(page))
    assert opened.errors == []


async def test_widget_on_a_phone_during_a_call(
    chromium: Browser, contexts: list[BrowserContext], demo_url: str
) -> None:
    opened = await open_page(chromium, contexts, demo_url + "/?agent=sales")
    page = opened.page
    await widget_ready(page)
    launcher = page.get_by_role("button", name="Open voice call", exact=True)
    await launcher.tap()
    start = page.get_by_role("button", name="Start call", exact=True)
    await start.tap()
    await page.wait_for_function(
        "([tag, states]) => states.includes(document.querySelector(tag).getAttribute('state'))", arg=[TAG, list(LIVE)]
    )
    layout = await measure(page)
    assert_fits(layout)
    panel = layout["panel"]
    assert panel is not None and panel["x"] >= 0 and panel["x"] + panel["w"] <= PHONE["width"], f"panel {panel}"
    assert panel["y"] >= 0, f"the panel's top is above the screen: {panel}"
    names = {b["name"] for b in layout["buttons"]}
    assert {"Mute", "End call", "Volume"} <= names, names

    await page.get_by_role("button", name="End call", exact=True).tap()
    await page.wait_for_function("tag => document.querySelector(tag).getAttribute('state') === 'ended'", arg=TAG)
    # The console's lines keep their width: text wraps by words, not one character per line.
    lines = page.get_by_role("list", name="Event console").get_by_role("listitem")
    await expect(lines.filter(has_text="call.ended")).to_have_count(1, timeout=10_000)
    console = await page.get_by_role("list", name="Event console").bounding_box()
    assert console is not None
    widths = await page.eval_on_selector_all(".console li .what", "els => els.map((e) => e.offsetWidth)")
    assert widths and min(widths) >= 0.6 * console["width"], f"console {console['width']} px, lines {widths}"
    assert opened.errors == []


# -- the widget without what it needs ---------------------------------------------------------------------------------
FRAME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>A partner page</title><link rel="icon" href="data:,"></head>
<body><h1>Our partner's assistant</h1>
<iframe src="{src}" title="Assistant" width="360" height="640"{allow}></iframe></body></html>
"""


@asynccontextmanager
async def frame_host(site: Site, *, allow: str | None) -> AsyncIterator[str]:
    """Another origin (its own port) whose page embeds the site in an ``<iframe>``, with ``allow`` if given."""
    body = FRAME_PAGE.format(src=site.origin + "/", allow="" if allow is None else f' allow="{allow}"')

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    async with served(app) as origin:
        yield f"{origin}/"


@pytest_asyncio.fixture(loop_scope="session")
async def emulated_site(make_site: MakeSite, make_emulator: Any) -> Site:
    return await make_site(await make_emulator(), widget={"agent": "sales"})


async def test_iframe_without_microphone_permission_explains_itself(
    chromium: Browser, contexts: list[BrowserContext], emulated_site: Site
) -> None:
    async with frame_host(emulated_site, allow=None) as url:
        opened = await open_page(chromium, contexts, url, viewport=SIZES["laptop-1280"])
        frame = opened.page.frame_locator("iframe")
        await expect(frame.get_by_role("status")).to_have_text(
            "This page can't use your microphone, so voice calls aren't available here."
        )
        await expect(frame.get_by_role("button", name="Call me back instead", exact=True)).to_be_visible()
        await expect(frame.get_by_role("button", name="Start call", exact=True)).to_be_hidden()
        advice = [w for w in opened.warnings() if w.startswith("[webcall]") and 'allow="microphone"' in w]
        assert len(advice) == 1, opened.console
        assert opened.errors == []


async def test_iframe_with_microphone_permission_can_call(
    chromium: Browser, contexts: list[BrowserContext], emulated_site: Site
) -> None:
    async with frame_host(emulated_site, allow="microphone") as url:
        opened = await open_page(chromium, contexts, url, viewport=SIZES["laptop-1280"])
        frame = opened.page.frame_locator("iframe")
        await frame.get_by_role("button", name="Start call", exact=True).click()
        await expect(frame.locator(TAG)).to_have_attribute("state", "listening", timeout=15_000)
        assert [w for w in opened.warnings() if "allow=" in w] == []
        await frame.get_by_role("button", name="End call", exact=True).click()


@pytest.mark.engines("firefox")
async def test_firefox_in_a_frame_without_microphone_permission_advises_the_site_owner(
    engine: str, browsers: SessionBrowsers, emulated_site: Site, tmp_path: Path
) -> None:
    """Firefox has no permissions-policy API to ask before the click: the frame's refusal shows when the call asks
    for the microphone. The call goes on receive-only, and the console says what the embedding page must add."""
    firefox = await browsers.get(engine)
    assert isinstance(firefox, Firefox)
    async with frame_host(emulated_site, allow=None) as url:
        tab = await open_tab(firefox, url, tmp_path)
        assert isinstance(tab, FirefoxTab)
        tree = await tab.bidi.command("browsingContext.getTree", {"root": tab.context})
        frame = tree["contexts"][0]["children"][0]["context"]
        firefox.tabs[frame] = tab  # the frame's console lines are the tab's
        try:

            async def in_frame(expression: str) -> Any:
                result = await tab.bidi.command(
                    "script.evaluate",
                    {
                        "expression": expression,
                        "target": {"context": frame},
                        "awaitPromise": True,
                        "userActivation": True,
                        "resultOwnership": "none",
                    },
                )
                assert result["type"] == "success", result
                return result["result"].get("value")

            def advice() -> list[str]:
                return [text for kind, text in tab.console if kind == "warning" and 'allow="microphone"' in text]

            async def advised() -> bool:
                return bool(advice())

            async def live() -> bool:
                return await in_frame(f"document.querySelector('{TAG}').state") in LIVE

            await in_frame(f"document.querySelector('{TAG}').start()")
            await eventually(advised, 15, what="the allow=microphone advice")
            await eventually(live, 15, what="the call live, receive-only")
            assert len(advice()) == 1 and advice()[0].startswith("[webcall]"), tab.console
            await in_frame(f"document.querySelector('{TAG}').end()")
        finally:
            firefox.tabs.pop(frame, None)
            await tab.close()


WITHOUT_CONSTRUCTABLE_STYLESHEETS = """
delete ShadowRoot.prototype.adoptedStyleSheets;
delete Document.prototype.adoptedStyleSheets;
delete CSSStyleSheet.prototype.replaceSync;
"""


@pytest.mark.parametrize("path", ["/", "/zero"])
async def test_unstyled_widget_stays_usable(
    chromium: Browser, contexts: list[BrowserContext], emulated_site: Site, path: str
) -> None:
    """Safari 16.0-16.3 and WPE have no constructable stylesheets: the widget is plain, but small and readable."""
    opened = await open_page(
        chromium, contexts, emulated_site.origin + path, init_script=WITHOUT_CONSTRUCTABLE_STYLESHEETS
    )
    page = opened.page
    await widget_ready(page)
    if path == "/zero":
        await page.get_by_role("button", name="Open voice call", exact=True).click()
    await expect(page.get_by_role("button", name="Start call", exact=True)).to_be_visible()
    icons = await page.evaluate(
        """tag => [...document.querySelector(tag).shadowRoot.querySelectorAll("svg")]
             .filter((s) => s.checkVisibility()).map((s) => s.getBoundingClientRect().width)""",
        TAG,
    )
    assert icons and max(icons) <= 32, f"icon widths {icons}"
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert any("lacks constructable stylesheets" in w for w in opened.warnings()), opened.console
    if path == "/zero":
        # One close button (the launcher, in view under the panel), and the widget in the window's corner over the
        # page, its panel opaque, rather than in the page's flow after its footer.
        await expect(page.get_by_role("button", name="Close", exact=True)).to_have_count(1)
        placed = await page.evaluate(UNSTYLED_PLACEMENT, TAG)
        assert placed["position"] == "fixed", placed
        assert 0 < placed["bottom"] <= placed["viewportHeight"] and placed["right"] <= placed["viewportWidth"], placed
        assert placed["panelBackground"] not in ("", "rgba(0, 0, 0, 0)", "transparent"), placed
    await start_call(page)
    # The hang-up handset is turned by the icon itself, so it differs from the call icon without the stylesheet.
    turned = await page.evaluate(
        """tag => document.querySelector(tag).shadowRoot
             .querySelector("[part=hangup] path").getAttribute("transform")""",
        TAG,
    )
    assert turned == "rotate(135 12 12)"
    await page.get_by_role("button", name="End call", exact=True).click()
    await expect(page.locator(TAG)).to_have_attribute("state", "ended")
    assert opened.errors == []


UNSTYLED_PLACEMENT = """tag => {
  const host = document.querySelector(tag);
  const box = host.getBoundingClientRect();
  return {
    position: getComputedStyle(host).position,
    bottom: box.bottom,
    right: box.right,
    viewportHeight: innerHeight,
    viewportWidth: innerWidth,
    panelBackground: getComputedStyle(host.shadowRoot.querySelector("[part=panel]")).backgroundColor,
  };
}"""


# -- what visitors of peer widgets complain about -------------------------------------------------------------------
# The Screen Wake Lock API as a recorder: each request returns a sentinel the test can release, as a browser does
# when the page is hidden.
RECORD_WAKE_LOCK = """
window.__wakeLock = { requests: 0, releases: 0, sentinel: null };
Object.defineProperty(Navigator.prototype, "wakeLock", { configurable: true, get: () => ({
  request: async (type) => {
    if (type !== "screen") throw new TypeError("unexpected wake lock type " + type);
    window.__wakeLock.requests += 1;
    const sentinel = new EventTarget();
    sentinel.released = false;
    sentinel.type = type;
    sentinel.release = async () => {
      sentinel.released = true;
      window.__wakeLock.releases += 1;
    };
    window.__wakeLock.sentinel = sentinel;
    return sentinel;
  },
}) });
"""


async def test_screen_stays_awake_during_a_call(
    chromium: Browser, contexts: list[BrowserContext], emulated_site: Site
) -> None:
    opened = await open_page(chromium, contexts, emulated_site.origin + "/", init_script=RECORD_WAKE_LOCK)
    page = opened.page
    await widget_ready(page)
    assert await page.evaluate("window.__wakeLock.requests") == 0, "no wake lock before the call"
    await start_call(page)
    await page.wait_for_function("window.__wakeLock.requests === 1")

    # The browser drops the lock while the page is hidden; back in view, the widget asks again.
    await page.evaluate("window.__wakeLock.sentinel.released = true")
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    await page.wait_for_function("window.__wakeLock.requests === 2")

    await page.get_by_role("button", name="End call", exact=True).click()
    await page.wait_for_function("window.__wakeLock.releases === 1")
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert await page.evaluate("window.__wakeLock.requests") == 2, "no wake lock after the call"
    assert opened.errors == []


# Records replaceTrack calls and the widget's microphone events, before the widget runs.
RECORD_TRACK_SWITCHES = """
window.__replaced = [];
window.__microphoneEvents = [];
const replaceTrack = RTCRtpSender.prototype.replaceTrack;
RTCRtpSender.prototype.replaceTrack = function (track) {
  window.__replaced.push(track ? track.id : null);
  return replaceTrack.call(this, track);
};
document.addEventListener("webcall:microphone", (e) => window.__microphoneEvents.push(e.detail));
"""

# A headset plugged in: the default input is now another device (here an oscillator), and the browser says so. Each
# getUserMedia call hands out a new track of that device, as a browser does.
PLUG_IN_HEADSET = """() => {
  const context = new AudioContext();
  const oscillator = context.createOscillator();
  const destination = context.createMediaStreamDestination();
  oscillator.connect(destination);
  oscillator.start();
  const headset = destination.stream.getAudioTracks()[0];
  window.__handedOut = [];
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    if (!constraints.audio) throw new TypeError("audio only");
    const track = headset.clone();
    window.__handedOut.push(track);
    return new MediaStream([track]);
  };
  navigator.mediaDevices.dispatchEvent(new Event("devicechange"));
}"""


async def test_headset_plugged_in_mid_call_takes_over_the_microphone(
    chromium: Browser, contexts: list[BrowserContext], emulated_site: Site
) -> None:
    opened = await open_page(chromium, contexts, emulated_site.origin + "/", init_script=RECORD_TRACK_SWITCHES)
    page = opened.page
    await widget_ready(page)
    await start_call(page)
    await page.get_by_role("button", name="Mute", exact=True).click()

    # The microphone joined the call with replaceTrack once it was allowed (the offer went out before it).
    (first_microphone,) = await page.evaluate("window.__replaced")
    await page.evaluate(PLUG_IN_HEADSET)
    await page.wait_for_function("window.__microphoneEvents.length === 1")
    headset = await page.evaluate("window.__handedOut[0].id")
    assert await page.evaluate("window.__replaced") == [first_microphone, headset]
    # No renegotiation: the same call goes on, still muted, now on the new track.
    assert await page.locator(TAG).get_attribute("state") in LIVE
    assert await page.evaluate("window.__handedOut[0].enabled") is False, "the new track carries the mute over"
    await expect(page.get_by_role("button", name="Mute", exact=True)).to_have_attribute("aria-pressed", "true")

    # A change elsewhere (an output, say) while the same input is the default: the new track is let go, not swapped in.
    await page.evaluate("navigator.mediaDevices.dispatchEvent(new Event('devicechange'))")
    await page.wait_for_function("window.__handedOut.length === 2 && window.__handedOut[1].readyState === 'ended'")
    assert await page.evaluate("window.__handedOut[0].readyState") == "live"
    await page.get_by_role("button", name="End call", exact=True).click()
    await expect(page.locator(TAG)).to_have_attribute("state", "ended")
    assert await page.evaluate("window.__replaced") == [first_microphone, headset]
    assert opened.errors == []


# -- forced colours and reduced motion -------------------------------------------------------------------------------
LOOKS = """tag => {
  const root = document.querySelector(tag).shadowRoot;
  const style = (selector) => getComputedStyle(root.querySelector(selector));
  const edge = (selector) => {
    const s = style(selector);
    return { border: s.borderTopStyle !== "none" && parseFloat(s.borderTopWidth) > 0, colour: s.borderTopColor };
  };
  const level = root.querySelector(".meter i");
  return {
    launcher: edge("[part=launcher]"),
    start: edge("[part=button]"),
    hangUp: edge(".hang-up"),
    meter: { adjust: getComputedStyle(level).forcedColorAdjust, fill: getComputedStyle(level).backgroundColor,
             track: style(".meter").backgroundColor },
    orbAnimation: style(".orb").animationName,
    launcherTransition: style("[part=launcher]").transitionDuration,
  };
}"""


async def open_demo_widget(chromium: Browser, contexts: list[BrowserContext], demo_url: str, **media: Any) -> Page:
    """The demo at a laptop's size under the emulated ``media`` features, its widget's panel open."""
    opened = await open_page(chromium, contexts, demo_url + "/?agent=sales", viewport=SIZES["laptop-1280"])
    page = opened.page
    await page.emulate_media(**media)
    await widget_ready(page)
    await page.get_by_role("button", name="Open voice call", exact=True).click()
    return page


async def test_forced_colours_keep_every_button_outlined_and_the_level_meter_visible(
    chromium: Browser, contexts: list[BrowserContext], demo_url: str, tmp_path: Path
) -> None:
    page = await open_demo_widget(chromium, contexts, demo_url, forced_colors="active")
    assert (await page.evaluate(LOOKS, TAG))["start"]["border"], "Start call has no visible edge with forced colours"
    await page.get_by_role("button", name="Start call", exact=True).click()
    await expect(page.locator(TAG)).to_have_attribute("state", re.compile("listening|speaking"), timeout=15_000)
    looks = await page.evaluate(LOOKS, TAG)
    assert looks["launcher"]["border"] and looks["hangUp"]["border"], looks
    # The level (the microphone's, silent here) is drawn in the system's highlight colour, not dropped as a fill.
    assert looks["meter"]["adjust"] == "none" and looks["meter"]["fill"] != looks["meter"]["track"], looks
    await page.screenshot(path=str(tmp_path / "forced-colours.png"))


async def test_reduced_motion_stops_every_animation(
    chromium: Browser, contexts: list[BrowserContext], demo_url: str
) -> None:
    page = await open_demo_widget(chromium, contexts, demo_url, reduced_motion="reduce")
    await page.get_by_role("button", name="Start call", exact=True).click()
    await expect(page.locator(TAG)).to_have_attribute("state", "speaking", timeout=15_000)  # the orb pulses here
    looks = await page.evaluate(LOOKS, TAG)
    assert looks["orbAnimation"] == "none" and looks["launcherTransition"] == "0s", looks
    await page.emulate_media(reduced_motion="no-preference")
    assert (await page.evaluate(LOOKS, TAG))["launcherTransition"] == "0.15s", "motion is back when it is welcome"


async def test_the_transcript_keeps_room_on_a_phone_held_sideways(
    chromium: Browser, contexts: list[BrowserContext], demo_url: str, tmp_path: Path
) -> None:
    """Sideways on a small phone (568 x 320) the floating panel is short; the transcript still shows a line or two
    (the panel scrolls) instead of being squeezed away."""
    opened = await open_page(chromium, contexts, demo_url + "/?agent=sales", viewport={"width": 568, "height": 320})
    page = opened.page
    await widget_ready(page)
    await page.get_by_role("button", name="Open voice call", exact=True).tap()
    await start_call(page)
    transcript = page.locator(TAG).get_by_role("log", name="Transcript")
    await expect(transcript).to_contain_text("Hello", timeout=10_000)
    box = await transcript.bounding_box()
    assert box is not None and box["height"] >= 60, f"the transcript is squeezed to {box}"
    await page.screenshot(path=str(tmp_path / "phone-landscape.png"))
