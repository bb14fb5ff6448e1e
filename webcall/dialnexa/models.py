"""What DialNexa answers, parsed tolerantly: envelopes unwrapped, aliases accepted, unknown keys kept in ``raw``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
BUILTIN_VARIABLES = frozenset({"call_id", "agent_id", "agent_name", "caller_number"})


class ParseError(ValueError):
    """A DialNexa answer lacks something the plugin cannot do without."""


def unwrap(data: Any, *names: str) -> dict[str, Any]:
    """Return the object inside the envelopes DialNexa has been seen to use (``data``, or a named key)."""
    for _ in range(3):
        if not isinstance(data, dict):
            break
        inner = next((data[n] for n in ("data", *names) if isinstance(data.get(n), dict)), None)
        if inner is None:
            break
        data = inner
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _str(data: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 (with ``Z`` or an offset) or epoch seconds/milliseconds; None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class MediaDescriptor:
    transport: str
    whip_url: str
    ice_servers: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"transport": self.transport, "whip_url": self.whip_url, "ice_servers": self.ice_servers}


@dataclass(frozen=True)
class WebCallSession:
    """A web call created at DialNexa: what the browser needs to connect its media."""

    id: str
    agent_id: str
    agent_version_number: int | None
    status: str
    access_token: str = field(repr=False)
    expires_at: datetime | None
    media: MediaDescriptor
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, body: Any) -> WebCallSession:
        data = unwrap(body, "web_call", "call", "session")
        call_id = _str(data, "id", "call_id", "web_call_id")
        token = _str(data, "access_token", "token", "client_token")
        media_raw = data.get("media") if isinstance(data.get("media"), dict) else {}
        assert isinstance(media_raw, dict)
        whip_url = _str(media_raw, "whip_url", "url") or _str(data, "whip_url")
        if not call_id or not token or not whip_url:
            missing = [n for n, v in (("id", call_id), ("access_token", token), ("media.whip_url", whip_url)) if not v]
            raise ParseError(f"web call answer lacks {', '.join(missing)}")
        ice = media_raw.get("ice_servers", data.get("ice_servers", []))
        return cls(
            id=call_id,
            agent_id=_str(data, "agent_id") or "",
            agent_version_number=_int(data.get("agent_version_number")),
            status=_str(data, "status") or "created",
            access_token=token,
            expires_at=parse_time(data.get("expires_at") or data.get("expiresAt")),
            media=MediaDescriptor(
                transport=_str(media_raw, "transport") or "webrtc-whip",
                whip_url=whip_url,
                ice_servers=[s for s in ice if isinstance(s, dict)] if isinstance(ice, list) else [],
            ),
            raw=data,
        )


@dataclass(frozen=True)
class PhoneCall:
    id: str
    to_phone_number: str | None
    agent_id: str | None
    agent_version_number: int | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, body: Any) -> PhoneCall:
        data = unwrap(body, "call")
        call_id = _str(data, "id", "call_id")
        if not call_id:
            raise ParseError("call answer lacks id")
        return cls(
            id=call_id,
            to_phone_number=_str(data, "to_phone_number", "to_number", "phone_number"),
            agent_id=_str(data, "agent_id"),
            agent_version_number=_int(data.get("agent_version_number")),
            raw=data,
        )


@dataclass(frozen=True)
class CallRecord:
    id: str
    status: str | None
    type: str | None
    agent_id: str | None
    end_reason: str | None
    duration: float | None
    summary: str | None
    transcript: str | None
    metadata: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, body: Any) -> CallRecord:
        data = unwrap(body, "call")
        call_id = _str(data, "id", "call_id")
        if not call_id:
            raise ParseError("call record lacks id")
        duration = data.get("duration")
        metadata = data.get("metadata")
        return cls(
            id=call_id,
            status=_str(data, "status"),
            type=_str(data, "type", "call_type"),
            agent_id=_str(data, "agent_id"),
            end_reason=_str(data, "end_reason", "disconnection_reason"),
            duration=float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None,
            summary=_str(data, "summary", "call_summary"),
            transcript=_str(data, "transcript"),
            metadata=metadata if isinstance(metadata, dict) else {},
            raw=data,
        )


@dataclass(frozen=True)
class AgentVersionInfo:
    version_number: int
    is_published: bool
    welcome_message: str
    prompt: str
    default_variables: dict[str, Any]


@dataclass(frozen=True)
class AgentInfo:
    id: str
    name: str | None
    versions: tuple[AgentVersionInfo, ...]
    welcome_message: str
    prompt: str
    max_call_duration_sec: int | None
    raw: dict[str, Any] = field(repr=False)
    webhook_id: str | None = None
    """The webhook subscription the agent's events go to (documented); None when it names none."""
    webhook_enabled: bool | None = None
    """The agent's "Enable Webhook" setting, where the API reports it (as ``webhook_enabled``: an assumed name)."""

    @classmethod
    def parse(cls, body: Any) -> AgentInfo:
        data = unwrap(body, "agent")
        agent_id = _str(data, "id", "agent_id")
        if not agent_id:
            raise ParseError("agent answer lacks id")
        welcome = _str(data, "welcome_message", "begin_message") or ""
        prompt = _str(data, "prompt", "general_prompt") or ""
        versions_raw = data.get("versions")
        items = [v for v in versions_raw if isinstance(v, dict)] if isinstance(versions_raw, list) else []
        current = data.get("current_version")
        if not items and isinstance(current, dict):
            items = [current]
        versions = []
        for item in items:
            number = _int(item.get("version_number"))
            if number is None:
                continue
            defaults = item.get("default_dynamic_variables")
            versions.append(
                AgentVersionInfo(
                    version_number=number,
                    is_published=item.get("is_published") is True,
                    welcome_message=_str(item, "welcome_message", "begin_message") or welcome,
                    prompt=_str(item, "prompt", "general_prompt") or prompt,
                    default_variables=defaults if isinstance(defaults, dict) else {},
                )
            )
        return cls(
            id=agent_id,
            name=_str(data, "name", "title"),
            versions=tuple(versions),
            welcome_message=welcome,
            prompt=prompt,
            max_call_duration_sec=_int(data.get("max_call_duration_sec")),
            raw=data,
            webhook_id=_str(data, "webhook_id"),
            webhook_enabled=data["webhook_enabled"] if isinstance(data.get("webhook_enabled"), bool) else None,
        )

    def version(self, number: int | None) -> AgentVersionInfo | None:
        """The published version asked for, or the latest published one."""
        published = [v for v in self.versions if v.is_published]
        if number is None:
            return max(published, key=lambda v: v.version_number, default=None)
        return next((v for v in published if v.version_number == number), None)

    def webhook_binding(self, subscription_id: str) -> str:
        """Where the agent's call events go, seen from the subscription ``subscription_id``: ``"off"`` (its webhook
        setting is off), ``"elsewhere"`` (bound to another webhook), ``"unbound"`` or ``"bound"``."""
        if self.webhook_enabled is False:
            return "off"
        if self.webhook_id is None:
            return "unbound"
        return "bound" if self.webhook_id == subscription_id else "elsewhere"

    def placeholders(self, number: int | None) -> frozenset[str]:
        """Every ``{{placeholder}}`` of the version's welcome message and prompt, built-ins left out."""
        version = self.version(number)
        texts = [version.welcome_message, version.prompt] if version else [self.welcome_message, self.prompt]
        return frozenset({m.group(1) for text in texts for m in PLACEHOLDER.finditer(text)} - BUILTIN_VARIABLES)

    def default_variables(self, number: int | None) -> frozenset[str]:
        """The placeholders the version gives a default value."""
        version = self.version(number)
        return frozenset(version.default_variables) if version else frozenset()

    def required_variables(self, number: int | None) -> frozenset[str]:
        """``{{placeholders}}`` of the welcome message and prompt that have no default and no built-in value."""
        version = self.version(number)
        texts = [version.welcome_message, version.prompt] if version else [self.welcome_message, self.prompt]
        names = {m.group(1) for text in texts for m in PLACEHOLDER.finditer(text)}
        defaults = set(version.default_variables) if version else set()
        return frozenset(names - defaults - BUILTIN_VARIABLES)


@dataclass(frozen=True)
class WebhookRecord:
    """A webhook subscription as DialNexa's ``/user-webhooks`` API describes it: where deliveries go, the
    subscription names, whether it is active."""

    id: str
    url: str
    events: tuple[str, ...]
    is_active: bool
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, body: Any) -> WebhookRecord:
        data = unwrap(body, "webhook", "user_webhook")
        hook_id = _str(data, "id", "webhook_id")
        url = _str(data, "url")
        if not hook_id or not url:
            raise ParseError("webhook answer lacks id or url")
        events = data.get("events")
        return cls(
            id=hook_id,
            url=url,
            events=tuple(e for e in events if isinstance(e, str)) if isinstance(events, list) else (),
            is_active=data.get("is_active") is not False,
            raw=data,
        )


def list_items(body: Any, *names: str) -> list[dict[str, Any]]:
    """The items of a list answer: a bare array, ``{names[0]: [...]}``, or either inside ``data``."""
    for _ in range(3):
        if isinstance(body, list):
            return [item for item in body if isinstance(item, dict)]
        if not isinstance(body, dict):
            break
        found = next((body[n] for n in (*names, "items", "results") if isinstance(body.get(n), list)), None)
        if found is not None:
            return [item for item in found if isinstance(item, dict)]
        body = body.get("data")
    raise ParseError("expected a list answer")


@dataclass(frozen=True)
class WhipAnswer:
    """DialNexa's answer to a WHIP offer: the SDP answer, the media resource (for ICE restarts and hang-up) and its
    entity tag."""

    sdp: str
    resource_url: str
    etag: str | None


@dataclass(frozen=True)
class MediaUpdate:
    """DialNexa's answer to a PATCH of the WHIP resource (an ICE restart or trickled candidates), error statuses
    included: its status, body, media type (None when it names none) and the headers a relay passes on."""

    PASSED_ON: ClassVar[tuple[str, ...]] = ("ETag", "Allow")

    status: int
    body: str
    content_type: str | None
    headers: dict[str, str]
    """The answer's ``ETag`` and ``Allow``, where it has them."""
