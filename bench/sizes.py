"""``python -m bench.sizes [--out DIR]``: the demo at phone, tablet and laptop sizes in every engine, as PNGs.

The demo runs as ``python -m demo`` on its embedded emulator. Each engine (Chromium through Playwright, Firefox ESR
over WebDriver BiDi, WebKitGTK's MiniBrowser over WebDriver on Xvfb) opens it at 360x740, 390x844, 820x1180 and
1280x800, takes the page as a visitor first sees it, then opens the call panel and takes it again. File names are
``{engine}-{width}x{height}-{closed|open}.png``; ``chromium-unstyled-*`` are the widget in a browser without
constructable stylesheets (Safari before 16.4), at a phone's and a laptop's width.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from tests.browser.bidi import firefox_prefs, launch_firefox
from tests.browser.shared import TAG, start_demo
from tests.browser.webkit import webkit_session

SIZES = [(360, 740), (390, 844), (820, 1180), (1280, 800)]
OPEN_PANEL = f"""
const host = document.querySelector("{TAG}");
const launcher = host && host.shadowRoot && host.shadowRoot.querySelector("[part~=launcher]");
if (launcher) launcher.click();
return !!launcher;
"""
# Safari before 16.4 and WPE have no constructable stylesheets: the widget then shows itself unstyled.
WITHOUT_CONSTRUCTABLE_STYLESHEETS = """
delete ShadowRoot.prototype.adoptedStyleSheets;
delete Document.prototype.adoptedStyleSheets;
delete CSSStyleSheet.prototype.replaceSync;
"""


async def shots_chromium(url: str, out: Path) -> None:
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            for width, height in SIZES:
                await shoot_chromium(browser, url, out, width, height, "chromium")
            for width, height in (SIZES[1], SIZES[3]):
                await shoot_chromium(
                    browser, url, out, width, height, "chromium-unstyled", WITHOUT_CONSTRUCTABLE_STYLESHEETS
                )
        finally:
            await browser.close()


async def shoot_chromium(
    browser: Browser, url: str, out: Path, width: int, height: int, name: str, init_script: str | None = None
) -> None:
    mobile = width < 1000
    context = await browser.new_context(viewport={"width": width, "height": height}, is_mobile=mobile, has_touch=mobile)
    try:
        if init_script is not None:
            await context.add_init_script(script=init_script)
        page = await context.new_page()
        await page.goto(url)
        await page.wait_for_function("tag => customElements.get(tag) !== undefined", arg=TAG)
        await page.wait_for_timeout(300)
        await page.screenshot(path=out / f"{name}-{width}x{height}-closed.png")
        await page.evaluate(f"() => {{ {OPEN_PANEL} }}")
        await page.wait_for_timeout(400)
        await page.screenshot(path=out / f"{name}-{width}x{height}-open.png")
    finally:
        await context.close()


async def shots_firefox(url: str, out: Path) -> None:
    firefox = await launch_firefox(firefox_prefs(microphone=True))
    try:
        bidi = firefox.bidi
        context = (await bidi.command("browsingContext.getTree", {}))["contexts"][0]["context"]
        for width, height in SIZES:
            viewport = {"width": width, "height": height}
            await bidi.command("browsingContext.setViewport", {"context": context, "viewport": viewport})
            await bidi.command("browsingContext.navigate", {"context": context, "url": url, "wait": "complete"})
            await asyncio.sleep(0.5)
            for state in ("closed", "open"):
                if state == "open":
                    script = f"(() => {{ {OPEN_PANEL} }})()"
                    await bidi.command(
                        "script.evaluate",
                        {"expression": script, "target": {"context": context}, "awaitPromise": False},
                    )
                    await asyncio.sleep(0.5)
                shot = await bidi.command("browsingContext.captureScreenshot", {"context": context})
                (out / f"firefox-{width}x{height}-{state}.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        await firefox.close()


async def shots_webkit(url: str, out: Path) -> None:
    async with webkit_session() as webkit:
        for width, height in SIZES:
            await webkit.resize(width, height)
            await webkit.goto(url)
            await asyncio.sleep(0.5)
            await webkit.screenshot(out / f"webkit-{width}x{height}-closed.png")
            await webkit.run(OPEN_PANEL)
            await asyncio.sleep(0.5)
            await webkit.screenshot(out / f"webkit-{width}x{height}-open.png")


async def main(out: Path, engines: list[str]) -> None:
    process, url, _ = await start_demo()
    try:
        shooters = {"chromium": shots_chromium, "firefox": shots_firefox, "webkit": shots_webkit}
        for engine in engines:
            await shooters[engine](url + "/", out)
            print(f"{engine}: screenshots in {out}")
    finally:
        process.terminate()
        await process.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("shots"))
    parser.add_argument("--engines", nargs="*", default=["chromium", "firefox", "webkit"])
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(arguments.out, arguments.engines))
