"""How a call sounded, as the visitor's browser measured it: one bounded summary per call.

During a call the widget samples ``getStats()``: round-trip time, jitter, packets lost each way and the selected
candidate pair (host, srflx, prflx or relay, over udp, tcp or tls). At the end it sends one summary to
``POST {prefix}/sessions/{call_id}/quality`` with the call's token. The summary is strangers' input, so it is checked
here field by field: known keys only, numbers in range, names from a fixed list, no free text. It is kept with the
call's media record (the first one wins) and attached to the call's ``call.ended`` event as ``event.quality``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")
PROTOCOLS = ("udp", "tcp", "tls")
MAX_SUMMARY_BYTES = 1024


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    integer: bool = False


NUMBERS: dict[str, Bound] = {
    "connect_ms": Bound(0, 120_000, integer=True),
    "duration_s": Bound(0, 86_400, integer=True),
    "samples": Bound(0, 50_000, integer=True),
    "rtt_ms": Bound(0, 60_000, integer=True),
    "rtt_max_ms": Bound(0, 60_000, integer=True),
    "jitter_ms": Bound(0, 60_000, integer=True),
    "loss_in": Bound(0, 1),
    "loss_out": Bound(0, 1),
    "weak_s": Bound(0, 86_400, integer=True),
}
"""Each number a summary may hold, with its range: milliseconds and seconds as integers, losses as fractions."""
NAMES: dict[str, tuple[str, ...]] = {"candidate": CANDIDATE_TYPES, "protocol": PROTOCOLS}


class InvalidSummary(ValueError):
    """A quality summary that is not what the widget sends; the message says which field."""


def check_summary(body: object) -> dict[str, Any]:
    """The summary, checked: every key known, every number finite and in range, every name from its list."""
    if not isinstance(body, dict):
        raise InvalidSummary("Send the quality summary as a JSON object.")
    unknown = set(body) - NUMBERS.keys() - NAMES.keys()
    if unknown:
        raise InvalidSummary(f"Unknown field(s) in the quality summary: {', '.join(sorted(map(str, unknown))[:5])}.")
    summary: dict[str, Any] = {}
    for key, value in body.items():
        if key in NAMES:
            if value not in NAMES[key]:
                raise InvalidSummary(f"{key} must be one of {', '.join(NAMES[key])}.")
            summary[key] = value
            continue
        bound = NUMBERS[key]
        if value is None:
            continue  # not measured (no audio sent: no outbound loss)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidSummary(f"{key} must be a number.")
        if bound.integer and value != int(value):
            raise InvalidSummary(f"{key} must be a whole number.")
        if not bound.low <= value <= bound.high:
            raise InvalidSummary(f"{key} must be between {bound.low:g} and {bound.high:g}.")
        summary[key] = int(value) if bound.integer else round(float(value), 4)
    return summary
