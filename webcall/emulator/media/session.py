"""One WHIP session: the peer connection of a web call, its audio in both directions and its call lifecycle.

Lifecycle, as the emulator's call record sees it:

- media connects (peer connection ``connected``) → ``initiated``;
- the browser DELETEs the session, or closes its peer connection → ``user_disconnected``;
- the simulated agent says its closing line → ``agent_disconnected`` (announced on the data channel first);
- the agent's ``max_call_duration_sec`` elapses → a short closing line, then ``max_duration_reached``;
- the connection fails, or nothing at all arrives from the browser (no audio, RTCP, ICE check or data) for
  ``media_timeout`` s, and it does not recover within ``network_grace`` s, or it never connects → ``network_failure``.
  A caller who sends no audio (no microphone) is alive as long as the transport is: the call lasts.
- the call is ended elsewhere (REST ``POST /v1/calls/{id}/end``) → ``call_ended`` is sent and the media closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, OperationError
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame

from webcall.emulator.config import DTLS_SETUPS
from webcall.emulator.state import Call, EmulatedAgent, EmulatorState, InvalidTransition

from .agent import MAX_DURATION_LINE, run_agent, welcome_line
from .candidates import host_addresses, offer_ice_credentials, usable_offer
from .checks import recheck_on_incoming
from .liveness import InboundWatch, ice_connections
from .stt import Transcriber
from .tracks import PacedAudioTrack, frame_to_mono
from .tts import Synthesizer
from .vad import CallerTurn, TurnDetector, TurnSettings

__all__ = ["MediaSession", "MediaSettings", "NegotiationError"]

log = logging.getLogger("webcall.emulator.media")


MAX_WAITING_MESSAGES = 64
"""Data-channel messages kept for a browser that has not opened the channel yet (state and transcript lines)."""


@dataclass(frozen=True, kw_only=True)
class MediaSettings:
    """Tunables of the emulator's media side (the defaults suit a browser; tests shorten the timers)."""

    turn: TurnSettings = field(default_factory=TurnSettings)
    connect_timeout: float = 30.0
    """A session whose media has not connected by then ends with ``network_failure``."""
    network_grace: float = 5.0
    """How long a failed connection may take to recover before the call ends with ``network_failure``."""
    media_timeout: float = 4.0
    """Nothing from the browser for this long (no audio, RTCP, ICE check or data) means the network may be gone;
    aiortc's ICE consent takes ~30 s to notice. A browser that sends no audio still checks consent every few seconds
    and reports on the agent's audio, so silence alone never ends a call."""
    watch_interval: float = 0.25
    """How often the session looks at when the browser was last heard from."""
    hangup_tail: float = 0.3
    """Pause after the agent's last line before it hangs up, so the browser plays the line to its end."""
    transcribe: bool = True
    """Transcribe caller turns with pocketsphinx; when False every caller turn reads "(unintelligible)"."""
    max_sessions: int = 16
    """Concurrent media sessions; further offers get 503."""
    max_offer_bytes: int = 64 * 1024
    dtls_setup: str = "passive"
    """The DTLS role the answer takes (``a=setup``). ``passive``: the browser opens the handshake as soon as its ICE
    check succeeds, and the emulator finishes it first, its first audio leaving with its last handshake flight, so
    the browser has it as it reports the connection. ``active`` (aiortc's own choice): the emulator opens the
    handshake, the browser finishes it first, and the first audio arrives one round trip after the browser reports
    the connection."""

    def __post_init__(self) -> None:
        if self.dtls_setup not in DTLS_SETUPS:
            raise ValueError(
                f"MediaSettings.dtls_setup must be one of {', '.join(DTLS_SETUPS)}, not {self.dtls_setup!r}"
            )


class NegotiationError(Exception):
    """The offer could not be answered (no audio section, no common codec, missing ICE/DTLS attributes…)."""


class MediaSession:
    """A web call's peer connection, its outgoing agent voice, incoming caller audio and the agent that runs it."""

    def __init__(
        self,
        *,
        state: EmulatorState,
        call: Call,
        settings: MediaSettings,
        synthesizer: Synthesizer,
        transcriber: Transcriber,
        on_closed: Callable[[MediaSession], None],
    ) -> None:
        self.id = secrets.token_urlsafe(16)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.offer_ice: tuple[str, str] | None = None
        """The ICE username fragment and password of the browser's offer: fragments naming others are restarts."""
        self.trickled_candidates: list[str] = []
        """The types (host, srflx, relay) of the candidates the browser trickled after its offer."""
        self.state = state
        self.call = call
        self.agent: EmulatedAgent = state.agents[call.agent_id]
        self.settings = settings
        self.synthesizer = synthesizer
        self.transcriber = transcriber
        self._on_closed = on_closed
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.voice = PacedAudioTrack()
        self.detector = TurnDetector(settings.turn)
        self.channel: RTCDataChannel | None = None
        self._waiting_messages: list[dict[str, Any]] = []
        """Messages for the data channel sent before the browser opened it."""
        self.connected = asyncio.Event()
        self.agent_state = "idle"
        self.caller_turns = 0
        self.agent_turns = 0
        self._turns: list[CallerTurn] = []
        self._turn_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._agent_task: asyncio.Task[None] | None = None
        self._grace_task: asyncio.Task[None] | None = None
        self.inbound = InboundWatch()
        self.stalled = False  # nothing from the browser for media_timeout seconds
        self._close_task: asyncio.Task[None] | None = None
        self.ending = False
        self.closed = False

    # -- logging / messaging -----------------------------------------------------------------------------------
    def log(self, level: int, message: str, *args: object, exc_info: BaseException | bool = False) -> None:
        log.log(level, "call %s: " + message, self.call.id, *args, exc_info=exc_info)

    @property
    def data_channel_open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    def send(self, message: dict[str, Any]) -> bool:
        """Send one JSON message on the ``events`` data channel. Before the browser has opened it, the message waits
        (at most :data:`MAX_WAITING_MESSAGES`) and goes when it opens; False when it is closed or the queue is full."""
        channel = self.channel
        if channel is None and not self.closed:
            if len(self._waiting_messages) >= MAX_WAITING_MESSAGES:
                return False
            self._waiting_messages.append(message)
            return True
        if channel is None or channel.readyState != "open":
            return False
        try:
            channel.send(json.dumps(message, separators=(",", ":")))
        except Exception:
            self.log(logging.DEBUG, "could not send %s on the data channel", message.get("type"), exc_info=True)
            return False
        return True

    def set_agent_state(self, agent_state: str) -> None:
        self.agent_state = agent_state
        self.send({"type": "agent_state", "state": agent_state})

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"webcall-media-{self.call.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.log(logging.ERROR, "task %s failed", task.get_name(), exc_info=error)
            self.end("error")

    # -- negotiation -------------------------------------------------------------------------------------------
    async def answer(self, offer_sdp: str) -> str:
        """Apply the browser's offer, attach the agent's voice and return the complete SDP answer."""
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        offer = usable_offer(offer_sdp)
        self.offer_ice = offer_ice_credentials(offer.sdp)
        if offer.mdns_candidates:
            self.log(
                logging.INFO,
                "ignoring %d mDNS candidate(s) of the offer; the browser's checks will reveal its address",
                offer.mdns_candidates,
            )
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            self.inbound.attach(pc)
            for connection in ice_connections(pc):
                recheck_on_incoming(connection)
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise NegotiationError("The SDP offer has no audio section.")
            pc.addTrack(self.voice)
            if self.settings.dtls_setup == "passive":
                self._answer_as_dtls_server()
            # aiortc gathers every candidate in setLocalDescription: the answer is complete (no trickle needed).
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, KeyError, IndexError, InternalError, InvalidAccessError, OperationError) as err:
            raise NegotiationError(f"The SDP offer could not be answered: {err}") from err
        local = pc.localDescription
        if local is None:  # pragma: no cover - aiortc always sets it
            raise NegotiationError("No SDP answer was produced.")
        if "a=candidate:" not in local.sdp:
            addresses = host_addresses()
            if addresses:
                self.log(
                    logging.ERROR, "the answer has no ICE candidates, though this host has %s", ", ".join(addresses)
                )
            else:
                self.log(
                    logging.WARNING,
                    "the answer has no ICE candidates: this host has no network interface but loopback",
                )
        self._agent_task = self.spawn(self._agent_main(), "agent")
        self.spawn(self._connect_deadline(), "connect-deadline")
        self.log(logging.INFO, "WHIP session %s answered", self.id)
        return local.sdp

    def _answer_as_dtls_server(self) -> None:
        """Make the answer ``a=setup:passive``: aiortc answers ``active`` unless its DTLS transports already have a
        role, and has no public way to choose one, so each transport of the offer (one when bundled) is given the
        server's role before the answer is made; the answer then says so, and the transports keep it."""
        transports = {transceiver.receiver.transport for transceiver in self.pc.getTransceivers()}
        if self.pc.sctp is not None:
            transports.add(self.pc.sctp.transport)
        for transport in transports:
            transport._set_role("server")

    # -- trickle ICE ------------------------------------------------------------------------------------------------
    def is_current_ice(self, username_fragment: str, password: str) -> bool:
        """Whether a fragment's ICE credentials are the offer's (a trickle) rather than new ones (an ICE restart)."""
        return (username_fragment, password) == self.offer_ice

    async def add_remote_candidates(self, candidates: list[str], *, end: bool) -> None:
        """Candidates the browser gathered after its offer (relay ones above all), then ``end-of-candidates``."""
        mid = next((t.mid for t in self.pc.getTransceivers() if t.mid is not None), "0")
        for value in candidates:
            try:
                candidate = candidate_from_sdp(value.removeprefix("candidate:"))
            except (ValueError, IndexError):
                self.log(logging.INFO, "ignoring a trickled candidate aiortc cannot read: %s", value)
                continue
            candidate.sdpMid = mid
            if candidate.relatedAddress is not None and not _is_ip_address(candidate.relatedAddress):
                # Browsers hide a relay's or srflx's base behind an mDNS name; aiortc can only write addresses.
                candidate.relatedAddress = candidate.relatedPort = None
            try:
                await self.pc.addIceCandidate(candidate)
            except ValueError:  # after end-of-candidates (some browsers' offers already say it)
                self.log(logging.INFO, "ignoring a candidate trickled after end-of-candidates")
                continue
            self.trickled_candidates.append(candidate.type)
        if end:
            with contextlib.suppress(ValueError):  # the offer or an earlier fragment said it already
                await self.pc.addIceCandidate(None)

    def selected_pair(self) -> dict[str, str] | None:
        """The browser's side of the candidate pair ICE nominated: its type (host, srflx, prflx, relay) and address."""
        for connection in ice_connections(self.pc):
            for pair in connection._nominated.values():
                remote = pair.remote_candidate
                return {"remote_type": remote.type, "remote_address": f"{remote.host}:{remote.port}"}
        return None

    # -- peer connection events --------------------------------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "events":
            self.log(logging.DEBUG, "ignoring data channel %r", channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_message)
        self.log(logging.INFO, "events data channel open")
        waiting, self._waiting_messages = self._waiting_messages, []
        for message in waiting:
            self.send(message)

    def _on_message(self, message: object) -> None:
        self.log(logging.DEBUG, "data channel message from the browser: %r", message)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.spawn(self._consume_caller(track), "caller-audio")

    def _on_connection_state(self) -> None:
        connection_state = self.pc.connectionState
        self.log(logging.INFO, "connection %s", connection_state)
        if self.ending:
            return
        if connection_state == "connected":
            if self._grace_task is not None:
                self._grace_task.cancel()
                self._grace_task = None
            if not self.connected.is_set():
                self.connected.set()
                if self.call.status == "created":
                    try:
                        self.state.transition(self.call, "initiated")
                    except InvalidTransition:
                        self.log(logging.WARNING, "could not mark the call initiated from %s", self.call.status)
                self.spawn(self._watch_duration(), "max-duration")
                self.spawn(self._watch_inbound(), "inbound")
        elif connection_state in ("failed", "disconnected"):
            if self._grace_task is None:
                self._grace_task = self.spawn(self._network_grace(), "network-grace")
        elif connection_state == "closed":
            # The browser closed its peer connection (DTLS close_notify) without a DELETE.
            self.end("user_disconnected")

    async def _watch_inbound(self) -> None:
        """Liveness as a media server judges it: anything arriving on the transport, not the caller's audio.

        Nothing for ``media_timeout`` s: the network may be gone; nothing for ``network_grace`` s more: it is.
        """
        timeout, grace = self.settings.media_timeout, self.settings.network_grace
        while not self.ending:
            await asyncio.sleep(self.settings.watch_interval)
            silent_for = self.inbound.silent_for(time.monotonic())
            if silent_for is None or silent_for >= timeout + grace:
                self.log(logging.WARNING, "nothing from the browser for %.1f s: the network is gone", timeout + grace)
                self.end("network_failure")
                return
            if silent_for >= timeout and not self.stalled:
                self.stalled = True
                self.log(logging.INFO, "nothing from the browser for %.1f s: the network may be gone", timeout)
            elif silent_for < timeout and self.stalled:
                self.stalled = False
                self.log(logging.INFO, "the browser is heard from again")

    async def _network_grace(self) -> None:
        await asyncio.sleep(self.settings.network_grace)
        self._grace_task = None
        if self.pc.connectionState != "connected":
            self.log(logging.WARNING, "the connection did not recover within %.1f s", self.settings.network_grace)
            self.end("network_failure")

    async def _connect_deadline(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), self.settings.connect_timeout)
        except TimeoutError:
            self.log(logging.WARNING, "media did not connect within %.1f s", self.settings.connect_timeout)
            self.end("network_failure")

    # -- caller audio ------------------------------------------------------------------------------------------
    async def _consume_caller(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, AudioFrame):
                continue
            if first:
                first = False
                if frame.sample_rate != self.detector.sample_rate:
                    self.detector = TurnDetector(self.settings.turn, frame.sample_rate)
            turn = self.detector.feed(frame_to_mono(frame), loop.time())
            if turn is not None:
                self.caller_turns += 1
                self.log(logging.INFO, "caller turn %d ended (%.2f s)", self.caller_turns, turn.duration)
                self._turns.append(turn)
                self._turn_ready.set()

    async def next_turns(self) -> list[CallerTurn]:
        """Wait for the caller to finish a turn; returns every turn that ended since the last call."""
        while not self._turns:
            self._turn_ready.clear()
            await self._turn_ready.wait()
        turns, self._turns = self._turns, []
        return turns

    async def transcribe(self, turns: list[CallerTurn]) -> str:
        if not self.settings.transcribe or not turns:
            return ""
        audio = np.concatenate([t.audio for t in turns])
        return await self.transcriber.transcribe(audio, turns[0].sample_rate, call_id=self.call.id)

    # -- the agent's voice -------------------------------------------------------------------------------------
    async def say(self, text: str) -> bool:
        """Speak ``text``: ``speaking`` state, the agent transcript line when audio starts, back when it ends.

        Returns False when the line was cut short (the call ended or the agent was interrupted).
        """
        pcm = await self.synthesizer.synthesize(text, self.agent.voice)
        if self.ending:
            return False
        self.set_agent_state("speaking")
        utterance = self.voice.play(pcm)
        try:
            await utterance.started
            if utterance.interrupted:
                return False
            self.send({"type": "transcript", "role": "agent", "text": text, "final": True})
            self.state.add_transcript(self.call, "agent", text)
            await utterance.finished
        except asyncio.CancelledError:
            self.voice.clear()
            raise
        self.agent_turns += 1
        return not utterance.interrupted

    async def hang_up(self, reason: str) -> None:
        """The agent ends the call after its last line has played."""
        await asyncio.sleep(self.settings.hangup_tail)
        self.end(reason)

    async def _agent_main(self) -> None:
        # The welcome is synthesized while ICE and DTLS complete, and spoken as soon as media can flow: the events
        # data channel (SCTP, several round trips more) catches up with its state and transcript messages.
        welcome = welcome_line(self)
        if welcome:
            self.spawn(self._synthesize_ahead(welcome), "welcome-synthesis")
        await self.connected.wait()
        await run_agent(self, welcome)

    async def _synthesize_ahead(self, text: str) -> None:
        await self.synthesizer.synthesize(text, self.agent.voice)

    async def _watch_duration(self) -> None:
        await asyncio.sleep(self.agent.max_call_duration_sec)
        if self.ending:
            return
        self.log(logging.INFO, "maximum call length of %d s reached", self.agent.max_call_duration_sec)
        if self._agent_task is not None:
            self._agent_task.cancel()
            await asyncio.gather(self._agent_task, return_exceptions=True)
        self.voice.clear()
        await self.say(MAX_DURATION_LINE)
        await self.hang_up("max_duration_reached")

    # -- ending ------------------------------------------------------------------------------------------------
    def end(self, reason: str) -> None:
        """End the call for ``reason`` (when still live), announce ``call_ended`` and tear the media down."""
        if self.ending:
            return
        self.ending = True
        self.log(logging.INFO, "ending: %s", reason)
        self.send({"type": "call_ended", "reason": reason})
        self.state.end_call(self.call, reason)
        self._schedule_close()

    def on_call_ended(self) -> None:
        """The call was ended elsewhere (state listener): tell the browser and close the media."""
        if self.ending:
            return
        self.ending = True
        reason = self.call.end_reason or "unknown"
        self.log(logging.INFO, "call ended elsewhere (%s); closing media", reason)
        self.send({"type": "call_ended", "reason": reason})
        self._schedule_close()

    def _schedule_close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
            self._close_task.set_name(f"webcall-media-{self.call.id}-close")

    async def wait_closed(self) -> None:
        """Wait until the media is closed (closing it now if nothing has yet)."""
        self._schedule_close()
        assert self._close_task is not None
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        # Let the last data-channel messages (call_ended) leave before the transport goes away.
        deadline = time.monotonic() + 1.0
        channel = self.channel
        while channel is not None and channel.readyState == "open" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if channel.bufferedAmount == 0:
                await asyncio.sleep(0.05)
                break
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.voice.stop()
        try:
            await self.pc.close()
        except Exception:
            self.log(logging.WARNING, "error while closing the peer connection", exc_info=True)
        self.closed = True
        self.log(logging.INFO, "media closed")
        self._on_closed(self)

    # -- observation -------------------------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        """The control route's view (levels are RMS relative to full scale, 0.0-1.0)."""
        silent_for = self.detector.silent_for(now)
        return {
            "call_id": self.call.id,
            "session_id": self.id,
            "connected": (not self.closed) and self.pc.connectionState == "connected",
            "connection_state": self.pc.connectionState,
            "frames_received": self.detector.frames,
            "frames_sent": self.voice.frames_sent,
            "caller_rms_recent": round(self.detector.rms_recent, 5),
            "caller_silent_for": None if silent_for is None else round(silent_for, 3),
            "caller_speaking": self.detector.in_turn,
            "caller_turns": self.caller_turns,
            "agent_turns": self.agent_turns,
            "agent_state": self.agent_state,
            "data_channel_open": (not self.closed) and self.data_channel_open,
            "closed": self.closed,
            "trickled_candidates": list(self.trickled_candidates),
            "ice_pair": self.selected_pair(),
        }


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
