"""Click -> first agent audio with a real added round trip on the whole call, HTTP and media, in Chromium and Firefox.

This machine's kernel has no ``netem``, so the round trip is added in user space, and nothing leaves the machine
(the TCP proxy listens on 127.0.0.1; each relay port is bound on the local address of the candidate it stands for):

- **HTTP**: a delaying TCP proxy (:class:`DelayingTcpProxy`) in front of the host site. The browser opens the site
  through it, so the page, the widget and ``POST /webcall/sessions`` pay the delay on every byte, each way.
- **Media**: a delaying proxy in front of the emulator's DialNexa API (:class:`DelayingApiProxy`; the plugin's
  ``base_url`` points at it) rewrites the SDP of every WHIP exchange. Each ICE candidate of the emulator's answer
  becomes a port of a delaying UDP relay (:class:`MediaRelay`) that forwards to it 50 ms later, and each candidate
  of the browser's offer becomes a relay port facing the emulator, from which the browser's packets reach it. The two
  sides only ever see each other through the relay, both ways: the emulator's checks to the offer's candidates and
  its answers to the browser's checks all cross it, so ICE can find no direct (peer-reflexive) pair around the
  delay. The relay is a symmetric NAT with a delay line: a browser address the offer did not name (an mDNS host)
  gets its own port facing the emulator on its first packet, which the emulator learns as peer-reflexive.

Why not TURN through a delaying proxy (``tests/turn_server.py``)? The browser would allocate on the TURN server
first (two more round trips, with the 401 challenge) and create a permission before its checks, so the time measured
would be that of a relayed call, not of a visitor reaching a media server directly; the relay here adds nothing but
the delay.

The added round trip is measured, not assumed: each call reports the selected candidate pair's
``currentRoundTripTime`` (ICE's own checks).

What a visitor hears is taken from the receiver's ``getStats``: the first time ``inbound-rtp`` has a packet, the
first time it has played out decoded samples (``totalSamplesReceived - concealedSamples``) and the first time the
level of what it played out since the last poll (``totalAudioEnergy`` over ``totalSamplesDuration``) reaches the
browser tests' audible level. The page has no ``AnalyserNode`` (``bench/run --only browser`` listens with one):
in Firefox an ``AudioContext`` of the page's own holds the call's playout back by a further ~250 ms, so it would
measure itself rather than what the visitor hears.

Firefox's candidate pair reports a ``currentRoundTripTime`` of 0; there the round trip shown is RTCP's
(``remote-inbound-rtp``) when it has one, else the time from ICE ``checking`` to ``connected`` (one check and its
answer).

Each engine makes its calls with nothing added (loopback) and with +100 ms alternately, in each of the
:data:`VARIANTS`: the emulator of commit :data:`BEFORE` (run from ``git archive``) beside this checkout's, this one
with its former DTLS role, and a click without the pointer resting on the widget first. Once a round, a fresh
``AudioContext`` with no call shows how long that browser's sound output takes to start (Firefox's audio graph runs
on its output's clock, and plays nothing, WebRTC audio included, before it).

``python -m bench.latency [CALLS] [chromium,firefox]`` prints each figure with every call's value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import aiohttp
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from tests.browser.bidi import Firefox
from tests.browser.shared import AUDIBLE, LIVE, TAG
from tests.browser.tabs import open_tab
from tests.hosting import served
from tests.net import free_port

from .browser import ROOT, EmulatorProcess, HostSite, launch, write_silence

Address = tuple[str, int]

MEDIA_JS = """\
// Bench script: every peer connection the page makes is watched through getStats from its creation, and
// window.__media holds when its first packet arrived, when decoded audio first played out and was first audible,
// the jitter buffer then, and the round trip of its selected candidate pair. Times are performance.now().
(() => {
  "use strict";
  const AUDIBLE = __AUDIBLE__;
  const LIVE = __LIVE__;
  window.__clicks = [];
  window.__liveAt = null;
  addEventListener("click", () => window.__clicks.push(performance.now()), true);
  document.addEventListener("webcall:state", (event) => {
    if (window.__liveAt === null && LIVE.includes(event.detail.state)) window.__liveAt = performance.now();
  });
  const Native = window.RTCPeerConnection;
  const media = (window.__media = []);

  function Watched(...args) {
    const peer = new Native(...args);

    const seen = { created: performance.now(), firstPacketAt: null, firstPlayedAt: null, firstAudibleAt: null,
      jitterBufferMs: null, roundTripMs: null, rtcpRoundTripMs: null, iceCheckMs: null };
    media.push(seen);
    // One ICE check and its answer: from "checking" to the first pair that works.
    let checkingAt = null;
    peer.addEventListener("iceconnectionstatechange", () => {
      const state = peer.iceConnectionState;
      if (state === "checking" && checkingAt === null) checkingAt = performance.now();
      if (state === "connected" && checkingAt !== null && seen.iceCheckMs === null) {
        seen.iceCheckMs = performance.now() - checkingAt;
      }
    });
    let lastEnergy = 0, lastDuration = 0;
    const poll = setInterval(async () => {
      if (peer.connectionState === "closed") return clearInterval(poll);
      let report;
      try {
        report = await peer.getStats();
      } catch (error) {
        return clearInterval(poll);
      }
      const now = performance.now();
      let selectedPairId = null;
      report.forEach((entry) => {
        if (entry.type === "transport" && entry.selectedCandidatePairId) selectedPairId = entry.selectedCandidatePairId;
      });
      report.forEach((entry) => {
        if (entry.type === "inbound-rtp" && entry.kind === "audio") {
          if (seen.firstPacketAt === null && entry.packetsReceived > 0) seen.firstPacketAt = now;
          const played = (entry.totalSamplesReceived || 0) - (entry.concealedSamples || 0);
          if (seen.firstPlayedAt === null && played > 0) seen.firstPlayedAt = now;
          // The level of what played out since the last poll, from the energy the receiver adds up frame by frame
          // (audioLevel itself is refreshed only every few frames); audioLevel where there is no energy.
          const energy = entry.totalAudioEnergy, duration = entry.totalSamplesDuration;
          const level = energy === undefined || !duration ? entry.audioLevel || 0
            : duration > lastDuration ? Math.sqrt((energy - lastEnergy) / (duration - lastDuration)) : 0;
          if (duration !== undefined) [lastEnergy, lastDuration] = [energy, duration];
          if (seen.firstAudibleAt === null && level >= AUDIBLE) {
            seen.firstAudibleAt = now;
            if (entry.jitterBufferEmittedCount) {
              seen.jitterBufferMs = (1000 * entry.jitterBufferDelay) / entry.jitterBufferEmittedCount;
            }
          }
        } else if (entry.type === "remote-inbound-rtp" && entry.roundTripTime > 0) {
          seen.rtcpRoundTripMs = 1000 * entry.roundTripTime;
        } else if (entry.type === "candidate-pair" && entry.currentRoundTripTime > 0 &&
                   (entry.id === selectedPairId || (selectedPairId === null && entry.nominated &&
                    entry.state === "succeeded"))) {
          seen.roundTripMs = 1000 * entry.currentRoundTripTime;
        }
      });
    }, 10);
    return peer;
  }
  Watched.prototype = Native.prototype;
  window.RTCPeerConnection = Watched;
})();
""".replace("__AUDIBLE__", str(AUDIBLE)).replace("__LIVE__", json.dumps(LIVE))


# -- the added round trip -------------------------------------------------------------------------------------------
class DelayingTcpProxy:
    """A TCP proxy on loopback that delivers every byte ``one_way`` seconds after it arrived, in both directions."""

    def __init__(self, target: Address, one_way: float) -> None:
        self.target = target
        self.one_way = one_way
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            pump = asyncio.ensure_future(self._pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as bytes come, write each chunk ``one_way`` after it was read (in order: the delay is constant)."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await line.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        delivery = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                line.put_nowait((loop.time() + self.one_way, chunk))
                if not chunk:
                    break
            await delivery
        except (OSError, asyncio.CancelledError):
            delivery.cancel()
            writer.close()


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket of the relay; what it receives goes to ``on_datagram(data, source)``."""

    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port


@dataclass
class MediaRelay:
    """A delaying UDP relay between one call's browser and the emulator, a symmetric NAT with a delay line.

    Every emulator candidate has a port facing the browser (advertised in the answer instead of it); every browser
    address has a port facing the emulator (advertised in the offer instead of the candidate, or opened on its first
    packet for an address the offer hid). A datagram crosses after ``one_way`` seconds."""

    one_way: float
    _toward_emulator: dict[Address, _Endpoint] = field(default_factory=dict)  # by the emulator candidate it faces
    _facing_emulator: dict[Address, _Endpoint] = field(default_factory=dict)  # by the browser address it stands for
    _opening: set[asyncio.Task[None]] = field(default_factory=set)
    _closed: bool = False

    async def browser_port_for(self, emulator: Address) -> Address:
        """The relay port the browser is told instead of the emulator's candidate ``emulator``."""
        return await self._port(self._toward_emulator, emulator, self._from_browser)

    async def emulator_port_for(self, browser: Address) -> Address:
        """The relay port the emulator sees (or is told) instead of the browser's address ``browser``."""
        return await self._port(self._facing_emulator, browser, self._from_emulator)

    def close(self) -> None:
        self._closed = True
        for opening in self._opening:
            opening.cancel()
        for endpoint in (*self._toward_emulator.values(), *self._facing_emulator.values()):
            if endpoint.transport is not None:
                endpoint.transport.close()

    async def _port(
        self,
        ports: dict[Address, _Endpoint],
        stands_for: Address,
        on_datagram: Callable[[Address, bytes, Address], None],
    ) -> Address:
        """The relay's port in ``ports`` standing for ``stands_for``, opened on its host the first time."""
        if stands_for not in ports:
            loop = asyncio.get_running_loop()
            transport, endpoint = await loop.create_datagram_endpoint(
                lambda: _Endpoint(lambda data, source: on_datagram(stands_for, data, source)),
                local_addr=(stands_for[0], 0),
            )
            endpoint.transport = transport  # connection_made comes a loop turn later
            if self._closed:  # the relay closed while the port was opening
                transport.close()
            ports[stands_for] = endpoint
        return ports[stands_for].address

    def _from_browser(self, emulator: Address, data: bytes, browser: Address) -> None:
        """A datagram from ``browser`` to the port standing for ``emulator``: sent on from the browser's own port."""

        endpoint = self._facing_emulator.get(browser)
        if endpoint is not None:
            asyncio.get_running_loop().call_later(self.one_way, self._send, endpoint, data, emulator)
        else:  # an address the offer hid (an mDNS host): its own port facing the emulator, opened now
            opening = asyncio.ensure_future(self._first_from(browser, data, emulator))
            self._opening.add(opening)
            opening.add_done_callback(self._opening.discard)

    async def _first_from(self, browser: Address, data: bytes, emulator: Address) -> None:
        await self.emulator_port_for(browser)
        asyncio.get_running_loop().call_later(self.one_way, self._send, self._facing_emulator[browser], data, emulator)

    def _from_emulator(self, browser: Address, data: bytes, emulator: Address) -> None:
        """A datagram from the emulator's ``emulator`` to the port standing for ``browser``: sent on from the port
        the browser knows for ``emulator``."""
        endpoint = self._toward_emulator.get(emulator)
        if endpoint is None:  # a candidate the answer did not name: the browser could not have learned it
            return
        asyncio.get_running_loop().call_later(self.one_way, self._send, endpoint, data, browser)

    @staticmethod
    def _send(endpoint: _Endpoint, data: bytes, destination: Address) -> None:
        if endpoint.transport is not None and not endpoint.transport.is_closing():
            endpoint.transport.sendto(data, destination)


CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)( typ \S+)(.*)$", re.IGNORECASE)


async def rewrite_candidates(sdp: str, port_for: Any) -> str:
    """``sdp`` with each UDP candidate's address replaced by ``await port_for((host, port))``; other candidates (TCP,
    mDNS names, which neither side here can use) are dropped so that no path avoids the relay."""
    lines = []
    for line in sdp.split("\r\n"):
        if line.lower().startswith("a=candidate:"):
            match = CANDIDATE.match(line)
            if match is None or not re.fullmatch(r"[\d.]+", match.group(2)):
                continue
            host, port = await port_for((match.group(2), int(match.group(3))))
            extension = re.sub(r" raddr \S+ rport \d+", "", match.group(5))
            line = f"{match.group(1)}{host} {port}{match.group(4)}{extension}"
        lines.append(line)
    return "\r\n".join(lines)


class DelayingApiProxy:
    """The emulator's DialNexa API as the plugin sees it: every request passed on unchanged (no delay: the plugin's
    server sits near DialNexa), except that the WHIP exchanges' candidates go through a :class:`MediaRelay` per call
    and the emulator's own origin in JSON bodies (the WHIP URL) is replaced with the proxy's."""

    def __init__(self, emulator: EmulatorProcess, one_way: float) -> None:
        self.emulator_origin = emulator.origin
        self.one_way = one_way
        self.origin = ""  # once serving, on a port of its own
        self.relays: dict[str, MediaRelay] = {}
        self.app = web.Application()
        self.app.router.add_route("*", "/{path:.*}", self._forward)
        self._serving = contextlib.AsyncExitStack()
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        self.origin = await self._serving.enter_async_context(served(self.app, access_log=False))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._serving.aclose()
        if self._http is not None:
            await self._http.close()
        for relay in self.relays.values():
            relay.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()
        is_sdp = request.content_type in ("application/sdp", "application/trickle-ice-sdpfrag")
        call = request.path.split("/web-calls/", 1)[1].split("/", 1)[0] if "/web-calls/" in request.path else ""
        relay = self.relays.setdefault(call, MediaRelay(self.one_way)) if is_sdp and call else None
        if relay is not None:
            body = (await rewrite_candidates(body.decode(), relay.emulator_port_for)).encode()
        headers = {
            name: value for name, value in request.headers.items() if name.lower() not in ("host", "content-length")
        }
        async with self._http.request(
            request.method, self.emulator_origin + request.path_qs, data=body, headers=headers, allow_redirects=False
        ) as upstream:
            reply = await upstream.read()
            reply_headers = {
                name: value
                for name, value in upstream.headers.items()
                if name.lower() not in ("content-length", "transfer-encoding", "content-encoding", "date", "server")
            }
            content_type = upstream.headers.get("Content-Type", "")
        if relay is not None and content_type.startswith(("application/sdp", "application/trickle-ice-sdpfrag")):
            reply = (await rewrite_candidates(reply.decode(), relay.browser_port_for)).encode()
        elif content_type.startswith("application/json"):
            reply = reply.replace(self.emulator_origin.encode(), self.origin.encode())
        return web.Response(body=reply, status=upstream.status, headers=reply_headers)


class LatencySite(HostSite):
    """The host site with the media script on its page, its plugin in front of ``api`` and open to ``origin`` (the
    delaying proxy's, through which the browser reaches it)."""

    def __init__(self, emulator: EmulatorProcess, api_base_url: str, origin: str | None = None) -> None:
        options: dict[str, Any] = {"base_url": api_base_url}
        if origin is not None:
            options["allowed_origins"] = (origin,)
        super().__init__(emulator, probe=MEDIA_JS, **options)


# -- one call -------------------------------------------------------------------------------------------------------
TIMINGS = ("connected", "first packet", "first played", "audible")


@dataclass
class CallTimings:
    """Milliseconds from the click, and what the receiver reported."""

    since_click: dict[str, float]
    round_trip_ms: float | None
    round_trip_source: str
    """Where the round trip comes from: the selected candidate pair's ``currentRoundTripTime`` (Chromium), RTCP's
    (``remote-inbound-rtp``), or the time from ICE ``checking`` to ``connected`` (Firefox reports 0 for the pair)."""
    jitter_buffer_ms: float | None


BEFORE = "1f227a9"
"""The commit measured as "before": the emulator as it was when the issue measured 1,284 ms (its agent already spoke
as soon as media connected)."""


@dataclass(frozen=True)
class Variant:
    """One way of making the call, compared with the others call by call."""

    label: str
    emulator: str
    """Which emulator answers: ``before`` (commit :data:`BEFORE`), ``now``, or ``now, active`` (this checkout with
    ``--dtls-setup active``: the emulator opens the DTLS handshake, as before)."""
    pointer_rests: bool = True
    """A visitor's pointer reaches the widget half a second before the click (the widget asks for its ICE servers on
    that interest, so they are there at the click); otherwise the pointer's arrival and the click are one instant, as
    an automated click makes them, and the ICE servers request and the start run one after the other."""


VARIANTS = (
    Variant(f"before ({BEFORE})", "before"),
    Variant("now", "now"),
    Variant("now, emulator opens DTLS", "now, active"),
    Variant("now, no hover", "now", pointer_rests=False),
)
REST_BEFORE_CLICK = 0.5


async def one_call(browser: Browser | Firefox, url: str, shots: Path, *, pointer_rests: bool = True) -> CallTimings:
    tab = await open_tab(browser, url, shots)
    try:
        start = tab.button("Start call")
        await start.wait_visible()
        if pointer_rests:
            await tab.call("(tag) => document.querySelector(tag).dispatchEvent(new PointerEvent('pointerenter'))", TAG)
            await asyncio.sleep(REST_BEFORE_CLICK)
        await start.click()
        await tab.wait_state(*LIVE, within=15)
        await tab.wait_for(
            "() => window.__media.length && window.__media.at(-1).firstAudibleAt",
            within=15,
            what="the agent is heard",
        )
        await asyncio.sleep(0.3)  # a few RTCP reports for the round trip
        times: Mapping[str, Any] = await tab.call(
            "() => ({ click: window.__clicks[0], live: window.__liveAt, media: window.__media.at(-1) })"
        )
        await tab.button("End call").click()
        await tab.wait_state("ended")
    finally:
        await tab.close()
    click, media = times["click"], times["media"]
    since_click = {
        "connected": times["live"] - click,
        "first packet": media["firstPacketAt"] - click,
        "first played": media["firstPlayedAt"] - click,
        "audible": media["firstAudibleAt"] - click,
    }
    measured = {
        "candidate pair": media["roundTripMs"],
        "RTCP": media["rtcpRoundTripMs"],
        "ICE check": media["iceCheckMs"],
    }
    how, round_trip = next(((how, ms) for how, ms in measured.items() if ms is not None), ("", None))
    return CallTimings(since_click, round_trip, how, media["jitterBufferMs"])


@dataclass
class Network:
    """The emulator, its delaying API proxy, the host site and the delaying proxy in front of it, for one delay."""

    added_round_trip_ms: int
    emulator: EmulatorProcess
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    url: str = ""

    async def __aenter__(self) -> Self:
        if not self.added_round_trip_ms:  # loopback: the site in front of the emulator, nothing between
            site = LatencySite(self.emulator, self.emulator.base_url)
            await self.stack.enter_async_context(site)
            self.url = site.origin + "/"
            return self
        one_way = self.added_round_trip_ms / 2000
        api = await self.stack.enter_async_context(DelayingApiProxy(self.emulator, one_way))
        front = DelayingTcpProxy(("127.0.0.1", 0), one_way)
        site = LatencySite(self.emulator, api.origin + "/v1", front.origin)
        await self.stack.enter_async_context(site)
        front.target = ("127.0.0.1", site.port)
        await self.stack.enter_async_context(front)
        self.url = front.origin + "/"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stack.aclose()


AUDIO_OUTPUT_START_JS = """async () => {
  // How long this browser's sound output takes to start, with no call: a fresh AudioContext until its clock moves.
  const created = performance.now();
  const context = new AudioContext();
  await new Promise((started) => {
    const poll = setInterval(() => context.currentTime > 0 && (clearInterval(poll), started()), 5);
  });
  const took = performance.now() - created;
  await context.close();
  return took;
}"""


async def audio_output_start_ms(browser: Browser | Firefox, url: str, shots: Path) -> float:
    tab = await open_tab(browser, url, shots)
    try:
        took: float = await tab.call(AUDIO_OUTPUT_START_JS)
        return took
    finally:
        await tab.close()


@dataclass
class Results:
    calls: dict[tuple[str, int, str], list[CallTimings]] = field(default_factory=dict)
    """(engine, added round trip in ms, variant's label) -> each call's timings."""
    audio_output_start_ms: dict[str, list[float]] = field(default_factory=dict)
    """engine -> how long a fresh AudioContext took to run, with no call, once per round of calls."""


@contextlib.contextmanager
def checkout(commit: str) -> Iterator[Path]:
    """This repository's ``webcall`` package as of ``commit``, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{commit}-") as directory:
        archive = subprocess.run(["git", "archive", commit, "webcall"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", directory], input=archive.stdout, check=True)
        yield Path(directory)


async def measure(
    calls: int, engines: tuple[str, ...] = ("chromium", "firefox"), round_trips_ms: tuple[int, ...] = (0, 100)
) -> Results:
    """``calls`` calls of each variant in each engine at each added round trip, alternating call by call."""
    results = Results()
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp, checkout(BEFORE) as before:
        microphone = write_silence(Path(tmp) / "silence.wav")
        async with async_playwright() as driver, contextlib.AsyncExitStack() as stack:
            emulators = {
                "before": await stack.enter_async_context(EmulatorProcess(source=before)),
                "now": await stack.enter_async_context(EmulatorProcess()),
                "now, active": await stack.enter_async_context(EmulatorProcess("--dtls-setup", "active")),
            }
            networks = {
                (name, ms): await stack.enter_async_context(Network(ms, emulator))
                for name, emulator in emulators.items()
                for ms in round_trips_ms
            }
            for engine in engines:
                browser = await launch(engine, driver, microphone)
                try:
                    for network in networks.values():  # warm-up: first synthesis, first connections
                        await one_call(browser, network.url, Path(tmp))
                    for _ in range(calls):
                        for ms in round_trips_ms:
                            for variant in VARIANTS:
                                network = networks[(variant.emulator, ms)]
                                timings = await one_call(
                                    browser, network.url, Path(tmp), pointer_rests=variant.pointer_rests
                                )
                                results.calls.setdefault((engine, ms, variant.label), []).append(timings)
                        took = await audio_output_start_ms(browser, networks[("now", 0)].url, Path(tmp))
                        results.audio_output_start_ms.setdefault(engine, []).append(took)
                finally:
                    await browser.close()
    return results


def median_ms(values: list[float | None]) -> str:
    known = [value for value in values if value is not None]
    return f"{statistics.median(known):.0f}" if known else "-"


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    chosen = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("chromium", "firefox")
    measured = asyncio.run(measure(count, chosen))
    for (engine, added, label), timings in measured.calls.items():
        print(f"{engine}, +{added} ms round trip, {label}: {len(timings)} calls, medians")
        for name in TIMINGS:
            values = [t.since_click[name] for t in timings]
            print(f"  click -> {name:<20} {median_ms(list(values)):>6} ms   ", " ".join(f"{v:.0f}" for v in values))
        sources = sorted({t.round_trip_source for t in timings})
        print(f"  round trip measured ({', '.join(sources)}) {median_ms([t.round_trip_ms for t in timings]):>6} ms")
        print(f"  jitter buffer at audible     {median_ms([t.jitter_buffer_ms for t in timings]):>6} ms")
    for engine, took in measured.audio_output_start_ms.items():
        print(f"{engine}: a fresh AudioContext runs after {median_ms(list(took))} ms (no call)")
