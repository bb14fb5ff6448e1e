"""Nothing billable before the SDP offer is known good: ``POST /sessions`` checks the browser's offer and trims its
candidates (:mod:`webcall.sdp`) before DialNexa is asked for a call, so garbage costs no call and an offer cannot
make the media server check hundreds of addresses of the visitor's choosing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from webcall.embedded import embedded_emulator
from webcall.emulator.media import MEDIA_HUB
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.sdp import MAX_CANDIDATES, MAX_OFFER_BYTES, CheckedOffer, InvalidOffer, sanitize_offer
from webcall.upstream import Upstream

from .conftest import MakeHost, mint, problem, runtime
from .offers import CHROMIUM_OFFER, FIREFOX_OFFER, OFFER, TRANSPORT

FINGERPRINT = (
    "a=fingerprint:sha-256 "
    "EA:13:48:1C:7E:D1:EC:E2:C0:AB:1C:C5:41:E9:86:E6:16:8B:58:B5:35:36:5E:E4:04:97:F2:E6:93:EC:57:27\r\n"
)
AUDIO_SECTION = OFFER[OFFER.index("m=audio") : OFFER.index("m=application")]
DATA_SECTION = OFFER[OFFER.index("m=application") :]


def candidate(
    address: str, port: int = 40000, *, component: int = 1, transport: str = "udp", tail: str = "typ host"
) -> str:
    """One ``a=candidate`` line, as a browser writes it."""
    return f"a=candidate:1 {component} {transport} 2122260223 {address} {port} {tail}\r\n"


def with_candidates(*lines: str, offer: str = OFFER) -> str:
    """``offer`` (the standard one unless told) with these candidate lines in its audio section."""
    start = offer.index("m=audio")
    end = offer.index("a=", start)
    return offer[:end] + "".join(lines) + offer[end:]


def candidates_of(sdp: str) -> list[str]:
    return [line + "\r\n" for line in sdp.splitlines() if line.startswith("a=candidate:")]


def checked(offer: str, *, local: bool = False) -> CheckedOffer:
    return sanitize_offer(offer, local_upstream=local)


# -- offers that pass ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "offer", [OFFER, CHROMIUM_OFFER, FIREFOX_OFFER], ids=["aiortc", "chromium", "firefox-mdns-session-fingerprint"]
)
def test_real_offers_reach_a_local_upstream_unchanged(offer: str) -> None:
    result = checked(offer, local=True)
    assert result.sdp == offer
    assert result.candidates == len(candidates_of(offer))
    assert not result.dropped


def test_mdns_candidates_are_kept_for_a_remote_upstream() -> None:
    """Firefox without the microphone hides its addresses behind ``<uuid>.local`` names: all 12 are passed on."""
    result = checked(FIREFOX_OFFER)
    assert result.sdp == FIREFOX_OFFER and result.candidates == 12


def test_a_remote_upstream_gets_none_of_a_real_offers_non_routable_addresses() -> None:
    """Chromium's host candidates here are 192.0.2.2 (documentation range) and fd00::2 (unique local): useless to a
    media server on the Internet, so only they leave the offer."""
    result = checked(CHROMIUM_OFFER)
    assert result.candidates == 0 and result.dropped == {"address": 8}
    assert result.sdp == "".join(
        line for line in CHROMIUM_OFFER.splitlines(keepends=True) if not line.startswith("a=candidate:")
    )


def test_the_offers_line_ending_is_kept() -> None:
    lf_offer = with_candidates(candidate("127.0.0.1"), candidate("127.0.0.1")).replace("\r\n", "\n")
    result = checked(lf_offer, local=True)
    assert "\r" not in result.sdp and result.dropped == {"duplicate": 1}
    assert result.sdp == lf_offer.replace(candidate("127.0.0.1").replace("\r\n", "\n"), "", 1)


def test_credentials_and_fingerprint_may_be_given_at_session_level() -> None:
    """Firefox puts its fingerprint at session level; a section inherits what it does not say itself."""
    session_level = OFFER.replace(TRANSPORT, "").replace("m=audio", TRANSPORT + "m=audio", 1)
    assert session_level.count("a=ice-ufrag") == 1
    assert checked(session_level).sdp == session_level


# -- offers that are refused ----------------------------------------------------------------------------------------
def _without(offer: str, text: str) -> str:
    assert text in offer
    return offer.replace(text, "")


REFUSED: list[tuple[str, str, str]] = [
    ("too large", OFFER + "a=x-padding:" + "x" * MAX_OFFER_BYTES + "\r\n", "larger than 16 KiB"),
    ("not an SDP line", OFFER.replace("s=-\r\n", "s=-\r\nhello world\r\n"), "Line 4 of the SDP offer is not an SDP"),
    ("version", OFFER.replace("v=0", "v=01", 1), "must start with v=0"),
    ("no s= line", _without(OFFER, "s=-\r\n"), "has no s= line"),
    ("no o= line", _without(OFFER, OFFER.splitlines(keepends=True)[1]), "has no o= line"),
    ("bare CR", OFFER.replace("a=mid:0\r\n", "a=mid:0\r" + candidate("10.0.0.1")), "control character"),
    ("vertical tab", OFFER.replace("a=mid:0\r\n", "a=mid:0\x0b" + candidate("10.0.0.1")), "control character"),
    ("line separator", OFFER.replace("a=mid:0\r\n", "a=mid:0\u2028" + candidate("10.0.0.1")), "control character"),
    ("NUL", OFFER.replace("s=-", "s=\x00"), "control character"),
    ("no audio", _without(OFFER, AUDIO_SECTION), "has no audio section (m=audio)"),
    ("two audio sections", OFFER.replace(DATA_SECTION, AUDIO_SECTION + DATA_SECTION), "has 2 audio sections"),
    ("video", OFFER + AUDIO_SECTION.replace("m=audio", "m=video"), "has a video section"),
    ("video, no audio", OFFER.replace("m=audio", "m=video"), "has a video section"),
    ("two data channels", OFFER + DATA_SECTION, "has 2 application sections"),
    (
        "application not SCTP",
        OFFER.replace("m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "m=application 9 UDP/BFCP *"),
        "application section is not a data channel",
    ),
    ("no ufrag", _without(OFFER, "a=ice-ufrag:FD59\r\n"), "audio section has no ICE credentials"),
    ("no pwd", _without(OFFER, "a=ice-pwd:8xCG10n5dvj3wHJIReDxRp\r\n"), "audio section has no ICE credentials"),
    (
        "data channel without credentials",
        OFFER.replace(DATA_SECTION, _without(DATA_SECTION, "a=ice-ufrag:FD59\r\n")),
        "application section has no ICE credentials",
    ),
    ("short ufrag", OFFER.replace("a=ice-ufrag:FD59", "a=ice-ufrag:FD5"), "a=ice-ufrag that is not 4 to 256"),
    ("ufrag charset", OFFER.replace("a=ice-ufrag:FD59", "a=ice-ufrag:FD5!"), "a=ice-ufrag that is not 4 to 256"),
    ("short pwd", OFFER.replace("ice-pwd:8xCG10n5dvj3wHJIReDxRp", "ice-pwd:8xCG10n5dvj3wHJIReDxR"), "a=ice-pwd"),
    ("pwd charset", OFFER.replace("ice-pwd:8xCG10n5dvj3wHJIReDxRp", "ice-pwd:8xCG10n5dvj3wHJIReDxR-"), "a=ice-pwd"),
    ("no fingerprint", _without(OFFER, FINGERPRINT), "has no DTLS fingerprint (a=fingerprint:sha-256"),
    ("sha-1 only", OFFER.replace("sha-256 EA:13:48:1C:", "sha-1 "), "has no DTLS fingerprint"),
    ("31 bytes", OFFER.replace("sha-256 EA:13:", "sha-256 13:"), "has no DTLS fingerprint"),
    ("not hex", OFFER.replace("sha-256 EA:13:", "sha-256 EA:1G:"), "a=fingerprint that is not a hash name"),
    ("no setup", _without(OFFER, "a=setup:actpass\r\n"), "has no DTLS role (a=setup:actpass)"),
    ("holdconn", OFFER.replace("a=setup:actpass", "a=setup:holdconn"), "a=setup that is not actpass"),
]


@pytest.mark.parametrize(("offer", "sentence"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_an_offer_no_widget_sends_is_refused_with_the_reason(offer: str, sentence: str) -> None:
    with pytest.raises(InvalidOffer, match=re.escape(sentence)):
        checked(offer, local=True)


# -- candidates ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("local", [True, False], ids=["local", "remote"])
def test_250_candidates_are_trimmed_to_the_cap_not_refused(local: bool) -> None:
    address = "127.0.0.1" if local else "93.184.216.34"
    flood = [candidate(address, 20000 + n) for n in range(250)]
    result = checked(with_candidates(*flood), local=local)
    assert MAX_CANDIDATES == 16
    assert candidates_of(result.sdp) == flood[:16]
    assert result.candidates == 16 and result.dropped == {"over_cap": 234}


def test_over_the_cap_the_candidates_a_media_server_uses_are_kept() -> None:
    """RTP's component before RTCP's, UDP before (active) TCP, then the browser's order; kept lines stay in place."""
    tcp = [candidate("10.0.0.1", 9 + n, transport="tcp", tail="typ host tcptype active") for n in range(10)]
    rtcp = [candidate("10.0.0.2", 30000 + n, component=2) for n in range(10)]
    rtp = [candidate("10.0.0.3", 40000 + n) for n in range(10)]
    result = checked(with_candidates(*tcp, *rtcp, *rtp), local=True)
    assert candidates_of(result.sdp) == tcp[:6] + rtp
    assert result.dropped == {"over_cap": 14}


UNUSABLE_EVERYWHERE = [
    candidate("0.0.0.0"),
    candidate("::"),
    candidate("::ffff:0.0.0.0"),
    candidate("224.0.0.251"),
    candidate("239.255.255.250"),
    candidate("ff02::1"),
    candidate("255.255.255.255"),
    candidate("240.0.0.1"),
    candidate("93.184.216.34", 0),
    candidate("127.0.0.1", 0),
    candidate("intranet.example.com"),
    candidate("localhost"),
]


@pytest.mark.parametrize("local", [True, False], ids=["local", "remote"])
@pytest.mark.parametrize("line", UNUSABLE_EVERYWHERE, ids=[":".join(line.split()[4:6]) for line in UNUSABLE_EVERYWHERE])
def test_unusable_addresses_are_dropped_for_every_upstream(line: str, local: bool) -> None:
    result = checked(with_candidates(line, candidate("10.0.0.1" if local else "93.184.216.34")), local=local)
    assert result.candidates == 1 and result.dropped == {"address": 1}
    assert line not in result.sdp


NON_ROUTABLE = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "::ffff:127.0.0.1",
    "169.254.10.20",
    "fe80::1",
    "10.1.2.3",
    "172.16.0.9",
    "192.168.1.20",
    "100.64.0.1",
    "192.0.2.2",
    "198.18.0.1",
    "fd00::2",
    "fec0::1",
    "2001:db8::1",
]


@pytest.mark.parametrize("address", NON_ROUTABLE)
def test_non_routable_addresses_reach_a_local_upstream_only(address: str) -> None:
    offer = with_candidates(candidate(address))
    assert candidates_of(checked(offer, local=True).sdp) == [candidate(address)]
    remote = checked(offer, local=False)
    assert remote.candidates == 0 and remote.dropped == {"address": 1}


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34", "7f3c1a2e.local"])
@pytest.mark.parametrize("local", [True, False], ids=["local", "remote"])
def test_routable_addresses_and_mdns_names_reach_every_upstream(address: str, local: bool) -> None:
    offer = with_candidates(candidate(address))
    assert candidates_of(checked(offer, local=local).sdp) == [candidate(address)]


def test_only_udp_and_active_tcp_candidates_are_kept() -> None:
    """Active TCP candidates (port 9) make the media server send nothing; passive ones would have it connect out."""
    kept = [candidate("10.0.0.1"), candidate("10.0.0.1", 9, transport="TCP", tail="typ host tcptype active")]
    dropped = [
        candidate("10.0.0.1", 9000, transport="tcp", tail="typ host tcptype passive"),
        candidate("10.0.0.1", 9001, transport="tcp", tail="typ host tcptype so"),
        candidate("10.0.0.1", 9002, transport="tcp"),
        candidate("10.0.0.1", 9003, transport="sctp"),
        candidate("10.0.0.1", 9004, transport="tls", tail="typ host tcptype active"),
    ]
    result = checked(with_candidates(*kept, *dropped), local=True)
    assert candidates_of(result.sdp) == kept and result.dropped == {"transport": 5}


MALFORMED = [
    "a=candidate:1 1 udp 2122260223 10.0.0.1 40000 host\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 40000 typ\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 40000 typ nat\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 40000 type host\r\n",
    "a=candidate:1 0 udp 2122260223 10.0.0.1 40000 typ host\r\n",
    "a=candidate:1 257 udp 2122260223 10.0.0.1 40000 typ host\r\n",
    "a=candidate:1 \u0661 udp 2122260223 10.0.0.1 40000 typ host\r\n",
    "a=candidate:1 1 udp 4294967296 10.0.0.1 40000 typ host\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 65536 typ host\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 4oooo typ host\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1:40000 40000 typ host\r\n",
    "a=candidate:" + "f" * 33 + " 1 udp 2122260223 10.0.0.1 40000 typ host\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 40000 typ host generation\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 40000 typ srflx raddr 10.0.0.999:1 rport 0\r\n",
    "a=candidate:1 1 udp 2122260223 10.0.0.1 40000 typ srflx raddr 0.0.0.0 rport 99999\r\n",
    "a=candidate:1  1 udp 2122260223 10.0.0.1 40000 typ host\r\n",
]


@pytest.mark.parametrize("line", MALFORMED)
def test_candidates_outside_the_rfc_8839_grammar_are_dropped(line: str) -> None:
    result = checked(with_candidates(line, candidate("10.0.0.2")), local=True)
    assert candidates_of(result.sdp) == [candidate("10.0.0.2")] and result.dropped == {"malformed": 1}


def test_server_reflexive_and_relay_candidates_with_related_addresses_are_kept() -> None:
    lines = [
        candidate("93.184.216.34", tail="typ srflx raddr 0.0.0.0 rport 0 generation 0 network-id 1"),
        candidate("93.184.216.35", tail="typ relay raddr 93.184.216.34 rport 40000 ufrag l6rJ"),
        candidate("93.184.216.36", tail="typ prflx raddr 1f2e3d4c.local rport 9"),
    ]
    assert candidates_of(checked(with_candidates(*lines)).sdp) == lines


def test_repeated_candidates_and_end_of_candidates_are_dropped_per_section() -> None:
    """The same transport address twice in a section is one target; each section has its own ICE transport (until
    bundled) and says ``end-of-candidates`` once."""
    line = candidate("10.0.0.1")
    same_later = candidate("10.0.0.1", tail="typ host generation 0")
    data_section = DATA_SECTION.replace("a=end-of-candidates\r\n", f"{line}a=end-of-candidates\r\n" * 2)
    offer = with_candidates(line, same_later, offer=OFFER.replace(DATA_SECTION, data_section))
    result = checked(offer, local=True)
    assert candidates_of(result.sdp) == [line, line]
    assert result.sdp.count("a=end-of-candidates") == 2, "one per section"
    assert result.dropped == {"duplicate": 3}


def test_candidates_at_session_level_are_dropped() -> None:
    offer = OFFER.replace("m=audio", candidate("10.0.0.1") + "m=audio", 1)
    result = checked(offer, local=True)
    assert result.sdp == OFFER and result.dropped == {"malformed": 1}


# -- which upstream is local ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("base_url", "local"),
    [
        ("https://api.dialnexa.com/v1", False),
        ("http://127.0.0.1:8787/v1", True),
        ("http://127.0.0.2:8787/v1", True),
        ("http://[::1]:8787/v1", True),
        ("http://localhost:8787/v1", True),
        ("http://LOCALHOST.:8787/v1", True),
        ("http://10.0.0.5:8787/v1", False),
        ("http://localhost.example.com/v1", False),
        ("http://127.0.0.1.nip.io/v1", False),
    ],
)
def test_an_upstream_is_local_when_its_base_url_is_loopback(base_url: str, local: bool) -> None:
    upstream = Upstream(name="dialnexa", api_key="key:secret", base_url=base_url, media_origin=base_url)
    assert upstream.is_local is local


async def test_the_embedded_emulator_is_a_local_upstream() -> None:
    async with embedded_emulator() as upstream:
        assert upstream.is_local


# -- over HTTP ------------------------------------------------------------------------------------------------------
def received_candidates(emulator: EmulatorServer, call_id: str) -> tuple[list[str], int]:
    """The candidate lines of the offer the emulator's media server answered, and how many remote candidates its ICE
    agents know (the addresses it would send checks to)."""
    pc = emulator.app[MEDIA_HUB].by_call[call_id].pc
    transports = {id(t.receiver.transport.transport): t.receiver.transport.transport for t in pc.getTransceivers()}
    targets = sum(len(transport.getRemoteCandidates()) for transport in transports.values())
    return candidates_of(pc.remoteDescription.sdp), targets


REFUSED_OVER_HTTP = {case[0]: case[1] for case in REFUSED if case[0] != "too large"}


@pytest.mark.parametrize(
    "case", ["video", "no audio", "no fingerprint", "vertical tab", "data channel without credentials"]
)
async def test_a_refused_offer_costs_no_web_call(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl, case: str
) -> None:
    client, handle = await make_host()
    body = await problem(await mint(client, {"agent": "sales", "offer": REFUSED_OVER_HTTP[case]}), 400, "invalid_offer")
    with pytest.raises(InvalidOffer) as refusal:
        checked(REFUSED_OVER_HTTP[case], local=True)
    assert body["message"] == str(refusal.value)
    assert await control.request_count("POST /v1/web-calls") == 0
    assert await control.request_count("POST /v1/web-calls/{call_id}/whip") == 0
    assert emulator.state.calls == {}
    assert await runtime(handle).store.active_slots() == 0


async def test_an_offer_with_250_candidates_reaches_dialnexa_with_16(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    flood = [candidate("127.0.0.1", 20000 + n).replace("2122260223", "1") for n in range(250)]
    response = await mint(client, {"agent": "sales", "offer": with_candidates(*flood)})
    assert response.status == 201, await response.text()
    call: dict[str, Any] = await response.json()
    received, targets = received_candidates(emulator, call["call_id"])
    assert received == flood[:16]
    assert targets == 16
    assert await control.request_count("POST /v1/web-calls") == 1


@pytest.mark.parametrize("local", [True, False], ids=["local", "remote"])
async def test_loopback_candidates_reach_a_local_upstream_only(
    make_host: MakeHost, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, local: bool
) -> None:
    """Over HTTP the emulator is on loopback, so local; as a remote upstream it gets only the routable candidate
    (active TCP, to which nothing is sent)."""
    if not local:
        monkeypatch.setattr(Upstream, "is_local", False)
    client, handle = await make_host()
    assert runtime(handle).upstream.is_local is local
    loopback = candidate("127.0.0.1", 40000)
    public = candidate("93.184.216.34", 9, transport="tcp", tail="typ host tcptype active")
    response = await mint(client, {"agent": "sales", "offer": with_candidates(loopback, public)})
    assert response.status == 201, await response.text()
    received, _ = received_candidates(emulator, (await response.json())["call_id"])
    assert received == ([loopback, public] if local else [public])
