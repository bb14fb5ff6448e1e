"""Call lifecycle events: DialNexa's webhook deliveries parsed tolerantly and normalised for the host.

``call_initiated`` → ``call.started``, ``call_ended`` → ``call.ended``, ``transfer_completed`` → ``call.transferred``;
the plugin's own ``session.created`` and ``callback.requested``; anything else passes through as
``dialnexa.<event_type>``. A :class:`CallEvent` carries the host context stored when the session was minted, and
its ``source``: ``dialnexa`` (a webhook delivery), ``webcall`` (the plugin's own) or ``reconciled`` (made from
DialNexa's call record when no webhook told the plugin: see :mod:`webcall.reconcile`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .dialnexa.models import iso

NAMES = {"call_initiated": "call.started", "call_ended": "call.ended", "transfer_completed": "call.transferred"}
RECONCILED = "reconciled"
"""The ``source`` of an event made from DialNexa's call record rather than received as a webhook."""
_TOKEN = re.compile(r"[^a-z0-9_.]+")


class EventParseError(ValueError):
    """A delivery that is not a call event we can read."""


def normalise(event_type: str) -> str:
    if event_type in NAMES:
        return NAMES[event_type]
    cleaned = _TOKEN.sub("_", event_type.strip().lower())[:64] or "unknown"
    return f"dialnexa.{cleaned}"


CONTEXT_KEYS = ("call_id", "agent", "agent_id", "origin", "identity", "variables", "created_at")
"""What every event's ``context`` holds. The values are those stored when the call was started (the agent alias and
id, the page's origin, the visitor's identity from ``authorize`` or a ticket, the ``{{variables}}``, when); for a
call the plugin holds no context of (one it did not start, or whose context the store lost) they are ``None``, and
``variables`` is empty."""


def full_context(call_id: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    """``stored`` with every key of :data:`CONTEXT_KEYS` present, so host code can read any of them on any event."""
    context: dict[str, Any] = {key: None for key in CONTEXT_KEYS}
    context.update(call_id=call_id, variables={})
    if stored:
        context.update(stored)
    return context


@dataclass(frozen=True)
class CallEvent:
    """One event about one call, as the host's callbacks and the browser receive it.

    ``context`` is always a dict with every key of :data:`CONTEXT_KEYS` (``None`` where the plugin holds no context
    for the call), so ``event.context["identity"]`` works on every event."""

    id: str
    type: str
    call_id: str
    time: str
    call: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    source: str = "dialnexa"
    quality: dict[str, Any] | None = None
    """On ``call.ended``: how the call sounded as the visitor's browser measured it (:mod:`webcall.quality`), when
    the widget's summary arrived in time; None otherwise."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", full_context(self.call_id, self.context))

    @property
    def agent(self) -> str | None:
        """The agent alias the session was minted for (from the host context)."""
        agent = self.context.get("agent")
        return agent if isinstance(agent, str) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "call_id": self.call_id,
            "time": self.time,
            "call": self.call,
            "context": self.context,
            "source": self.source,
            **({"quality": self.quality} if self.quality is not None else {}),
        }

    def browser_json(self) -> dict[str, Any]:
        """What the visitor's browser may see: the call record without the host's private context."""
        call = {k: v for k, v in self.call.items() if k not in ("metadata", "notes")}
        return {"id": self.id, "type": self.type, "call_id": self.call_id, "time": self.time, "call": call}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallEvent:
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            call_id=str(data["call_id"]),
            time=str(data["time"]),
            call=dict(data.get("call") or {}),
            context=data.get("context") or {},
            source=str(data.get("source", "dialnexa")),
            quality=data["quality"] if isinstance(data.get("quality"), dict) else None,
        )


def now_iso() -> str:
    return iso(datetime.now(UTC))


MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply containers nest in a parsed JSON value (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_delivery(raw: bytes) -> tuple[str, dict[str, Any]]:
    """(event_type, call record) from a webhook body: DialNexa's envelope or the variants seen in the wild."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise EventParseError("body is not JSON") from err
    if not isinstance(body, dict):
        raise EventParseError("body is not a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise EventParseError(f"body is nested deeper than {MAX_DEPTH} levels")
    event_type = next((body[k] for k in ("event_type", "event", "type") if isinstance(body.get(k), str)), None)
    payload = next((body[k] for k in ("payload", "data") if isinstance(body.get(k), dict)), body)
    call = payload.get("call") if isinstance(payload.get("call"), dict) else payload
    if not event_type or not isinstance(call, dict):
        raise EventParseError("no event type")
    call_id = next((call[k] for k in ("id", "call_id") if isinstance(call.get(k), str) and call.get(k)), None)
    if call_id is None:
        raise EventParseError("no call id")
    return event_type, {**call, "id": call_id}


def from_delivery(
    event_type: str, call: dict[str, Any], context: dict[str, Any] | None, *, source: str = "dialnexa"
) -> CallEvent:
    """The event for a delivery of ``event_type`` about ``call``; its id is the same whatever its ``source``, so a
    webhook and a reconciled event about one thing are one event to the outbox's dedupe (and to the widget)."""
    kind = normalise(event_type)
    call_id = str(call["id"])
    return CallEvent(
        id=f"{call_id}:{kind}",
        type=kind,
        call_id=call_id,
        time=now_iso(),
        call=call,
        context=context or {},
        source=source,
    )
