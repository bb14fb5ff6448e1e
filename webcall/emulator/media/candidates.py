"""ICE candidates of a browser's offer that the emulator can use, and the addresses it can offer in return.

A media server answers every offer with candidates of its own and learns the browser's address from the browser's
connectivity checks (peer-reflexive candidates, RFC 8445 section 7.3.1.3), so the browser's own candidates are a
help, never a requirement. Two kinds of standard offer would otherwise leave the emulator with nothing:

- Browsers without microphone permission hide their addresses behind mDNS names (``<uuid>.local``). aioice tries to
  resolve them over multicast DNS, which fails on most hosts and costs a second per name.
- An offer with no usable candidate that still says ``a=end-of-candidates`` makes aioice drop the ICE component for
  want of remote candidates *before* gathering, so the answer would carry no local candidate at all and nothing
  could connect.

:func:`usable_offer` removes mDNS candidates, and the ``end-of-candidates`` of any media section left without a
candidate, so aioice gathers its own candidates and waits for the browser's checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioice.ice import get_host_addresses
from aioice.mdns import is_mdns_hostname

__all__ = [
    "TrickledFragment",
    "UsableOffer",
    "host_addresses",
    "offer_ice_credentials",
    "parse_fragment",
    "usable_offer",
]

_CANDIDATE = "a=candidate:"
_END_OF_CANDIDATES = "a=end-of-candidates"


@dataclass(frozen=True)
class UsableOffer:
    sdp: str
    """The offer with what the emulator cannot use removed."""
    mdns_candidates: int
    """How many mDNS (``.local``) candidates were removed."""


def _is_mdns_candidate(line: str) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    fields = line[len(_CANDIDATE) :].split()
    return len(fields) > 4 and is_mdns_hostname(fields[4])


def usable_offer(sdp: str) -> UsableOffer:
    """The offer ``sdp`` without mDNS candidates, and without ``a=end-of-candidates`` where no candidate is left."""
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    kept: list[str] = []
    removed = 0
    for section in sections:
        lines = [line for line in section if not (line.startswith(_CANDIDATE) and _is_mdns_candidate(line))]
        removed += len(section) - len(lines)
        if not any(line.startswith(_CANDIDATE) for line in lines):
            lines = [line for line in lines if line != _END_OF_CANDIDATES]
        kept.extend(lines)
    return UsableOffer(sdp="\r\n".join(kept) + "\r\n", mdns_candidates=removed)


def host_addresses() -> list[str]:
    """The addresses aioice gathers host candidates on (every interface's, loopback excluded)."""
    return get_host_addresses(use_ipv4=True, use_ipv6=True)


@dataclass(frozen=True)
class TrickledFragment:
    """What a trickle-ICE fragment (RFC 8840, ``application/trickle-ice-sdpfrag``) says about the browser's side."""

    username_fragment: str
    password: str
    candidates: list[str]
    """``candidate:...`` values (without ``a=``), mDNS ones left out."""
    end_of_candidates: bool


def parse_fragment(text: str) -> TrickledFragment:
    """The ICE credentials, candidates and ``end-of-candidates`` of a fragment; ``ValueError`` without credentials."""
    username_fragment = password = ""
    candidates: list[str] = []
    end = False
    for line in text.splitlines():
        if line.startswith("a=ice-ufrag:"):
            username_fragment = line.removeprefix("a=ice-ufrag:").strip()
        elif line.startswith("a=ice-pwd:"):
            password = line.removeprefix("a=ice-pwd:").strip()
        elif line.startswith(_CANDIDATE) and not _is_mdns_candidate(line):
            candidates.append(line.removeprefix("a="))
        elif line.strip() == _END_OF_CANDIDATES:
            end = True
    if not username_fragment or not password:
        raise ValueError("a fragment names the ICE session with a=ice-ufrag and a=ice-pwd")
    return TrickledFragment(username_fragment, password, candidates, end)


def offer_ice_credentials(sdp: str) -> tuple[str, str] | None:
    """The offer's ICE username fragment and password (the first of each: a bundled offer has one pair)."""
    username_fragment = password = ""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:") and not username_fragment:
            username_fragment = line.removeprefix("a=ice-ufrag:").strip()
        elif line.startswith("a=ice-pwd:") and not password:
            password = line.removeprefix("a=ice-pwd:").strip()
    return (username_fragment, password) if username_fragment and password else None
