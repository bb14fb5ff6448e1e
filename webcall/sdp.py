"""The browser's SDP offer, checked and trimmed before anything billable happens.

``POST /sessions`` carries the offer of the widget's peer connection. Creating the call at DialNexa is billed, and
DialNexa's media server then sends ICE connectivity checks to every address the offer lists, so
:func:`sanitize_offer` runs first. It reads the offer as RFC 8866 lines (CRLF or LF) and refuses, with
:class:`InvalidOffer` and a sentence the view sends back as ``400 invalid_offer``:

- an offer over :data:`MAX_OFFER_BYTES`, a line that is not ``<letter>=<value>``, a first line other than ``v=0``, a
  missing ``o=``, ``s=`` or ``t=`` line, or a character some SDP parser takes for the end of a line (NUL, CR, the
  other C0 and C1 controls but tab, U+2028, U+2029): what is checked here must be what DialNexa reads, and aiortc,
  for one, splits lines with :meth:`str.splitlines`, so a candidate hidden behind ``\\x0b`` would reach it unseen;
- anything but exactly one audio section (``m=audio``) and at most one data channel section (``m=application`` over
  SCTP; the widget opens the ``events`` channel before its offer). Any other section (video, a second audio) is
  refused, not dropped: an answer has one section per offered section, in the same order (RFC 3264 §6), so an offer
  with a section taken out gets an answer the browser rejects, which is a call billed for nothing; and the widget
  never offers video, so such an offer did not come from it;
- a section without ICE credentials (``a=ice-ufrag``: 4 to 256, ``a=ice-pwd``: 22 to 256 letters, digits, ``+`` or
  ``/``; RFC 8839 §5.4), without a SHA-256 DTLS fingerprint (``a=fingerprint:sha-256`` and 32 hex bytes; RFC 8122),
  or without ``a=setup:actpass|active|passive`` (RFC 4145). Each may be given in the section or at session level,
  which the section inherits (Firefox puts its fingerprint there). A malformed value of any of them is refused too.

Candidates are never a reason to refuse: a media server learns the browser's address from the browser's own
connectivity checks (peer-reflexive candidates, RFC 8445 §7.3.1.3), so a dropped candidate costs at most a quicker
path. Dropped, and counted by reason in :attr:`CheckedOffer.dropped`:

- ``malformed``: not the RFC 8839 §5.1 grammar, a candidate type other than host, srflx, prflx or relay, or a
  candidate at session level (candidates belong to a section);
- ``transport``: anything but UDP and active TCP. Browsers offer TCP candidates only as ``tcptype active`` (port 9):
  the browser opens the connection, so the media server sends nothing to them, and they help behind a firewall
  that blocks UDP. A passive TCP candidate would have the media server open connections to an address of the
  visitor's choosing; no browser offers one;
- ``address``: port 0; an unspecified, multicast, broadcast or reserved (240.0.0.0/4) address; a host name other
  than an mDNS name (``<uuid>.local``, how browsers hide their addresses; kept), which would have the media server
  resolve names of the visitor's choosing; and, unless the media server runs on this machine, any address that is
  not globally routable: loopback, link-local, private, shared (100.64.0.0/10), documentation and the other
  special-purpose ranges (:attr:`ipaddress.IPv4Address.is_global`). A media server on the Internet cannot reach
  them, and checks sent to them would land in its own network;
- ``duplicate``: the same component, transport, address and port as a candidate already kept in the section;
- ``over_cap``: beyond :data:`MAX_CANDIDATES` for the whole offer.

A second ``a=end-of-candidates`` at the same level is dropped as well. Every line kept is passed on as received, with
the offer's own line ending.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

from .errors import WebCallError

__all__ = ["MAX_CANDIDATES", "MAX_OFFER_BYTES", "CheckedOffer", "InvalidOffer", "sanitize_offer"]

MAX_OFFER_BYTES = 16 * 1024
"""The largest offer read. A browser's offer for one audio section and the data channel is 2 to 3 KiB (Chromium and
Firefox, with candidates); 16 KiB is also the default limit of the whole request body (``max_body_bytes``)."""

MAX_CANDIDATES = 16
"""How many candidates of one offer are passed on. A browser gathers one host candidate per address, transport and
component, one server-reflexive per STUN server and one relay per TURN server: for a machine with an IPv4 and an IPv6
address, Chromium offers 4 per section (UDP and active TCP) and Firefox 8 in the audio section (it also offers RTCP's
component until rtcp-mux is answered) and 4 in the data channel's, 12 in all; a typical visitor's machine gathers at
most about 6 per component. 16 passes every candidate of such offers, and the useful ones of a machine with more
interfaces (see :func:`_usefulness`), while an offer can make the media server check no more than 16 addresses,
instead of the hundreds it could list (each check is retransmitted up to 7 times)."""

_LINE = re.compile(r"([a-z])=(.*)")
_LINE_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_REQUIRED_SESSION_LINES = ("o", "s", "t")
_ICE_CHARS = r"[A-Za-z0-9+/]"
_ICE_UFRAG = re.compile(_ICE_CHARS + "{4,256}")
_ICE_PWD = re.compile(_ICE_CHARS + "{22,256}")
_FINGERPRINT = re.compile(r"([A-Za-z0-9-]{1,32}) ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*)")
_SHA256_BYTES = 32
_SETUP_ROLES = frozenset({"actpass", "active", "passive"})

# RFC 8839 §5.1: a=candidate:<foundation> <component-id> <transport> <priority> <connection-address> <port>
#                typ <cand-type> [raddr <connection-address>] [rport <port>] *(<extension-att-name> <value>)
_FOUNDATION = re.compile(_ICE_CHARS + "{1,32}")
_PRIORITY = re.compile(r"[0-9]{1,10}")
_COMPONENT = re.compile(r"[0-9]{1,3}")
_PORT = re.compile(r"[0-9]{1,5}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")
_MDNS_NAME = re.compile(r"[A-Za-z0-9-]{1,63}\.local\.?", re.IGNORECASE)
_HOST_NAME = re.compile(r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.?")
_CANDIDATE = "a=candidate:"
_END_OF_CANDIDATES = "a=end-of-candidates"
_CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})
_RESERVED_IPV4 = ipaddress.IPv4Network("240.0.0.0/4")  # 255.255.255.255, the broadcast address, included


class InvalidOffer(WebCallError):
    """The SDP offer cannot start a call; the message is a sentence for the visitor."""


@dataclass(frozen=True)
class CheckedOffer:
    """An offer that passed :func:`sanitize_offer`: the text to hand to DialNexa, and what was left out of it."""

    sdp: str
    candidates: int
    """How many candidates :attr:`sdp` keeps."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Candidates (and repeated ``end-of-candidates``) left out, by reason (see the module's documentation)."""


@dataclass(frozen=True)
class _Candidate:
    component: int
    transport: str
    address: str
    port: int
    tcp_type: str | None


@dataclass
class _Section:
    """The session part (``kind`` ``""``) or one media section, as lines with their attributes."""

    kind: str
    lines: list[str]
    attributes: dict[str, list[str]] = field(default_factory=dict)

    def attribute(self, name: str) -> list[str]:
        return self.attributes.get(name, [])


def sanitize_offer(text: str, *, local_upstream: bool) -> CheckedOffer:
    """Check the browser's SDP offer ``text`` and trim its candidates; raises :class:`InvalidOffer` with the reason.

    ``local_upstream`` says the media server runs on this machine (the emulator), which can reach the browser's
    loopback, link-local and private addresses; otherwise only globally routable ones are passed on."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_OFFER_BYTES:
        raise InvalidOffer(f"The SDP offer is larger than {MAX_OFFER_BYTES // 1024} KiB.")
    ending = "\r\n" if "\r\n" in text else "\n"
    session, media = _sections(text)
    _check_sections(media)
    for section in media:
        _check_transport(section, session)
    kept_lines, dropped = _trimmed(session, media, local_upstream=local_upstream)
    candidates = sum(1 for line in kept_lines if line.startswith(_CANDIDATE))
    return CheckedOffer(sdp=ending.join(kept_lines) + ending, candidates=candidates, dropped=dropped)


@dataclass(frozen=True)
class CheckedFragment:
    """An ICE fragment (RFC 8840) that passed :func:`sanitize_fragment`: the text to relay, and what was left out."""

    sdp: str
    candidates: int
    dropped: Counter[str] = field(default_factory=Counter)


_FRAGMENT_LINES = frozenset({"a", "m"})
"""What an ``application/trickle-ice-sdpfrag`` body holds (RFC 8840 §9): media lines naming the section, and
attributes (ICE credentials and options, ``mid``, candidates, ``end-of-candidates``)."""


def sanitize_fragment(text: str, *, local_upstream: bool) -> CheckedFragment:
    """Check a trickle or ICE-restart fragment from the browser and trim its candidates by the rules of an offer's
    (at most :data:`MAX_CANDIDATES` per fragment): the media server sends checks to each, so a fragment must not make
    it send them where an offer could not. Raises :class:`InvalidOffer` with the reason."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_OFFER_BYTES:
        raise InvalidOffer(f"The ICE fragment is larger than {MAX_OFFER_BYTES // 1024} KiB.")
    ending = "\r\n" if "\r\n" in text else "\n"
    kept: list[str] = []
    dropped: Counter[str] = Counter()
    passed = 0
    seen: set[_Candidate] = set()
    for line in text.split(ending):
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None or _LINE_BREAKING.search(line) or match.group(1) not in _FRAGMENT_LINES:
            raise InvalidOffer("The ICE fragment holds a line that is not a media line or an attribute.")
        if line.startswith(_CANDIDATE):
            candidate = _parse_candidate(line[len(_CANDIDATE) :])
            reason = "malformed" if candidate is None else _unusable(candidate, local_upstream=local_upstream)
            if candidate is not None and reason is None:
                reason = "duplicate" if candidate in seen else "over_cap" if passed >= MAX_CANDIDATES else None
            if reason is not None:
                dropped[reason] += 1
                continue
            assert candidate is not None
            seen.add(candidate)
            passed += 1
        kept.append(line)
    return CheckedFragment(sdp=ending.join(kept) + ending if kept else "", candidates=passed, dropped=dropped)


# -- lines and sections ------------------------------------------------------------------------------------------
def _sections(text: str) -> tuple[_Section, list[_Section]]:
    """The offer's session part and media sections; refuses what is not SDP."""
    session = _Section(kind="", lines=[])
    media: list[_Section] = []
    current = session
    number = 0
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if not line:
            continue  # the end of the last line, or a blank line no parser gives a meaning
        number += 1
        if _LINE_BREAKING.search(line):
            raise InvalidOffer(f"Line {number} of the SDP offer has a control character; lines end with CRLF or LF.")
        match = _LINE.fullmatch(line)
        if match is None:
            raise InvalidOffer(f"Line {number} of the SDP offer is not an SDP line (<letter>=<value>).")
        kind, value = match.groups()
        if number == 1 and line != "v=0":
            raise InvalidOffer("The SDP offer must start with v=0.")
        if kind == "m":
            current = _Section(kind=value.split(" ", 1)[0], lines=[])
            media.append(current)
        elif kind == "a":
            name, _, attribute_value = value.partition(":")
            current.attributes.setdefault(name, []).append(attribute_value.strip())
        elif not media:
            session.attributes.setdefault(f"{kind}=", []).append(value)
        current.lines.append(line)
    missing = [f"{kind}=" for kind in _REQUIRED_SESSION_LINES if not session.attribute(f"{kind}=")]
    if missing:
        raise InvalidOffer(f"The SDP offer has no {' '.join(missing)} line (RFC 8866).")
    return session, media


def _check_sections(media: list[_Section]) -> None:
    """Exactly one audio section and at most one data channel section; nothing else."""
    kinds = Counter(section.kind for section in media)
    for section in media:
        if section.kind not in ("audio", "application"):
            raise InvalidOffer(
                f"The SDP offer has a {section.kind or 'nameless'} section; a call carries one audio section and "
                "the events data channel, nothing else."
            )
    if kinds["audio"] != 1:
        raise InvalidOffer(
            "The SDP offer has no audio section (m=audio)."
            if not kinds["audio"]
            else f"The SDP offer has {kinds['audio']} audio sections; a call carries one."
        )
    if kinds["application"] > 1:
        raise InvalidOffer(f"The SDP offer has {kinds['application']} application sections; a call opens one.")
    for section in media:
        fields = section.lines[0].split(" ")
        if section.kind == "application" and (len(fields) < 3 or "SCTP" not in fields[2].upper()):
            raise InvalidOffer("The SDP offer's application section is not a data channel (UDP/DTLS/SCTP).")


def _inherited(section: _Section, session: _Section, name: str) -> list[str]:
    """An attribute's values in ``section``, or the session's when the section gives none."""
    return section.attribute(name) or session.attribute(name)


def _check_transport(section: _Section, session: _Section) -> None:
    """The section's ICE credentials, DTLS fingerprint and setup role, given in it or inherited from the session."""
    where = f"The SDP offer's {section.kind} section"
    ufrags, passwords = _inherited(section, session, "ice-ufrag"), _inherited(section, session, "ice-pwd")
    if not ufrags or not passwords:
        raise InvalidOffer(f"{where} has no ICE credentials (a=ice-ufrag and a=ice-pwd).")
    if not all(_ICE_UFRAG.fullmatch(ufrag) for ufrag in ufrags):
        raise InvalidOffer(f"{where} has an a=ice-ufrag that is not 4 to 256 letters, digits, '+' or '/' (RFC 8839).")
    if not all(_ICE_PWD.fullmatch(password) for password in passwords):
        raise InvalidOffer(f"{where} has an a=ice-pwd that is not 22 to 256 letters, digits, '+' or '/' (RFC 8839).")
    fingerprints = [_FINGERPRINT.fullmatch(value) for value in _inherited(section, session, "fingerprint")]
    if not all(fingerprints):
        raise InvalidOffer(f"{where} has an a=fingerprint that is not a hash name and colon-separated hex bytes.")
    if not any(
        match.group(1).lower() == "sha-256" and len(match.group(2).split(":")) == _SHA256_BYTES
        for match in fingerprints
        if match is not None
    ):
        raise InvalidOffer(f"{where} has no DTLS fingerprint (a=fingerprint:sha-256 and 32 hex bytes).")
    roles = _inherited(section, session, "setup")
    if not roles:
        raise InvalidOffer(f"{where} has no DTLS role (a=setup:actpass).")
    if not all(role.lower() in _SETUP_ROLES for role in roles):
        raise InvalidOffer(f"{where} has an a=setup that is not actpass, active or passive.")


# -- candidates ---------------------------------------------------------------------------------------------------
def _trimmed(session: _Section, media: list[_Section], *, local_upstream: bool) -> tuple[list[str], Counter[str]]:
    """Every line of the offer but the candidates (and repeated ``end-of-candidates``) it does not pass on."""
    dropped: Counter[str] = Counter()
    usable: list[tuple[tuple[bool, bool, int], tuple[int, int]]] = []  # (usefulness, (section, line) position)
    seen: set[tuple[int, _Candidate]] = set()  # per section: each has an ICE transport of its own until bundled
    for section_index, section in enumerate(media, start=1):
        for line_index, line in enumerate(section.lines):
            if not line.startswith(_CANDIDATE):
                continue
            candidate = _parse_candidate(line[len(_CANDIDATE) :])
            if candidate is None:
                dropped["malformed"] += 1
                continue
            reason = _unusable(candidate, local_upstream=local_upstream)
            if reason is None and (section_index, candidate) in seen:
                reason = "duplicate"
            if reason is not None:
                dropped[reason] += 1
                continue
            seen.add((section_index, candidate))
            usable.append((_usefulness(candidate, len(usable)), (section_index, line_index)))
    usable.sort()
    passed = {position for _, position in usable[:MAX_CANDIDATES]}
    if len(usable) > MAX_CANDIDATES:
        dropped["over_cap"] += len(usable) - MAX_CANDIDATES
    kept: list[str] = []
    for section_index, section in enumerate((session, *media)):
        ends = 0
        for line_index, line in enumerate(section.lines):
            if line.startswith(_CANDIDATE):
                if section is session:
                    dropped["malformed"] += 1  # candidates belong to a media section
                if (section_index, line_index) not in passed:
                    continue
            if line == _END_OF_CANDIDATES:
                ends += 1
                if ends > 1:
                    dropped["duplicate"] += 1
                    continue
            kept.append(line)
    return kept, dropped


def _usefulness(candidate: _Candidate, order: int) -> tuple[bool, bool, int]:
    """The sort key that keeps, when an offer has more candidates than the cap, the ones a media server uses:
    component 1 (RTP) before 2 (RTCP, unused with rtcp-mux, which browsers always offer and WebRTC requires), UDP
    before TCP, then the browser's own order (its preference)."""
    return candidate.component != 1, candidate.transport != "udp", order


def _parse_candidate(value: str) -> _Candidate | None:
    """An ``a=candidate`` value read by the RFC 8839 §5.1 grammar; None when it does not follow it."""
    fields = value.split(" ")
    if len(fields) < 8 or len(fields) % 2:
        return None
    foundation, component, transport, priority, address, port, typ, kind, *extensions = fields
    if not (
        _FOUNDATION.fullmatch(foundation)
        and _COMPONENT.fullmatch(component)
        and 1 <= int(component) <= 256
        and _TOKEN.fullmatch(transport)
        and _PRIORITY.fullmatch(priority)
        and int(priority) < 2**32
        and _port(port) is not None
        and typ == "typ"
        and kind in _CANDIDATE_TYPES
        and (_HOST_NAME.fullmatch(address) or _ip(address) is not None)
    ):
        return None
    attributes = dict(zip(extensions[::2], extensions[1::2], strict=True))
    if not all(_TOKEN.fullmatch(name) for name in attributes):
        return None
    if "raddr" in attributes and not (_HOST_NAME.fullmatch(attributes["raddr"]) or _ip(attributes["raddr"])):
        return None
    if "rport" in attributes and _port(attributes["rport"]) is None:
        return None
    return _Candidate(
        component=int(component),
        transport=transport.lower(),
        address=address.lower(),
        port=int(port),
        tcp_type=attributes.get("tcptype"),
    )


def _unusable(candidate: _Candidate, *, local_upstream: bool) -> str | None:
    """Why a well-formed candidate is not passed on (see the module's documentation), or None."""
    if not (candidate.transport == "udp" or (candidate.transport == "tcp" and candidate.tcp_type == "active")):
        return "transport"
    if candidate.port == 0:
        return "address"
    address = _ip(candidate.address)
    if address is None:
        return None if _MDNS_NAME.fullmatch(candidate.address) else "address"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        return "address"
    if isinstance(address, ipaddress.IPv4Address) and address in _RESERVED_IPV4:
        return "address"
    if local_upstream:
        return None
    if not address.is_global or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "address"
    return None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _port(text: str) -> int | None:
    return int(text) if _PORT.fullmatch(text) and int(text) <= 65535 else None
