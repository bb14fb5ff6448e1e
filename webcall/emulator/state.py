"""In-memory world of the DialNexa emulator: agents, calls, web-call tokens, webhooks.

Everything the emulator's REST routes, its WHIP media endpoint and its webhook sender share lives here, as plain
data with explicit state transitions. Nothing here does I/O; listeners registered with :meth:`EmulatorState.listen`
are told of every call transition (the webhook sender and the media sessions subscribe).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Statuses a call may move between (DialNexa's documented set; the emulator uses a subset).
CALL_STATUSES = frozenset(
    {
        "created",
        "initiated",
        "sent",
        "received",
        "completed",
        "did_not_pick",
        "busy",
        "no_answer",
        "failed",
        "cancelled",
        "retry_expired",
    }
)
TERMINAL_STATUSES = frozenset(
    {"completed", "did_not_pick", "busy", "no_answer", "failed", "cancelled", "retry_expired"}
)
_TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"initiated", "sent", "cancelled", "failed"}),
    "sent": frozenset({"received", "initiated", "did_not_pick", "busy", "no_answer", "failed", "cancelled"}),
    "received": frozenset({"initiated", "completed", "failed"}),
    "initiated": frozenset({"completed", "failed"}),
}

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class InvalidTransition(Exception):
    """A call was asked to move to a status its current status does not lead to."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(7)}"


def render(template: str, variables: dict[str, Any]) -> str:
    """Fill ``{{name}}`` placeholders; a placeholder without a value stays literal, as DialNexa speaks it."""

    def fill(m: re.Match[str]) -> str:
        value = variables.get(m.group(1))
        return m.group(0) if value is None else str(value)

    return PLACEHOLDER.sub(fill, template)


@dataclass
class AgentVersion:
    version_number: int
    is_published: bool = True
    title: str | None = None
    welcome_message: str = ""
    prompt: str = ""
    default_dynamic_variables: dict[str, str] = field(default_factory=dict)


@dataclass
class EmulatedAgent:
    id: str
    name: str
    welcome_message: str
    prompt: str = ""
    # Simple conversational script: the agent answers each caller turn with the next line (rendered), then closes.
    script: list[str] = field(default_factory=list)
    closing: str = "Thank you for calling. Goodbye!"
    max_call_duration_sec: int = 600
    voice: str = "en-us"
    versions: list[AgentVersion] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    # Where the agent's call events go: None sends them to every active subscription of the account, an id to that
    # one only; with webhook_enabled off ("Enable Webhook" in DialNexa's dashboard) they go nowhere.
    webhook_id: str | None = None
    webhook_enabled: bool = True

    def published_version(self, number: int | None) -> AgentVersion | None:
        """The requested published version, or the latest published one when ``number`` is None."""
        published = [v for v in self.versions if v.is_published]
        if number is None:
            return max(published, key=lambda v: v.version_number, default=None)
        return next((v for v in published if v.version_number == number), None)


@dataclass
class TranscriptLine:
    role: str  # "agent" | "user"
    text: str
    at: float


@dataclass
class Call:
    id: str
    type: str  # "web" | "phone"
    agent_id: str
    agent_version_number: int
    metadata: dict[str, Any]
    notes: dict[str, Any] | None = None
    to_number: str | None = None
    from_number: str | None = None
    status: str = "created"
    end_reason: str | None = None
    created_at: float = field(default_factory=time.time)
    initiated_at: float | None = None
    ended_at: float | None = None
    transcript: list[TranscriptLine] = field(default_factory=list)
    summary: str | None = None
    # Web calls only: single-use media token.
    access_token: str | None = None
    token_expires_at: float | None = None
    token_used: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds between initiation and end (DialNexa does not document the unit; the emulator uses seconds)."""
        if self.initiated_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else time.time()
        return round(end - self.initiated_at, 3)

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def transcript_text(self) -> str:
        return "\n".join(f"{'Agent' if t.role == 'agent' else 'User'}: {t.text}" for t in self.transcript)


@dataclass
class Webhook:
    id: str
    url: str
    events: list[str]
    secret: str
    is_active: bool = True
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


Listener = Callable[[str, Call], None]
"""Called as ``listener(event_type, call)`` with ``call_initiated``, ``call_ended`` or ``transfer_completed``."""


_ENDINGS = {
    "user_disconnected": "the caller hung up",
    "agent_disconnected": "the agent ended the call",
    "network_failure": "the connection was lost",
    "max_duration_reached": "the time limit was reached",
    "voicemail_detected": "it reached voicemail",
}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


@dataclass
class EmulatorState:
    api_keys: set[str]
    agents: dict[str, EmulatedAgent] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    token_ttl: float = 30.0
    clock: Callable[[], float] = time.time
    _listeners: list[Listener] = field(default_factory=list)
    _by_token: dict[str, str] = field(default_factory=dict)

    # -- listeners ---------------------------------------------------------------------------------------------
    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, event_type: str, call: Call) -> None:
        for listener in list(self._listeners):
            listener(event_type, call)

    # -- calls -------------------------------------------------------------------------------------------------
    def create_call(
        self,
        *,
        type: str,
        agent: EmulatedAgent,
        version: AgentVersion,
        metadata: dict[str, Any],
        notes: dict[str, Any] | None = None,
        to_number: str | None = None,
    ) -> Call:
        call = Call(
            id=new_id("call"),
            type=type,
            agent_id=agent.id,
            agent_version_number=version.version_number,
            metadata=dict(metadata),
            notes=notes,
            to_number=to_number,
            from_number="+15550100000" if type == "phone" else None,
            created_at=self.clock(),
        )
        if type == "web":
            call.access_token = "wct_" + secrets.token_urlsafe(24)
            call.token_expires_at = self.clock() + self.token_ttl
            self._by_token[call.access_token] = call.id
        self.calls[call.id] = call
        return call

    def variables_for(self, call: Call) -> dict[str, Any]:
        """The values ``{{placeholders}}`` are filled from: version defaults, call metadata, then built-ins."""
        agent = self.agents[call.agent_id]
        version = agent.published_version(call.agent_version_number)
        values: dict[str, Any] = dict(version.default_dynamic_variables) if version else {}
        values.update(call.metadata)
        values.update(
            {
                "call_id": call.id,
                "agent_id": agent.id,
                "agent_name": agent.name,
                "caller_number": call.to_number or "",
            }
        )
        return values

    def redeem_token(self, token: str) -> Call | None:
        """Consume a web call's single-use media token; None when unknown, used, expired or the call ended."""
        call_id = self._by_token.get(token)
        call = self.calls.get(call_id) if call_id else None
        if call is None or call.token_used or call.ended:
            return None
        if call.token_expires_at is not None and self.clock() > call.token_expires_at:
            return None
        call.token_used = True
        return call

    def transition(self, call: Call, status: str, *, end_reason: str | None = None) -> None:
        """Move ``call`` to ``status``, stamping times and telling listeners; invalid moves raise."""
        if status not in _TRANSITIONS.get(call.status, frozenset()):
            raise InvalidTransition(f"call {call.id} cannot go from {call.status} to {status}")
        call.status = status
        now = self.clock()
        if status == "initiated":
            call.initiated_at = now
            self._emit("call_initiated", call)
        elif status in TERMINAL_STATUSES:
            call.ended_at = now
            call.end_reason = end_reason
            if call.summary is None:
                call.summary = self._summarise(call)
            self._emit("call_ended", call)

    def transfer(self, call: Call) -> None:
        """Transfer a live call (to a person or another number): listeners hear ``transfer_completed``.

        The call stays live (``initiated``); any other status raises :class:`InvalidTransition`.
        """
        if call.status != "initiated":
            raise InvalidTransition(f"call {call.id} cannot be transferred while it is {call.status}")
        self._emit("transfer_completed", call)

    def end_call(self, call: Call, end_reason: str) -> bool:
        """End a live or pending call; False when it had already ended."""
        if call.ended:
            return False
        if call.status == "initiated" or call.status == "received":
            self.transition(call, "completed", end_reason=end_reason)
        else:
            self.transition(call, "cancelled", end_reason=end_reason)
        return True

    def clear(self) -> None:
        """Forget every call, web-call token and webhook (agents and listeners stay)."""
        self.calls.clear()
        self._by_token.clear()
        self.webhooks.clear()

    def add_transcript(self, call: Call, role: str, text: str) -> None:
        call.transcript.append(TranscriptLine(role=role, text=text, at=self.clock()))

    def _summarise(self, call: Call) -> str:
        agent = self.agents.get(call.agent_id)
        user_turns = sum(1 for t in call.transcript if t.role == "user")
        who = call.metadata.get("name") or call.metadata.get("customer_name") or "The caller"
        name = agent.name if agent else call.agent_id
        if call.initiated_at is None:
            return f"{name}: the call ended before it connected ({call.end_reason or 'no reason'})."
        how = _ENDINGS.get(call.end_reason or "", f"it ended ({call.end_reason or 'no reason given'})")
        return (
            f"{who} spoke with {name} for {call.duration or 0:.0f} s "
            f"({user_turns} caller turn{'s' if user_turns != 1 else ''}); {how}."
        )

    # -- JSON views (DialNexa field names) ---------------------------------------------------------------------
    def call_json(self, call: Call) -> dict[str, Any]:
        return {
            "id": call.id,
            "type": call.type,
            "agent_id": call.agent_id,
            "agent_version_number": call.agent_version_number,
            "status": call.status,
            "call_direction": "outbound" if call.type == "phone" else "inbound",
            "to_number": call.to_number,
            "from_number": call.from_number,
            "metadata": call.metadata,
            "notes": call.notes,
            "createdAt": _iso(call.created_at),
            "initiated_at": _iso(call.initiated_at),
            "ended_at": _iso(call.ended_at),
            "duration": call.duration,
            "end_reason": call.end_reason,
            "transcript": call.transcript_text() if call.transcript else None,
            "transcript_object": [{"role": t.role, "content": t.text} for t in call.transcript],
            "summary": call.summary,
            "sentiment": None,
            "recording_url": None,
        }

    def webhook_call_json(self, call: Call) -> dict[str, Any]:
        """The ``payload.call`` object of a webhook delivery."""
        body = self.call_json(call)
        body.update(
            {
                "direction": body.pop("call_direction"),
                "type": "phone_call" if call.type == "phone" else "web_call",
                "disconnection_reason": call.end_reason,
            }
        )
        return body

    def agent_json(self, agent: EmulatedAgent) -> dict[str, Any]:
        versions: list[dict[str, Any]] = [
            {
                "agent_id": agent.id,
                "version_number": v.version_number,
                "version_title": v.title or f"Version {v.version_number}",
                "title": agent.name,
                "is_published": v.is_published,
                "language_id": "en",
                "voice_id": agent.voice,
                "llm_id": None,
                "transcriber_id": None,
                "fallback_stt_enabled": False,
                "stt_fallback_transcriber_id": None,
                "post_call_analysis_llm_id": None,
                "welcome_message": v.welcome_message or agent.welcome_message,
                "prompt": v.prompt or agent.prompt,
                "default_dynamic_variables": v.default_dynamic_variables,
            }
            for v in agent.versions
        ]
        current = max(versions, key=lambda v: int(v["version_number"]), default=None)
        return {
            "id": agent.id,
            "name": agent.name,
            "folder_id": None,
            "current_version_number": current["version_number"] if current else None,
            "timezone": "UTC",
            "agent_type": "Single_Prompt_Agent",
            "pipeline_type": "Cascaded",
            "webhook_id": agent.webhook_id,
            "webhook_enabled": agent.webhook_enabled,
            "welcome_message": agent.welcome_message,
            "prompt": agent.prompt,
            "max_call_duration_sec": agent.max_call_duration_sec,
            "current_version": current,
            "versions": versions,
            "created_at": _iso(agent.created_at),
            "updated_at": _iso(agent.created_at),
        }

    def webhook_json(self, hook: Webhook) -> dict[str, Any]:
        return {
            "id": hook.id,
            "url": hook.url,
            "events": hook.events,
            "is_active": hook.is_active,
            "created_at": _iso(hook.created_at),
            "updated_at": _iso(hook.updated_at),
        }


def default_agents() -> dict[str, EmulatedAgent]:
    """The agents every emulator starts with (the demo's sales, support and collections desks)."""
    agents = [
        EmulatedAgent(
            id="agent_sales",
            name="Nova from Sales",
            welcome_message="Hello {{name}}! This is Nova from DialNexa sales. How can I help {{company}} today?",
            prompt="You are Nova, a friendly sales agent. Greet {{name}} from {{company}}.",
            script=[
                "Great question. Our voice agents answer every call in under a second, around the clock.",
                "I can set up a trial for {{company}} this week. Would that work for you?",
            ],
            closing="Thanks {{name}}, talk soon. Goodbye!",
        ),
        EmulatedAgent(
            id="agent_support",
            name="Sam from Support",
            welcome_message="Hi {{name}}, you are through to support. What seems to be the problem?",
            prompt="You are Sam, a patient support agent.",
            script=[
                "Sorry to hear that. Let me check your account.",
                "I have reset it for you. Is everything working now?",
            ],
            closing="Glad I could help, {{name}}. Goodbye!",
        ),
        EmulatedAgent(
            id="agent_collections",
            name="Ava from Accounts",
            welcome_message="Hello {{name}}, this is Ava from Accounts, about the open balance on your account.",
            prompt="You are Ava, a polite accounts agent.",
            script=[
                "I understand. We can split the balance into three monthly payments.",
                "I have noted that plan on your account.",
            ],
            closing="Thank you {{name}}. Have a good day.",
        ),
    ]
    # What each agent says when a call brings no value for a placeholder, so no caller ever hears "{{name}}".
    defaults = {
        "agent_sales": {"name": "there", "company": "your team"},
        "agent_support": {"name": "there"},
        "agent_collections": {"name": "there"},
    }
    for agent in agents:
        agent.versions = [
            AgentVersion(
                version_number=1, is_published=True, title="Version 1", default_dynamic_variables=defaults[agent.id]
            )
        ]
    return {a.id: a for a in agents}
