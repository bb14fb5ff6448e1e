"""``python -m bench.screenshots [--out docs]``: PNGs of the widget's states and of the demo, for the docs.

The widget is shot on a host site of this process in front of the emulator (a subprocess), in headless Chromium whose
fake microphone says a line, so the live transcript has both sides; the demo runs as ``python -m demo``. Each PNG is
clipped to what it shows (viewport 1280 x 800) and recompressed at the highest zlib level.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from playwright.async_api import Browser, Page, Playwright, async_playwright, expect

from tests.browser.shared import LIVE, TAG, start_demo
from webcall.emulator.media.tts import OUTPUT_RATE, get_synthesizer, write_wav

from .browser import ROOT, VIEWPORT, EmulatorProcess, HostSite, launch_chromium, wait_state

CALLER_LINE = "I would like to know more about pricing."
MARGIN = 24  # px around the widget (its shadow included)


def shrink_png(path: Path) -> int:
    """Rewrite a PNG with one IDAT deflated at level 9 and without ancillary chunks (pixels unchanged); its size."""
    data = path.read_bytes()
    signature, pos = data[:8], 8
    chunks: list[tuple[bytes, bytes]] = []
    idat = bytearray()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IDAT":
            if not idat:
                chunks.append((b"IDAT", b""))
            idat += body
        elif kind[0:1].isupper():  # critical chunk
            chunks.append((kind, body))
    packed = zlib.compress(zlib.decompress(bytes(idat)), 9)
    out = bytearray(signature)
    for kind, body in chunks:
        body = packed if kind == b"IDAT" else body
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    if len(out) >= len(data):
        return len(data)
    path.write_bytes(bytes(out))
    return len(out)


async def widget_box(page: Page) -> dict[str, float]:
    """The widget's visible box (host element, panel and launcher) plus a margin, within the viewport."""
    box: dict[str, float] = await page.evaluate(
        """([tag, m]) => {
          const el = document.querySelector(tag);
          const rects = [el, ...el.shadowRoot.querySelectorAll("[part]")]
            .filter((e) => e.checkVisibility()).map((e) => e.getBoundingClientRect()).filter((r) => r.width);
          const x = Math.max(0, Math.min(...rects.map((r) => r.left)) - m);
          const y = Math.max(0, Math.min(...rects.map((r) => r.top)) - m);
          const r = Math.min(innerWidth, Math.max(...rects.map((r) => r.right)) + m);
          const b = Math.min(innerHeight, Math.max(...rects.map((r) => r.bottom)) + m);
          return { x, y, width: r - x, height: b - y };
        }""",
        [TAG, MARGIN],
    )
    return box


async def shoot(page: Page, path: Path, clip: dict[str, float] | None = None) -> None:
    await page.screenshot(path=str(path), clip=clip, animations="disabled", caret="hide")  # type: ignore[arg-type]
    size = shrink_png(path)
    print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}  {size / 1024:.0f} KiB", flush=True)


async def speech_wav(folder: Path) -> Path:
    """1.5 s of silence, the caller's line, then a long pause (Chromium loops the file)."""
    synthesizer = get_synthesizer()
    silence = np.zeros(int(1.5 * OUTPUT_RATE), np.int16)
    pcm = np.concatenate([silence, await synthesizer.synthesize(CALLER_LINE), np.zeros(12 * OUTPUT_RATE, np.int16)])
    path = folder / "caller.wav"
    write_wav(path, pcm)
    return path


async def widget_states(browser: Browser, out: Path) -> None:
    async with EmulatorProcess() as emulator, HostSite(emulator) as site:
        context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        try:
            page = await context.new_page()
            await page.goto(site.origin + "/")
            widget = page.locator(TAG)
            button = page.get_by_role("button", name="Start call", exact=True)
            await button.wait_for()
            await shoot(page, out / "widget-idle.png", await widget_box(page))

            whip = "POST /v1/web-calls/{call_id}/whip"
            await emulator.control.add_fault(route=whip, kind="latency", delay=2)
            await button.click()
            await wait_state(page, ("connecting",))
            await page.mouse.move(0, 0)
            await shoot(page, out / "widget-connecting.png", await widget_box(page))

            await wait_state(page, LIVE)
            log = page.get_by_role("log", name="Transcript")
            await expect(log).to_contain_text("Great question.", timeout=30_000)
            await shoot(page, out / "widget-live.png", await widget_box(page))

            await page.get_by_role("button", name="Mute", exact=True).click()
            await expect(page.get_by_role("button", name="Mute", exact=True)).to_have_attribute("aria-pressed", "true")
            await page.mouse.move(0, 0)
            await shoot(page, out / "widget-muted.png", await widget_box(page))

            await page.get_by_role("button", name="End call", exact=True).click()
            await wait_state(page, ("ended",))
            await expect(widget.locator("[part=summary]")).to_be_visible(timeout=10_000)
            await page.mouse.move(0, 0)
            await shoot(page, out / "widget-ended.png", await widget_box(page))

            await emulator.control.add_fault(route="POST /v1/web-calls", kind="status", status=503)
            await page.get_by_role("button", name="Call again", exact=True).click()
            await wait_state(page, ("error",))
            await page.mouse.move(0, 0)
            await shoot(page, out / "widget-error.png", await widget_box(page))
        finally:
            await context.close()


async def demo_pages(browser: Browser, out: Path) -> None:
    process, url, _ = await start_demo()
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        page = await context.new_page()
        await page.goto(url + "/")
        await page.get_by_role("textbox", name="Your name").fill("Priya")
        await page.get_by_role("textbox", name="Company").fill("Acme")
        await page.get_by_role("button", name="Save").click()
        await page.wait_for_url(re.compile(r"theme="))
        for theme in ("light", "dark", "brand"):
            await page.goto(f"{url}/?agent=sales&theme={theme}")
            await page.locator(TAG).wait_for(state="attached")
            await shoot(page, out / f"demo-{theme}.png")

        # A first call to its end, so the console holds a whole call; the second one is shot live.
        await page.goto(f"{url}/?agent=sales&theme=light")
        await page.get_by_role("button", name="Open voice call", exact=True).click()
        for second in (False, True):
            start = page.get_by_role("button", name="Call again" if second else "Start call", exact=True)
            await start.click()
            await wait_state(page, LIVE)
            log = page.get_by_role("log", name="Transcript")
            await expect(log).to_contain_text("Great question.", timeout=30_000)
            if second:
                break
            await page.get_by_role("button", name="End call", exact=True).click()
            await expect(page.locator(f"{TAG} [part=summary]")).to_be_visible(timeout=10_000)
        console = page.get_by_role("list", name="Event console")
        await expect(console.get_by_role("listitem").filter(has_text="call.started")).to_have_count(2)
        await page.mouse.move(0, 0)
        panel = await page.locator(".console-panel").bounding_box()
        assert panel is not None
        x, y = max(0.0, panel["x"] - MARGIN), max(0.0, panel["y"] - MARGIN)
        await shoot(
            page,
            out / "demo-call.png",
            {"x": x, "y": y, "width": VIEWPORT["width"] - x, "height": VIEWPORT["height"] - y},
        )
        await page.get_by_role("button", name="End call", exact=True).click()
        await wait_state(page, ("ended",))

        await page.goto(f"{url}/embed?agent=sales&theme=brand")
        await shoot(page, out / "demo-embed.png")
    finally:
        await context.close()
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="webcall-shots-") as tmp:
        microphone = await speech_wav(Path(tmp))
        driver: Playwright
        async with async_playwright() as driver:
            browser = await launch_chromium(driver, microphone)
            try:
                await widget_states(browser, out)
                await demo_pages(browser, out)
            finally:
                await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNGs (default: docs/)")
    folder = parser.parse_args().out.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(folder))
