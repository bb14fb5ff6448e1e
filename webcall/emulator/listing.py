"""``GET /v1/calls``: DialNexa's documented filters, sort orders and pagination over the emulator's calls.

Every documented query parameter is understood; anything else is a 400 ``"Invalid query parameters"``. Filters on
data the emulator never records (latency, sentiment other than ``unknown``, batch calls) match no call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from webcall.emulator.errors import ApiError
from webcall.emulator.state import Call, EmulatorState

CALLS_MAX_LIMIT = 200
CALLS_DEFAULT_LIMIT = 20

Filter = Callable[[Call, EmulatorState], bool]


def invalid() -> ApiError:
    return ApiError(400, "Invalid query parameters")


@dataclass(frozen=True)
class CallQuery:
    page: int = 1
    limit: int = CALLS_DEFAULT_LIMIT
    export: bool = False
    columns: frozenset[str] | None = None
    sort_by: str = "created_at"
    descending: bool = True
    filters: tuple[Filter, ...] = field(default=())

    def select(self, state: EmulatorState) -> list[dict[str, Any]]:
        indexed = [(i, c) for i, c in enumerate(state.calls.values()) if all(f(c, state) for f in self.filters)]
        if self.sort_by == "duration":
            # Calls without a duration sort last either way.
            with_duration = [(i, c) for i, c in indexed if c.duration is not None]
            without = [(i, c) for i, c in indexed if c.duration is None]
            with_duration.sort(key=lambda ic: (ic[1].duration or 0.0, ic[0]), reverse=self.descending)
            ordered = with_duration + without
        else:
            ordered = sorted(indexed, key=lambda ic: (ic[1].created_at, ic[0]), reverse=self.descending)
        calls = [c for _, c in ordered]
        if not self.export:
            calls = calls[(self.page - 1) * self.limit : self.page * self.limit]
        items = [state.call_json(c) for c in calls]
        if self.columns is not None:
            keep = self.columns | {"id"}
            items = [{k: v for k, v in item.items() if k in keep} for item in items]
        return items


def _values(raw: str, choices: frozenset[str] | None = None) -> frozenset[str]:
    values = frozenset(v.strip() for v in raw.split(","))
    if "" in values or (choices is not None and not values <= choices):
        raise invalid()
    return values


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError as err:
        raise invalid() from err
    if value != value or value in (float("inf"), float("-inf")):
        raise invalid()
    return value


def _integer(raw: str, low: int, high: int) -> int:
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise invalid()
    return int(raw)


def _timestamp(raw: str) -> float:
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as err:
        raise invalid() from err
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _direction(call: Call) -> str:
    return "outbound" if call.type == "phone" else "inbound"


def _duration_ms(call: Call) -> float | None:
    return None if call.duration is None else call.duration * 1000


def _version_name(call: Call, state: EmulatorState) -> str:
    agent = state.agents.get(call.agent_id)
    versions = agent.versions if agent else []
    version = next((v for v in versions if v.version_number == call.agent_version_number), None)
    return (version.title if version and version.title else None) or f"Version {call.agent_version_number}"


def _version_name_contains(needle: str) -> Filter:
    return lambda call, state: needle.casefold() in _version_name(call, state).casefold()


def _created(after: float | None = None, before: float | None = None) -> Filter:
    def check(call: Call, _state: EmulatorState) -> bool:
        return (after is None or call.created_at >= after) and (before is None or call.created_at <= before)

    return check


def _always(result: bool) -> Filter:
    return lambda _call, _state: result


def _in(attribute: Callable[[Call], object], values: frozenset[str]) -> Filter:
    return lambda call, _state: attribute(call) in values


def _bound(limit: float, *, above: bool, strict: bool) -> Filter:
    def check(call: Call, _state: EmulatorState) -> bool:
        ms = _duration_ms(call)
        if ms is None:
            return False
        if above:
            return ms > limit if strict else ms >= limit
        return ms < limit if strict else ms <= limit

    return check


def parse_call_query(query: Mapping[str, str]) -> CallQuery:
    """Read the query of ``GET /v1/calls``; raises a 400 :class:`ApiError` on anything invalid or unknown."""
    filters: list[Filter] = []
    page, limit, export, columns = 1, CALLS_DEFAULT_LIMIT, False, None
    sort_by, descending = "created_at", True
    for name, raw in query.items():
        match name:
            case "page":
                page = _integer(raw, 1, 1_000_000)
            case "limit":
                limit = _integer(raw, 1, CALLS_MAX_LIMIT)
            case "agent_id":
                filters.append(_in(lambda c: c.agent_id, _values(raw)))
            case "call_id":
                filters.append(_in(lambda c: c.id, _values(raw)))
            case "batch_call_id":
                _values(raw)
                filters.append(_always(False))  # the emulator runs no batch calls
            case "from":
                filters.append(_in(lambda c: c.from_number, frozenset({raw})))
            case "to":
                filters.append(_in(lambda c: c.to_number, frozenset({raw})))
            case "type":
                filters.append(_in(lambda c: c.type, _values(raw, frozenset({"phone", "web"}))))
            case "call_direction":
                filters.append(_in(_direction, _values(raw, frozenset({"inbound", "outbound"}))))
            case "latency_min" | "latency_max":
                _number(raw)
                filters.append(_always(False))  # no latency is recorded for emulated calls
            case "agent_version_id":
                filters.append(_in(lambda c: str(c.agent_version_number), _values(raw)))
            case "agent_version_name":
                filters.append(_version_name_contains(raw))
            case "sentiment":
                sentiments = _values(raw, frozenset({"positive", "neutral", "negative", "unknown"}))
                filters.append(_always("unknown" in sentiments))  # no sentiment is ever analysed
            case "start_date":
                filters.append(_created(after=_timestamp(raw)))
            case "end_date":
                filters.append(_created(before=_timestamp(raw)))
            case "duration_greater_than" | "duration_min":
                filters.append(_bound(_number(raw), above=True, strict=name == "duration_greater_than"))
            case "duration_less_than" | "duration_max":
                filters.append(_bound(_number(raw), above=False, strict=name == "duration_less_than"))
            case "created_at" | "duration":
                if raw not in ("asc", "desc"):
                    raise invalid()
                if name == "duration" or sort_by != "duration":
                    sort_by, descending = name, raw == "desc"
            case "status":
                filters.append(_in(lambda c: c.status, _values(raw)))
            case "end_reason":
                filters.append(_in(lambda c: c.end_reason, _values(raw)))
            case "export":
                if raw not in ("true", "false"):
                    raise invalid()
                export = raw == "true"
            case "columns":
                columns = _values(raw)
            case _:
                raise invalid()
    if columns is not None and not export:
        raise invalid()
    return CallQuery(
        page=page,
        limit=limit,
        export=export,
        columns=columns,
        sort_by=sort_by,
        descending=descending,
        filters=tuple(filters),
    )
