"""One round trip against two: click -> connected and click -> first agent audio, in headless Chromium.

The widget's flow sends the browser's SDP offer with ``POST /webcall/sessions`` and gets DialNexa's answer back (one
HTTP exchange, to the plugin only). The two-step flow it replaced minted first (the host answered with DialNexa's
access token and WHIP URL) and then sent the offer from the browser to DialNexa's WHIP endpoint. Both run here from
the same page, against the same plugin and emulator: a small page script (``FLOWS_JS``) does each flow's exchanges
with its own peer connection, and reports ``performance.now()`` at the start, when the connection is ``connected``,
and when an AnalyserNode first hears the agent. The bench-only route ``POST /two-step/mint`` stands in for the old
mint (it returns ``handle.create_web_call()``'s raw descriptor, which the product never gives a browser).

Added latency comes from Chromium's network emulation (DevTools ``Network.emulateNetworkConditions``): every HTTP
request pays it; the call's audio (ICE/UDP) does not.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from playwright.async_api import BrowserContext, async_playwright

from tests.browser.shared import CHROMIUM, CHROMIUM_ARGS

from .browser import EmulatorProcess, HostSite

FLOWS_JS = """\
// Bench script (a file: the page's CSP allows no inline script). window.runFlow(name) -> timings in ms.
(() => {
  "use strict";
  const AUDIBLE = 0.01;
  // As the widget gathers without ICE servers: at most 1.5 s, and 25 ms after the last candidate.
  const gathered = (pc) => new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    let timer = setTimeout(done, 1500);
    pc.addEventListener("icecandidate", (event) => {
      clearTimeout(timer);
      if (event.candidate) timer = setTimeout(done, 25);
      else done();
    });
  });
  const connected = (pc) => new Promise((done, fail) => {
    const check = () => {
      if (pc.connectionState === "connected") done(performance.now());
      if (pc.connectionState === "failed") fail(new Error("the connection failed"));
    };
    pc.addEventListener("connectionstatechange", check);
    check();
  });
  const firstAudio = (pc) => new Promise((done) => {
    pc.addEventListener("track", (event) => {
      // Chromium feeds remote WebRTC audio to Web Audio only while a media element plays it (as the widget does).
      const player = new Audio();
      player.muted = true;
      player.srcObject = new MediaStream([event.track]);
      player.play().catch(() => {});
      const context = new AudioContext();
      context.resume();
      const analyser = context.createAnalyser();
      analyser.fftSize = 1024;
      const samples = new Float32Array(analyser.fftSize);
      context.createMediaStreamSource(new MediaStream([event.track])).connect(analyser);
      const poll = setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const value of samples) sum += value * value;
        if (Math.sqrt(sum / samples.length) >= AUDIBLE) {
          clearInterval(poll);
          context.close();
          player.srcObject = null;
          done(performance.now());
        }
      }, 5);
    });
  });
  const openPeerConnection = () => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("audio", { direction: "sendrecv" });
    pc.createDataChannel("events");
    return pc;
  };
  const postJson = async (url, body) => {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`POST ${url} -> ${response.status}`);
    return [response, await response.json()];
  };

  async function oneRoundTrip() {
    const started = performance.now();
    const pc = openPeerConnection();
    const heard = firstAudio(pc);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const [, call] = await postJson("/webcall/sessions", { agent: "sales", offer: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: "answer", sdp: call.answer });
    const live = await connected(pc);
    const audio = await heard;
    const auth = { Authorization: "Bearer " + call.token };
    const hangUp = () => fetch(call.media_url, { method: "DELETE", headers: auth });
    return { pc, hangUp, connected: live - started, audio: audio - started };
  }

  async function twoSteps() {
    const started = performance.now();
    const [, descriptor] = await postJson("/two-step/mint", { agent: "sales" });
    const pc = openPeerConnection();
    const heard = firstAudio(pc);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const auth = { Authorization: "Bearer " + descriptor.access_token };
    const response = await fetch(descriptor.whip_url, {
      method: "POST", headers: { ...auth, "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
    });
    if (response.status !== 201) throw new Error(`WHIP -> ${response.status}`);
    const resource = new URL(response.headers.get("Location"), descriptor.whip_url).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    const live = await connected(pc);
    const audio = await heard;
    const hangUp = () => fetch(resource, { method: "DELETE", headers: auth });
    return { pc, hangUp, connected: live - started, audio: audio - started };
  }

  window.runFlow = async (name) => {
    const result = await (name === "one round trip" ? oneRoundTrip() : twoSteps());
    await result.hangUp();
    result.pc.close();
    return { connected: result.connected, audio: result.audio };
  };
})();
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>round trips</title><link rel="icon" href="data:,">
<script src="/flows.js"></script></head><body><p>bench</p></body></html>
"""

FLOWS = ("one round trip", "two steps")


class RoundTripSite(HostSite):
    """The host site plus the bench page, its script, and the stand-in for the replaced two-step mint."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        super().__init__(emulator)
        self.emulator_origin = emulator.origin
        self.app.router.add_get("/round-trips", self._round_trips_page)
        self.app.router.add_get("/flows.js", self._asset(FLOWS_JS, "text/javascript"))
        self.app.router.add_post("/two-step/mint", self._two_step_mint)

    @staticmethod
    def _asset(text: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            return web.Response(text=text, content_type=content_type)

        return serve

    async def _round_trips_page(self, request: web.Request) -> web.Response:
        # The two-step flow needs DialNexa's media origin in connect-src; the one-round-trip flow does not.
        csp = f"default-src 'self'; connect-src 'self' {self.emulator_origin}; img-src 'self' data:"
        return web.Response(text=PAGE, content_type="text/html", headers={"Content-Security-Policy": csp})

    async def _two_step_mint(self, request: web.Request) -> web.Response:
        session = await self.handle.create_web_call("sales", {"name": "Priya", "company": "Acme"})
        return web.json_response({"access_token": session.access_token, "whip_url": session.media.whip_url})


Results = dict[tuple[str, int], dict[str, list[float]]]
"""(flow, added latency in ms) -> {"connected": [...], "audio": [...]}, seconds."""


async def measure(calls: int, latencies_ms: tuple[int, ...] = (0, 100)) -> Results:
    """``calls`` calls of each flow at each added latency, the flows alternating call by call; seconds."""
    results: Results = {}
    async with EmulatorProcess() as emulator, RoundTripSite(emulator) as site, async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            for latency in latencies_ms:
                context: BrowserContext = await browser.new_context()
                page = await context.new_page()
                devtools = await context.new_cdp_session(page)
                await devtools.send("Network.enable")
                conditions = {"offline": False, "latency": latency, "downloadThroughput": -1, "uploadThroughput": -1}
                await devtools.send("Network.emulateNetworkConditions", conditions)
                await page.goto(site.origin + "/round-trips")
                await page.evaluate("name => window.runFlow(name)", FLOWS[0])  # warm-up: first synthesis
                for _ in range(calls):
                    for flow in FLOWS:
                        timings: dict[str, Any] = await page.evaluate("name => window.runFlow(name)", flow)
                        entry = results.setdefault((flow, latency), {"connected": [], "audio": []})
                        entry["connected"].append(timings["connected"] / 1000)
                        entry["audio"].append(timings["audio"] / 1000)
                await context.close()
        finally:
            await browser.close()
    return results


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{statistics.median(values) * 1e3:.0f} / {p90 * 1e3:.0f} ms"
