"""How many simultaneous web calls the emulator sustains on this machine with agent audio flowing.

The emulator runs in a subprocess (``python -m webcall.emulator``). Calls are added in steps (1, 2, 4, 8, …): at each
step, that many aiortc clients (the browser stand-in of ``tests/emulator/test_media.py``, receive-only so that the
client side costs as little as possible) mint a web call over REST, connect over WHIP with an ``events`` data channel,
and count the agent's 20 ms audio frames over a 5 s window. A step is sustained when every client received at least
95 % of the frames due in the window and heard the agent speak (RMS above silence). The emulator limits live media
sessions (``MediaSettings.max_sessions``, 503 beyond): when a step hits that limit, the limit is the ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import httpx
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from webcall.emulator.media import MediaSettings
from webcall.emulator.media.tracks import frame_to_mono
from webcall.emulator.media.vad import rms

from .browser import EMULATOR_KEY, EmulatorProcess

WINDOW = 5.0  # seconds of audio counted at each step
FRAME = 0.020
ON_TIME = 0.95  # share of the frames due in the window that must arrive
AUDIBLE = 0.01  # RMS relative to full scale
HEARD_FRAMES = 25  # half a second of the agent's voice


class EmulatorLimit(Exception):
    """The emulator refused a call with 503: its limit of live media sessions."""


@dataclass
class Client:
    """A browser stand-in: an aiortc peer connection receiving the agent's voice."""

    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    arrivals: list[float] = field(default_factory=list)
    audible: int = 0
    location: str | None = None
    access_token: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.createDataChannel("events")
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, AudioFrame):
                self.arrivals.append(loop.time())
                if rms(frame_to_mono(frame)) >= AUDIBLE:
                    self.audible += 1

    async def connect(self, http: httpx.AsyncClient, origin: str) -> None:
        minted = await http.post(
            f"{origin}/v1/web-calls",
            json={"agent_id": "agent_sales", "metadata": {"name": "Priya", "company": "Acme"}},
            headers={"Authorization": f"Bearer {EMULATOR_KEY}"},
        )
        minted.raise_for_status()
        call = minted.json()
        self.access_token = call["access_token"]
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await http.post(
            call["media"]["whip_url"],
            content=self.pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.access_token}"},
        )
        if answer.status_code == 503:
            raise EmulatorLimit(answer.json().get("message", "503"))
        answer.raise_for_status()
        self.location = answer.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
        await asyncio.wait_for(self.connected.wait(), 20)

    def frames_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.arrivals if start <= t < end)

    async def close(self, http: httpx.AsyncClient, origin: str) -> None:
        if self.location is not None:
            with contextlib.suppress(httpx.HTTPError):
                await http.delete(origin + self.location, headers={"Authorization": f"Bearer {self.access_token}"})
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Step:
    calls: int
    sustained: bool
    on_time: float  # mean share of due frames received
    worst: float  # the worst client's share
    silent_clients: int
    emulator_cpu: float  # percent of one core
    client_cpu: float

    def describe(self) -> str:
        return (
            f"{self.calls} calls: frames {self.on_time:.1%} on time (worst client {self.worst:.1%}), "
            f"{'agent heard on every call' if not self.silent_clients else f'{self.silent_clients} silent'}; "
            f"emulator CPU {self.emulator_cpu:.0f}%, client side {self.client_cpu:.0f}%"
        )


async def run_step(emulator: EmulatorProcess, calls: int) -> Step:
    clients = [Client() for _ in range(calls)]
    limits = httpx.Limits(max_connections=calls + 4)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        try:
            await asyncio.gather(*(c.connect(http, emulator.origin) for c in clients))
            loop = asyncio.get_running_loop()
            await asyncio.sleep(0.5)  # past the first packets' jitter
            start, emulator_cpu, own_cpu = loop.time(), cpu_seconds(emulator.pid), time.process_time()
            await asyncio.sleep(WINDOW)
            end = loop.time()
            emulator_share = (cpu_seconds(emulator.pid) - emulator_cpu) / (end - start) * 100
            own_share = (time.process_time() - own_cpu) / (end - start) * 100
            # The agent's welcome lasts ~5 s from each connection: give it time to be heard everywhere.
            await asyncio.sleep(1.0)
        finally:
            await asyncio.gather(*(c.close(http, emulator.origin) for c in clients), return_exceptions=True)
    due = (end - start) / FRAME
    shares = [min(1.0, c.frames_between(start, end) / due) for c in clients]
    silent = sum(1 for c in clients if c.audible < HEARD_FRAMES)
    worst = min(shares)
    return Step(
        calls=calls,
        sustained=worst >= ON_TIME and silent == 0,
        on_time=sum(shares) / len(shares),
        worst=worst,
        silent_clients=silent,
        emulator_cpu=emulator_share,
        client_cpu=own_share,
    )


def steps(max_calls: int) -> list[int]:
    counts = [1]
    while counts[-1] * 2 <= max_calls:
        counts.append(counts[-1] * 2)
    if counts[-1] != max_calls:
        counts.append(max_calls)
    return counts


async def simultaneous_calls(max_calls: int) -> tuple[int, str]:
    """The largest number of simultaneous calls (up to ``max_calls``) whose agent audio all arrived on time, and a
    short description of the load at that step (and of what stopped the ramp, if anything did)."""
    best: Step | None = None
    stopped = ""
    async with EmulatorProcess() as emulator:
        for count in steps(max_calls):
            try:
                step = await run_step(emulator, count)
            except EmulatorLimit:
                limit = MediaSettings().max_sessions
                stopped = f"; ceiling: the emulator's limit of {limit} live media sessions (503 at {count} calls)"
                break
            if not step.sustained:
                stopped = f"; {step.describe()} was not sustained"
                break
            best = step
            await asyncio.sleep(1.5)  # the step's calls are ended; let their media sessions close
    if best is None:
        return 0, "not even one call" + stopped
    return best.calls, best.describe() + stopped


def main() -> None:
    sustained, detail = asyncio.run(simultaneous_calls(int(sys.argv[1]) if len(sys.argv) > 1 else 16))
    print(sustained, detail)


if __name__ == "__main__":
    main()
