"""Click-to-connected in real headless Chromium and Firefox: a host site mounting the plugin (in this process) in
front of the emulator (a subprocess), measured inside the page.

Each call is one visitor: a fresh browser context opens the host page and clicks "Start call". A probe script served
by the host records ``performance.now()`` at the click (a capture listener), at the widget's first ``webcall:state``
event of a live state, and when an ``AnalyserNode`` on the widget's remote stream first hears the agent. Then the
visitor hangs up and the next one comes.

Also used by ``bench/screenshots.py``: :class:`EmulatorProcess`, :class:`HostSite`, :func:`launch_chromium`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import wave
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from aiohttp import web
from playwright.async_api import Browser, Page, Playwright, async_playwright

import webcall
from tests.browser.bidi import Firefox, firefox_prefs, launch_firefox
from tests.browser.shared import CHROMIUM, CHROMIUM_ARGS, LIVE, PROBE_JS, TAG, add_site_pages
from tests.browser.tabs import open_tab
from tests.hosting import host_config, served
from tests.net import free_port
from webcall.emulator.testing import EmulatorControl

ROOT = Path(__file__).resolve().parents[1]
EMULATOR_KEY = "bench_key:bench_secret"
SESSION_SECRET = "bench-browser-session-secret-0123456789"
WEBHOOK_SECRET = "bench-browser-webhook-secret-0123456789"
VIEWPORT = {"width": 1280, "height": 800}


class EmulatorProcess:
    """``python -m webcall.emulator`` on a free loopback port, started and stopped with ``async with``."""

    def __init__(self, *options: str, source: Path = ROOT) -> None:
        """``options``: more of the emulator's command-line options (``--dtls-setup active``); ``source``: the
        checkout whose ``webcall`` package runs (another commit's, to compare)."""
        self.options = options
        self.source = source
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __aexit__
        self.control = EmulatorControl(self.origin)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    async def __aenter__(self) -> Self:
        args = ["-m", "webcall.emulator", "--port", str(self.port), "--api-key", EMULATOR_KEY, "--log-level", "WARNING"]
        args += self.options
        environment = {**os.environ, "PYTHONPATH": str(self.source)}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=self.source, stdout=self.log, stderr=self.log, env=environment
        )
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    await self.__aexit__(None, None, None)
                    raise RuntimeError(f"the emulator did not start:\n{self.output()}")
                try:
                    if (await http.get(f"{self.origin}/_control/stats")).status_code == 200:
                        return self
                except httpx.TransportError:
                    await asyncio.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.control.close()
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.log.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


class HostSite:
    """A customer's site in this process: the plugin at ``/webcall`` in front of the emulator, and the browser tests'
    site pages (:func:`tests.browser.shared.add_site_pages`) under the plugin's strict CSP with the widget and the
    probe."""

    def __init__(self, emulator: EmulatorProcess, *, probe: str = PROBE_JS, **options: Any) -> None:
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        settings: dict[str, Any] = {
            "api_key": EMULATOR_KEY,
            "base_url": emulator.base_url,
            "agents": {"sales": webcall.Agent(id="agent_sales", label="Sales")},
            "allowed_origins": (self.origin,),
            "session_secrets": (SESSION_SECRET,),
            "webhook_secrets": (WEBHOOK_SECRET,),
            "variables": lambda request, alias, agent: {"name": "Priya", "company": "Acme"},
            "rate_limit": 1_000_000,
            "identity_rate_limit": 1_000_000,
        }
        settings.update(options)
        self.app = web.Application()
        self.handle = webcall.setup(self.app, host_config(**settings))
        add_site_pages(self.app, self.handle, {"agent": "sales"}, probe=probe)
        self._serving = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self._serving.enter_async_context(served(self.app, port=self.port, access_log=False))
        await self.handle.ensure_webhook(self.origin + "/webcall/webhooks")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._serving.aclose()


def write_silence(path: Path, seconds: float = 2.0, rate: int = 48000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return path


async def launch_chromium(driver: Playwright, microphone: Path) -> Browser:
    """Headless Debian Chromium whose fake microphone plays ``microphone`` (a WAV) in a loop."""
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={microphone}"]
    return await driver.chromium.launch(executable_path=CHROMIUM, args=args)


async def launch(engine: str, driver: Playwright, microphone: Path) -> Browser | Firefox:
    """A visitor's browser of ``engine`` (chromium or firefox), microphone allowed (``microphone`` plays in
    Chromium; Firefox's fake microphone plays a tone)."""
    if engine == "firefox":
        return await launch_firefox(firefox_prefs(microphone=True))
    return await launch_chromium(driver, microphone)


async def wait_state(page: Page, states: tuple[str, ...], within: float = 15.0) -> None:
    await page.wait_for_function(
        "([tag, states]) => states.includes(document.querySelector(tag)?.getAttribute('state'))",
        arg=[TAG, list(states)],
        timeout=within * 1000,
        polling=10,
    )


async def one_call(browser: Browser | Firefox, site: HostSite, shots: Path) -> tuple[float, float]:
    """One visitor: open the page, click start, wait for the agent's voice, hang up. Seconds to live, to audio."""
    tab = await open_tab(browser, site.origin + "/", shots)
    try:
        start = tab.button("Start call")
        await start.wait_visible()
        await start.click()
        await tab.wait_state(*LIVE, within=15)
        await tab.wait_for("() => window.__audio.audible >= 3", within=15, what="the agent is heard")
        times: Mapping[str, Any] = await tab.call(
            """(live) => ({
              click: window.__clicks[0],
              live: window.__events.find((e) => e.type === "state" && live.includes(e.detail.state)).at,
              audio: window.__audio.audibleAt,
            })""",
            list(LIVE),
        )
        await tab.button("End call").click()
        await tab.wait_state("ended")
        return (times["live"] - times["click"]) / 1000, (times["audio"] - times["click"]) / 1000
    finally:
        await tab.close()


async def click_to_connected(calls: int, engine: str = "chromium") -> tuple[list[float], list[float]]:
    """Seconds from the click on "Start call" to the live state, and to the first agent audio, for ``calls`` calls
    in ``engine`` (chromium or firefox), after one warm-up call that is not counted."""
    connected: list[float] = []
    audio: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        microphone = write_silence(Path(tmp) / "silence.wav")
        async with EmulatorProcess() as emulator, HostSite(emulator) as site, async_playwright() as driver:
            browser = await launch(engine, driver, microphone)
            try:
                await one_call(browser, site, Path(tmp))  # warm-up: the first synthesis, the first connections
                for _ in range(calls):
                    to_live, to_audio = await one_call(browser, site, Path(tmp))
                    connected.append(to_live)
                    audio.append(to_audio)
            finally:
                await browser.close()
    return connected, audio


async def with_and_without_turn(calls: int, engine: str) -> dict[str, tuple[list[float], list[float]]]:
    """Click -> connected and -> first agent audio with UDP open, on two sites in one run, calls alternating: one
    without ICE servers, one whose visitors get TURN (a real coturn on loopback, UDP/TCP/TLS URLs, credentials minted
    per visitor), as a site configured for visitors behind firewalls serves everybody."""
    from tests.turn_server import TurnServer

    results: dict[str, tuple[list[float], list[float]]] = {"without TURN": ([], []), "with TURN": ([], [])}
    with tempfile.TemporaryDirectory(prefix="bench-turn-") as tmp:
        microphone = write_silence(Path(tmp) / "silence.wav")
        with TurnServer(Path(tmp) / "turn", "127.0.0.1") as turn:
            turn_urls = (turn.turn_url("udp"), turn.turn_url("tcp"), turn.turns_url())
            async with (
                EmulatorProcess() as emulator,
                HostSite(emulator) as plain,
                HostSite(emulator, turn_urls=turn_urls, turn_secret=turn.secret) as relayed,
                async_playwright() as driver,
            ):
                browser = await launch(engine, driver, microphone)
                try:
                    for site in (plain, relayed):  # warm-up, not counted
                        await one_call(browser, site, Path(tmp))
                    for _ in range(calls):
                        for name, site in (("without TURN", plain), ("with TURN", relayed)):
                            to_live, to_audio = await one_call(browser, site, Path(tmp))
                            results[name][0].append(to_live)
                            results[name][1].append(to_audio)
                finally:
                    await browser.close()
    return results


if __name__ == "__main__":
    engine_name = sys.argv[2] if len(sys.argv) > 2 else "chromium"
    live, heard = asyncio.run(click_to_connected(int(sys.argv[1]) if len(sys.argv) > 1 else 5, engine_name))
    print("live  ", " ".join(f"{t * 1e3:.0f}" for t in live), "ms")
    print("audio ", " ".join(f"{t * 1e3:.0f}" for t in heard), "ms")
