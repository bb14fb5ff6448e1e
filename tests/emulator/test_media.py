"""The emulator's WHIP media endpoint and simulated agent, driven over real WebRTC.

An aiortc peer connection stands in for the browser: it opens the ``events`` data channel, sends a microphone
track (silence, or a WAV of synthesized speech on demand), POSTs its offer to the ``whip_url`` minted by the REST
API, and listens to the agent's audio and messages.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from multidict import CIMultiDict
from yarl import URL

from webcall.emulator import EmulatorConfig, create_emulator_app
from webcall.emulator.keys import STATE_KEY
from webcall.emulator.media import MediaSettings, setup_media
from webcall.emulator.media.agent import MAX_DURATION_LINE
from webcall.emulator.media.candidates import usable_offer
from webcall.emulator.media.liveness import ice_connections
from webcall.emulator.media.tracks import PacedAudioTrack, frame_to_mono
from webcall.emulator.media.tts import get_synthesizer, write_wav
from webcall.emulator.media.vad import rms
from webcall.emulator.state import AgentVersion, EmulatedAgent, EmulatorState, default_agents
from webcall.emulator.testing import EmulatorControl, eventually

API_KEY = "emu_media:MediaTestSecretKey"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
INVALID_TOKEN_BODY = {
    "statusCode": 401,
    "message": "Web call access token is invalid, expired or already used",
    "error": "Unauthorized",
}
AUDIBLE = 0.01  # RMS relative to full scale; decoded silence is 0.0
CALLER_SPEECH = "I would like to know more about pricing."

Client = TestClient[web.Request, web.Application]


def quick_agent(agent_id: str, *, script: list[str], max_call_duration_sec: int = 600) -> EmulatedAgent:
    return EmulatedAgent(
        id=agent_id,
        name="Quick",
        welcome_message="Hi {{name}}.",
        script=script,
        closing="Bye {{name}}.",
        max_call_duration_sec=max_call_duration_sec,
        versions=[AgentVersion(version_number=1)],
    )


AGENTS = {
    **default_agents(),
    "agent_quick": quick_agent("agent_quick", script=["Sure."]),
    "agent_closing": quick_agent("agent_closing", script=[]),
    "agent_brief": quick_agent("agent_brief", script=["Sure."], max_call_duration_sec=1),
}


@pytest.fixture(scope="module")
def caller_speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray[Any, np.dtype[np.int16]]:
    """A WAV of the caller's sentence, synthesized now, written and read back as 48 kHz mono int16."""
    path: Path = tmp_path_factory.mktemp("speech") / "caller.wav"
    write_wav(path, get_synthesizer().synthesize_blocking(CALLER_SPEECH))
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 48000)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)


@pytest.fixture
async def emu(aiohttp_client: Callable[..., Any]) -> Client:
    config = EmulatorConfig(api_keys=frozenset({API_KEY}), agents=AGENTS)
    client: Client = await aiohttp_client(create_emulator_app(config))
    return client


@pytest.fixture
async def control(emu: Client) -> AsyncIterator[EmulatorControl]:
    async with EmulatorControl(str(emu.make_url(""))) as emulator_control:
        yield emulator_control


def emulator_state(emu: Client) -> EmulatorState:
    return emu.app[STATE_KEY]


async def mint(emu: Client, agent_id: str = "agent_quick", **metadata: str) -> dict[str, Any]:
    response = await emu.post("/v1/web-calls", json={"agent_id": agent_id, "metadata": metadata}, headers=AUTH)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def whip_path(web_call: dict[str, Any]) -> str:
    return URL(web_call["media"]["whip_url"]).path


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    text: str


class Browser:
    """A browser stand-in: an aiortc peer connection with an ``events`` data channel and a microphone."""

    def __init__(self, microphone: str = "track") -> None:
        """``microphone``: "track" sends one; "none" offers ``sendrecv`` without a track (as the widget does when the
        microphone is refused), "recvonly" offers a receive-only transceiver."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = PacedAudioTrack()
        if microphone == "track":
            self.pc.addTrack(self.mic)
        else:
            self.pc.addTransceiver("audio", direction="sendrecv" if microphone == "none" else "recvonly")
        self.channel = self.pc.createDataChannel("events")
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.audio_frames = 0
        self.audible_frames = 0
        self.first_audible_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def hears_agent(self) -> bool:
        """At least 200 ms of audible agent audio arrived."""
        return self.audible_frames >= 10

    def _on_message(self, message: object) -> None:
        assert isinstance(message, str)
        self.messages.append(json.loads(message))
        self._changed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, AudioFrame)
            self.audio_frames += 1
            if rms(frame_to_mono(frame)) >= AUDIBLE:
                self.audible_frames += 1
                if self.first_audible_at is None:
                    self.first_audible_at = time.monotonic()
            self._changed.set()

    async def offer(
        self,
        emu: Client,
        path: str,
        token: str,
        content_type: str = "application/sdp",
        rewrite: Callable[[str], str] = lambda sdp: sdp,
    ) -> Answer:
        """POST the offer (as ``rewrite`` changes it) and apply the answer when it is 201."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
        response = await emu.post(path, data=rewrite(self.pc.localDescription.sdp), headers=headers)
        answer = Answer(response.status, CIMultiDict(response.headers), await response.text())
        if response.status == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.text, type="answer"))
        return answer

    async def until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def message(self, within: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first message (already received or arriving ``within`` seconds) whose fields match."""

        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages if all(m.get(k) == v for k, v in fields.items())), None)

        await self.until(lambda: find() is not None, within)
        found = find()
        assert found is not None
        return found

    async def speak(self, pcm: np.ndarray[Any, np.dtype[np.int16]]) -> None:
        await self.mic.play(pcm).finished

    async def close(self) -> None:
        self.mic.stop()
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    b = Browser()
    yield b
    await b.close()


async def connect(emu: Client, browser: Browser, agent_id: str = "agent_quick", **metadata: str) -> dict[str, Any]:
    web_call = await mint(emu, agent_id, **metadata)
    answer = await browser.offer(emu, whip_path(web_call), web_call["access_token"])
    assert answer.status == 201, answer.text
    return web_call


# -- signalling ---------------------------------------------------------------------------------------------------
async def test_offer_is_answered_with_sdp_location_and_etag(emu: Client, browser: Browser) -> None:
    web_call = await mint(emu)
    answer = await browser.offer(emu, whip_path(web_call), web_call["access_token"])

    assert answer.status == 201
    assert answer.headers["Content-Type"].startswith("application/sdp")
    assert answer.text.startswith("v=0") and "m=audio" in answer.text and "a=candidate" in answer.text
    assert answer.headers["Location"].startswith(whip_path(web_call) + "/")
    assert answer.headers["ETag"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "location" in answer.headers["Access-Control-Expose-Headers"]


async def test_answer_waits_for_the_browser_to_open_dtls_and_the_agent_is_heard(emu: Client, browser: Browser) -> None:
    web_call = await mint(emu)
    answer = await browser.offer(emu, whip_path(web_call), web_call["access_token"])

    # passive: the browser opens the handshake at its first working ICE check, and the emulator, finishing it first,
    # sends the agent's first audio with its last flight
    assert re.findall(r"^a=setup:(\S+)", answer.text, re.M) == ["passive", "passive"]
    await browser.until(browser.hears_agent, within=5)


async def test_answer_can_open_dtls_itself(aiohttp_client: Callable[..., Any], browser: Browser) -> None:
    app = web.Application()
    state = EmulatorState(api_keys={API_KEY}, agents=dict(AGENTS))
    setup_media(app, state, settings=MediaSettings(dtls_setup="active"))
    emu: Client = await aiohttp_client(app)
    agent = state.agents["agent_quick"]
    call = state.create_call(type="web", agent=agent, version=agent.versions[0], metadata={})
    assert call.access_token is not None

    answer = await browser.offer(emu, f"/v1/web-calls/{call.id}/whip", call.access_token)

    assert re.findall(r"^a=setup:(\S+)", answer.text, re.M) == ["active", "active"]
    await browser.until(browser.hears_agent, within=5)


def test_a_dtls_role_other_than_passive_or_active_is_refused() -> None:
    with pytest.raises(ValueError, match="passive, active"):
        MediaSettings(dtls_setup="actpass")
    with pytest.raises(ValueError, match="passive or active"):
        EmulatorConfig(media_dtls_setup="holdconn")


async def test_agent_speaks_the_rendered_welcome(emu: Client, browser: Browser, control: EmulatorControl) -> None:
    web_call = await connect(emu, browser, "agent_sales", name="Priya", company="Acme")

    line = await browser.message(type="transcript", role="agent")
    assert line["text"] == "Hello Priya! This is Nova from DialNexa sales. How can I help Acme today?"
    assert line["final"] is True
    await browser.until(browser.hears_agent, within=3)
    assert browser.messages[0] == {"type": "agent_state", "state": "speaking"}
    record = await control.call(web_call["id"])
    assert record["status"] == "initiated"


async def test_caller_turn_gets_a_user_transcript_and_a_reply(
    emu: Client, browser: Browser, caller_speech: np.ndarray[Any, np.dtype[np.int16]], control: EmulatorControl
) -> None:
    web_call = await connect(emu, browser, "agent_quick", name="Priya")
    await browser.message(type="agent_state", state="listening")

    await browser.speak(caller_speech)

    heard = await browser.message(type="transcript", role="user")
    assert heard["text"]
    reply = await browser.message(type="transcript", role="agent", text="Sure.")
    assert browser.messages.index(heard) < browser.messages.index(reply)
    observed = await control.media(web_call["id"])
    assert observed["caller_turns"] == 1
    assert observed["frames_received"] > 50


async def test_muted_caller_is_observed_as_silent(
    emu: Client, browser: Browser, caller_speech: np.ndarray[Any, np.dtype[np.int16]], control: EmulatorControl
) -> None:
    web_call = await connect(emu, browser, "agent_quick", name="Priya")
    await browser.message(type="agent_state", state="listening")

    playing = browser.mic.play(caller_speech)
    await asyncio.sleep(0.8)
    speaking = await control.media(web_call["id"])
    await playing.finished  # then the microphone sends silence, as a muted track does
    await asyncio.sleep(0.8)
    muted = await control.media(web_call["id"])

    assert speaking["caller_rms_recent"] > AUDIBLE
    assert speaking["caller_silent_for"] is not None and speaking["caller_silent_for"] < 0.3
    assert muted["caller_rms_recent"] < 0.001
    assert muted["caller_silent_for"] is not None and muted["caller_silent_for"] >= 0.6
    assert muted["frames_received"] > speaking["frames_received"]


async def test_several_calls_at_once_each_hear_their_agent(emu: Client) -> None:
    browsers = [Browser() for _ in range(3)]
    try:
        for i, b in enumerate(browsers):
            await connect(emu, b, "agent_quick", name=f"Caller{i}")
        for i, b in enumerate(browsers):
            line = await b.message(type="transcript", role="agent")
            assert line["text"] == f"Hi Caller{i}."
            await b.until(b.hears_agent, within=3)
    finally:
        for b in browsers:
            await b.close()


# -- offers whose candidates the emulator cannot use ---------------------------------------------------------------
def mdns_candidates_only(sdp: str) -> str:
    """The offer as a browser without microphone permission sends it: host candidates behind mDNS names."""

    def hide(match: re.Match[str]) -> str:
        return f"{match[1]}{uuid.uuid4()}.local{match[3]}"

    lines = [line for line in sdp.splitlines() if " typ host" in line or not line.startswith("a=candidate:")]
    hidden = [re.sub(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( .*)$", hide, line) for line in lines]
    assert any(".local " in line for line in hidden), "the stand-in offered no host candidate"
    return "\r\n".join(hidden) + "\r\n"


def no_candidates(sdp: str) -> str:
    """An offer that says it has no candidates at all (``a=end-of-candidates`` and nothing before it)."""
    lines = [line for line in sdp.splitlines() if not line.startswith("a=candidate:")]
    assert "a=end-of-candidates" in lines
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("rewrite", [mdns_candidates_only, no_candidates], ids=["mdns-only", "no-candidates"])
async def test_offer_without_usable_candidates_is_answered_with_candidates_and_connects(
    emu: Client,
    browser: Browser,
    rewrite: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
    control: EmulatorControl,
) -> None:
    """The emulator offers its own addresses and learns the browser's from the browser's connectivity checks."""
    web_call = await mint(emu, "agent_quick", name="Priya")
    answer = await browser.offer(emu, whip_path(web_call), web_call["access_token"], rewrite=rewrite)

    assert answer.status == 201, answer.text
    assert "a=candidate:" in answer.text
    await browser.until(lambda: browser.pc.connectionState == "connected", within=10)
    line = await browser.message(type="transcript", role="agent")
    assert line["text"] == "Hi Priya."
    await browser.until(browser.hears_agent, within=3)
    assert (await control.media(web_call["id"]))["connected"]
    assert not [r for r in caplog.records if "no ICE candidates" in r.getMessage()]


def test_usable_offer_keeps_real_candidates_and_their_end() -> None:
    offer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 UDP 2122252543 0b6f7c1e-3c1d-4a44-9a9e-2f4a1c0d9e11.local 50000 typ host\r\n"
        "a=candidate:2 1 UDP 2122187007 192.0.2.7 50001 typ host\r\n"
        "a=end-of-candidates\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        "a=candidate:3 1 UDP 2122252543 0b6f7c1e-3c1d-4a44-9a9e-2f4a1c0d9e11.local 50002 typ host\r\n"
        "a=end-of-candidates\r\n"
    )

    usable = usable_offer(offer)

    assert usable.mdns_candidates == 2
    assert usable.sdp == (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:2 1 UDP 2122187007 192.0.2.7 50001 typ host\r\n"
        "a=end-of-candidates\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    )


# -- ending -------------------------------------------------------------------------------------------------------
async def test_delete_ends_the_call_as_user_disconnected(
    emu: Client, browser: Browser, control: EmulatorControl
) -> None:
    web_call = await connect(emu, browser, "agent_quick", name="Priya")
    await browser.message(type="agent_state", state="listening")
    session_url = f"{whip_path(web_call)}/{(await control.media(web_call['id']))['session_id']}"

    response = await emu.delete(session_url, headers={"Authorization": f"Bearer {web_call['access_token']}"})

    assert response.status == 200
    record = await control.call(web_call["id"])
    assert record["status"] == "completed"
    assert record["end_reason"] == "user_disconnected"
    assert record["duration"] is not None and record["duration"] > 0
    assert record["transcript"] == "Agent: Hi Priya."
    assert record["summary"]
    assert (await control.media(web_call["id"]))["connected"] is False


async def test_delete_of_an_unknown_session_is_404(emu: Client) -> None:
    web_call = await mint(emu)
    response = await emu.delete(f"{whip_path(web_call)}/nope")
    assert response.status == 404
    assert (await response.json())["statusCode"] == 404


async def test_agent_hangs_up_after_its_closing_line(
    emu: Client, browser: Browser, caller_speech: np.ndarray[Any, np.dtype[np.int16]], control: EmulatorControl
) -> None:
    web_call = await connect(emu, browser, "agent_closing", name="Priya")
    await browser.message(type="agent_state", state="listening")

    await browser.speak(caller_speech)

    await browser.message(type="transcript", role="agent", text="Bye Priya.")
    ended = await browser.message(type="call_ended")
    assert ended == {"type": "call_ended", "reason": "agent_disconnected"}
    record = await control.call(web_call["id"])
    assert (record["status"], record["end_reason"]) == ("completed", "agent_disconnected")
    assert [line["role"] for line in record["transcript_object"]] == ["agent", "user", "agent"]


async def test_ending_through_the_rest_api_sends_call_ended(
    emu: Client, browser: Browser, control: EmulatorControl
) -> None:
    web_call = await connect(emu, browser, "agent_quick", name="Priya")
    await browser.message(type="agent_state", state="listening")

    response = await emu.post(f"/v1/calls/{web_call['id']}/end", json={"reason": "agent_disconnected"}, headers=AUTH)

    assert response.status == 200
    ended = await browser.message(type="call_ended")
    assert ended["reason"] == "agent_disconnected"

    async def media_closed() -> bool:
        return bool((await control.media(web_call["id"]))["closed"])

    await eventually(media_closed)


async def test_browser_closing_its_connection_ends_the_call(
    emu: Client, browser: Browser, control: EmulatorControl
) -> None:
    web_call = await connect(emu, browser, "agent_quick", name="Priya")
    await browser.message(type="agent_state", state="listening")

    await browser.pc.close()

    async def ended() -> bool:
        return bool((await control.call(web_call["id"]))["end_reason"] == "user_disconnected")

    await eventually(ended)


async def test_max_call_length_ends_with_max_duration_reached(
    emu: Client, browser: Browser, control: EmulatorControl
) -> None:
    web_call = await connect(emu, browser, "agent_brief", name="Priya")

    ended = await browser.message(type="call_ended", within=10)

    assert ended["reason"] == "max_duration_reached"
    assert any(m.get("text") == MAX_DURATION_LINE for m in browser.messages)
    record = await control.call(web_call["id"])
    assert (record["status"], record["end_reason"]) == ("completed", "max_duration_reached")


async def test_media_that_never_connects_ends_with_network_failure(
    aiohttp_client: Callable[..., Any], browser: Browser
) -> None:
    app = web.Application()
    state = EmulatorState(api_keys={API_KEY}, agents=dict(AGENTS))
    setup_media(app, state, settings=MediaSettings(connect_timeout=0.5))
    emu: Client = await aiohttp_client(app)
    agent = state.agents["agent_quick"]
    call = state.create_call(type="web", agent=agent, version=agent.versions[0], metadata={})
    assert call.access_token is not None

    await browser.pc.setLocalDescription(await browser.pc.createOffer())
    response = await emu.post(
        f"/v1/web-calls/{call.id}/whip",
        data=browser.pc.localDescription.sdp,
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {call.access_token}"},
    )
    assert response.status == 201  # the browser never applies the answer: no ICE, no DTLS

    async def ended() -> bool:
        return call.ended

    await eventually(ended, within=3)
    assert (call.status, call.end_reason) == ("cancelled", "network_failure")
    assert call.initiated_at is None


async def test_offers_beyond_the_session_limit_are_503_and_keep_the_token(
    aiohttp_client: Callable[..., Any], browser: Browser
) -> None:
    app = web.Application()
    state = EmulatorState(api_keys={API_KEY}, agents=dict(AGENTS))
    setup_media(app, state, settings=MediaSettings(max_sessions=1))
    emu: Client = await aiohttp_client(app)
    agent = state.agents["agent_quick"]
    first, second = (
        state.create_call(type="web", agent=agent, version=agent.versions[0], metadata={}) for _ in range(2)
    )
    assert first.access_token is not None and second.access_token is not None
    await browser.offer(emu, f"/v1/web-calls/{first.id}/whip", first.access_token)
    extra = Browser()
    try:
        refused = await extra.offer(emu, f"/v1/web-calls/{second.id}/whip", second.access_token)
    finally:
        await extra.close()

    assert refused.status == 503
    assert json.loads(refused.text)["error"] == "Service Unavailable"
    assert second.token_used is False


# -- refusals -----------------------------------------------------------------------------------------------------
async def test_reused_token_is_401_in_dialnexa_shape(emu: Client, browser: Browser) -> None:
    web_call = await connect(emu, browser)
    again = Browser()
    try:
        answer = await again.offer(emu, whip_path(web_call), web_call["access_token"])
    finally:
        await again.close()
    assert answer.status == 401
    assert json.loads(answer.text) == INVALID_TOKEN_BODY


async def test_expired_token_is_401(emu: Client, browser: Browser) -> None:
    web_call = await mint(emu)
    state = emulator_state(emu)
    state.clock = lambda: time.time() + state.token_ttl + 1

    answer = await browser.offer(emu, whip_path(web_call), web_call["access_token"])

    assert answer.status == 401
    assert json.loads(answer.text) == INVALID_TOKEN_BODY


async def test_token_of_another_call_is_401_and_not_consumed(emu: Client) -> None:
    first, second = await mint(emu), await mint(emu)
    wrong, right = Browser(), Browser()
    try:
        refused = await wrong.offer(emu, whip_path(second), first["access_token"])
        accepted = await right.offer(emu, whip_path(first), first["access_token"])
    finally:
        await wrong.close()
        await right.close()
    assert refused.status == 401
    assert accepted.status == 201


async def test_wrong_content_type_is_415(emu: Client) -> None:
    web_call = await mint(emu)
    response = await emu.post(
        whip_path(web_call),
        data="v=0\r\n",
        headers={"Content-Type": "text/plain", "Authorization": f"Bearer {web_call['access_token']}"},
    )
    assert response.status == 415
    body = await response.json()
    assert (body["statusCode"], body["error"]) == (415, "Unsupported Media Type")


async def test_offer_without_audio_is_400_and_keeps_the_token(emu: Client) -> None:
    web_call = await mint(emu)
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {web_call['access_token']}"}
    response = await emu.post(whip_path(web_call), data="v=0\r\ns=-\r\n", headers=headers)
    assert response.status == 400
    call = emulator_state(emu).calls[web_call["id"]]
    assert call.token_used is False


async def test_patch_says_ice_restart_is_not_supported(emu: Client, browser: Browser, control: EmulatorControl) -> None:
    web_call = await connect(emu, browser)
    session_id = (await control.media(web_call["id"]))["session_id"]

    response = await emu.patch(
        f"{whip_path(web_call)}/{session_id}",
        data="a=ice-ufrag:x\r\n",
        headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"},
    )

    assert response.status == 405
    body = await response.json()
    assert body["statusCode"] == 405 and "ICE restart" in body["message"]


async def test_cors_preflight(emu: Client) -> None:
    web_call = await mint(emu)
    response = await emu.options(
        whip_path(web_call),
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_control_route_is_404_for_a_call_without_media(emu: Client) -> None:
    web_call = await mint(emu)
    response = await emu.get(f"/_control/media/{web_call['id']}")
    assert response.status == 404


# -- liveness -----------------------------------------------------------------------------------------------------


def cut_network(browser: Browser) -> None:
    """The browser's network goes away: its ICE sockets close without a word (no DTLS close_notify, no DELETE)."""
    connections = ice_connections(browser.pc)
    assert connections, "the call has no ICE transport"
    for connection in connections:
        for protocol in connection._protocols:
            # Nothing leaves any more; closing the sockets outright would let aiortc say goodbye on the way.
            vars(protocol).update(send_stun=lambda *args: None, send_data=_send_nothing)
            protocol.transport.close()


async def _send_nothing(*args: Any) -> None:
    return None


@pytest.mark.parametrize("microphone", ["none", "recvonly"])
async def test_receive_only_call_is_not_ended_for_silence(
    emu: Client, microphone: str, control: EmulatorControl
) -> None:
    """A caller without a microphone sends no audio at all, yet its connection lives: the call goes on (the
    defaults would have ended a silent call after 4 s + 5 s)."""
    settings = MediaSettings()
    assert settings.media_timeout + settings.network_grace < 20
    browser = Browser(microphone)
    try:
        web_call = await connect(emu, browser, "agent_quick", name="Priya")
        await browser.message(type="agent_state", state="listening")
        assert browser.hears_agent()

        await asyncio.sleep(20)

        record = await control.call(web_call["id"])
        assert record["end_reason"] is None, record
        seen = await control.media(web_call["id"])
        assert seen["connected"] and seen["frames_received"] == 0, seen
        assert not any(m.get("type") == "call_ended" for m in browser.messages)
        frames = browser.audio_frames
        await browser.until(lambda: browser.audio_frames >= frames + 25, within=2)  # still hears the agent
    finally:
        await browser.close()


@pytest.mark.parametrize("microphone", ["track", "recvonly"])
async def test_call_whose_transport_closes_ends_with_network_failure(
    aiohttp_client: Callable[..., Any], microphone: str
) -> None:
    app = web.Application()
    state = EmulatorState(api_keys={API_KEY}, agents=dict(AGENTS))
    setup_media(app, state, settings=MediaSettings(media_timeout=1.0, network_grace=1.0))
    emu: Client = await aiohttp_client(app)
    agent = state.agents["agent_quick"]
    call = state.create_call(type="web", agent=agent, version=agent.versions[0], metadata={"name": "Priya"})
    assert call.access_token is not None
    browser = Browser(microphone)
    try:
        answer = await browser.offer(emu, f"/v1/web-calls/{call.id}/whip", call.access_token)
        assert answer.status == 201, answer.text
        await browser.message(type="agent_state", state="listening")

        cut_network(browser)

        async def ended() -> bool:
            return call.ended

        await eventually(ended, within=6)
        assert call.end_reason == "network_failure", (call.status, call.end_reason)
    finally:
        await browser.close()
