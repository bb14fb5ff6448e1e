"""The plugin's one configuration object: frozen, validated on construction, secrets hidden from ``repr``.

``WebCallConfig.from_env()`` is the only place that reads ``os.environ``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from phonenumbers import SUPPORTED_REGIONS

from .errors import ConfigError
from .ice import DEFAULT_TURN_TTL, MAX_ICE_SERVERS, IceServersHook, TurnRest, check_ice_server

DEFAULT_BASE_URL = "https://api.dialnexa.com/v1"
ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VARIABLE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


DEFAULT_WEBHOOK_EVENTS = ("call.completed", "call.failed")
"""What the plugin subscribes to at DialNexa: the subscription names DialNexa's OpenAPI shows (``call.completed`` and
``call.failed``). ``webhook_events`` may add others (``call.no_answer`` appears in an older reference); a name DialNexa
refuses is left out of the registration and reported. Deliveries arrive with their own ``event_type``
(``call_initiated``, ``call_ended``, ``transfer_completed``); the plugin accepts every one."""
AGENT_SPEC_PATTERN = re.compile(r"^agent_[A-Za-z0-9]+(@[0-9]+)?(\+[A-Za-z0-9_]+)*$")
"""An agent in ``WEBCALL_AGENTS`` after its ``alias=``: a DialNexa agent id, ``@version``, ``+variables``."""


@dataclass(frozen=True, kw_only=True)
class Agent:
    """A DialNexa agent the browser may call, under an alias the host chooses.

    ``visitor_variables`` names the ``{{variables}}`` a visitor may supply from the browser; the host's
    ``variables`` hook always wins over them. ``defaults`` are the values sent when neither the hook nor the visitor
    gives one (besides the defaults the agent's version has at DialNexa), so the agent never speaks a placeholder.
    """

    id: str
    version: int | None = None
    visitor_variables: frozenset[str] = frozenset()
    label: str | None = None
    defaults: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise ConfigError("Agent(id=...) must be a DialNexa agent id such as 'agent_2g7Xy3tY53gRlp'.")
        if self.version is not None and (not isinstance(self.version, int) or self.version < 1):
            raise ConfigError(f"Agent {self.id}: version must be a positive integer or None (latest published).")
        object.__setattr__(self, "visitor_variables", frozenset(self.visitor_variables))
        for name in self.visitor_variables:
            if not VARIABLE_PATTERN.match(name):
                raise ConfigError(f"Agent {self.id}: visitor variable {name!r} is not a valid variable name.")
        if not isinstance(self.defaults, Mapping):
            raise ConfigError(f"Agent {self.id}: defaults must be a mapping of variable names to strings.")
        for name, value in self.defaults.items():
            if not isinstance(name, str) or not VARIABLE_PATTERN.match(name):
                raise ConfigError(f"Agent {self.id}: default {name!r} is not a valid variable name.")
            if not isinstance(value, str):
                raise ConfigError(f"Agent {self.id}: the default for {name!r} must be a string.")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


VariablesHook = Callable[[web.Request, str, Agent], Awaitable[Mapping[str, Any]] | Mapping[str, Any]]
"""``variables(request, alias, agent)`` returns the host's ``{{variables}}`` for this visitor and agent."""

AuthorizeHook = Callable[[web.Request], Awaitable[str | bool | None] | str | bool | None]
"""``authorize(request)``: ``False`` refuses (403); a string is the visitor's identity (rate-limited per identity);
``True``/``None`` allows anonymously. It may also raise ``webcall.HTTPProblem`` for a custom answer."""

BotCheckHook = Callable[[web.Request, str | None], Awaitable[bool] | bool]
"""``bot_check(request, token)`` verifies the widget's bot-check token (e.g. Turnstile); ``False`` refuses."""


def _secret_list(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class WebCallConfig:
    """Everything the plugin needs. Only ``agents`` is required in production; see the README's table."""

    agents: Mapping[str, Agent] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    web_call_path: str = "/web-calls"
    end_call_path: str = "/calls/{call_id}/end"
    allowed_origins: tuple[str, ...] = ()
    session_secrets: tuple[str, ...] = field(default=(), repr=False)
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    ticket_secrets: tuple[str, ...] = field(default=(), repr=False)
    ticket_audience: str = "webcall"
    require_ticket: bool = False
    webhook_events: tuple[str, ...] = DEFAULT_WEBHOOK_EVENTS
    public_url: str | None = None
    rate_limit: int = 10
    rate_limit_window: float = 60.0
    identity_rate_limit: int = 30
    global_rate_limit: int = 600
    max_concurrent_calls: int = 20
    max_call_seconds: int = 600
    trusted_proxies: int = 0
    max_connections_per_address: int = 64
    max_event_streams: int | None = None
    store: str = "memory"
    strict_agents: bool = False
    upstream_timeout: float = 10.0
    upstream_deadline: float = 20.0
    max_body_bytes: int = 16 * 1024
    max_visitor_value_length: int = 200
    emulator_port: int = 0
    callback_timeout: float = 10.0
    callback_attempts: int = 5
    outbox_reclaim_seconds: float | None = None
    metrics: bool = False
    callback_rate_limit: int = 3
    callback_rate_window: float = 3600.0
    callback_countries: tuple[str, ...] = ()
    callback_country_hourly_limit: int = 30
    callback_hourly_limit: int = 100
    ice_servers: tuple[Mapping[str, Any], ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl: int = DEFAULT_TURN_TTL
    ice_servers_hook: IceServersHook | None = field(default=None, repr=False)
    variables: VariablesHook | None = field(default=None, repr=False)
    authorize: AuthorizeHook | None = field(default=None, repr=False)
    bot_check: BotCheckHook | None = field(default=None, repr=False)
    _generated_secret: bool = field(default=False, init=False, repr=False, compare=False)
    """Set when no session secret was given and ``session_secrets`` holds one made for this process; read it as
    :attr:`generated_session_secret`."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "allowed_origins", tuple(_normalise_origin(o) for o in _secret_list(self.allowed_origins)))
        set_(self, "session_secrets", _secret_list(self.session_secrets))
        set_(self, "webhook_secrets", _secret_list(self.webhook_secrets))
        set_(self, "ticket_secrets", _secret_list(self.ticket_secrets))
        set_(self, "webhook_events", _secret_list(self.webhook_events))
        set_(self, "callback_countries", _country_codes(self.callback_countries))
        set_(self, "turn_urls", _secret_list(self.turn_urls))
        set_(self, "ice_servers", _ice_servers(self.ice_servers))
        if self.turn_secret is not None and not self.turn_secret.strip():
            set_(self, "turn_secret", None)
        set_(self, "agents", dict(self.agents))
        if self.api_key is not None and not self.api_key.strip():
            set_(self, "api_key", None)
        self._check()
        if not self.session_secrets:
            # One process can sign its own tokens; workers sharing a Redis store cannot (refused in _check).
            set_(self, "session_secrets", (secrets.token_urlsafe(32),))
            set_(self, "_generated_secret", True)

    def _check(self) -> None:
        for alias, agent in self.agents.items():
            if not ALIAS_PATTERN.match(alias):
                raise ConfigError(f"Agent alias {alias!r}: use 1-64 letters, digits, '-' or '_'.")
            if not isinstance(agent, Agent):
                raise ConfigError(f"agents[{alias!r}] must be webcall.Agent(id=...), not {type(agent).__name__}.")
        check_base_url(self.base_url)
        if self.api_key is not None:
            refuse_unprintable("api_key (DIALNEXA_API_KEY)", self.api_key)
        refuse_unprintable("web_call_path (WEBCALL_WEB_CALL_PATH)", self.web_call_path)
        refuse_unprintable("end_call_path (WEBCALL_END_CALL_PATH)", self.end_call_path)
        if self.public_url is not None:
            refuse_unprintable("public_url (WEBCALL_PUBLIC_URL)", self.public_url)
        refuse_unprintable("store (WEBCALL_STORE)", self.store)
        if not self.web_call_path.startswith("/"):
            raise ConfigError("web_call_path must start with '/', e.g. '/web-calls'.")
        if "{call_id}" not in self.end_call_path:
            raise ConfigError("end_call_path must contain '{call_id}', e.g. '/calls/{call_id}/end'.")
        for secret in self.session_secrets:
            if len(secret.encode()) < 32:
                raise ConfigError(
                    "Each session secret must be at least 32 bytes; generate one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` and set WEBCALL_SESSION_SECRET."
                )
        for secret in self.ticket_secrets:
            if len(secret.encode()) < 32:
                raise ConfigError(
                    "Each call-ticket secret must be at least 32 bytes (WEBCALL_TICKET_SECRETS); generate one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
                )
        if self.require_ticket and not self.ticket_secrets:
            raise ConfigError(
                "require_ticket (WEBCALL_REQUIRE_TICKET) needs the secret your backend signs tickets with: "
                "set WEBCALL_TICKET_SECRETS."
            )
        if not isinstance(self.ticket_audience, str) or not self.ticket_audience.strip():
            raise ConfigError("ticket_audience (WEBCALL_TICKET_AUDIENCE) must be a non-empty string.")
        for secret in self.webhook_secrets:
            if len(secret) < 16:
                raise ConfigError("Each webhook secret must be at least 16 characters (WEBCALL_WEBHOOK_SECRETS).")
        if not self.webhook_events:
            raise ConfigError(
                "webhook_events (WEBCALL_WEBHOOK_EVENTS) names no event; the default is "
                + ",".join(DEFAULT_WEBHOOK_EVENTS)
                + "."
            )
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError("public_url must be an absolute http(s) URL such as 'https://shop.example.com'.")
        positive = {
            "rate_limit": self.rate_limit,
            "rate_limit_window": self.rate_limit_window,
            "identity_rate_limit": self.identity_rate_limit,
            "global_rate_limit": self.global_rate_limit,
            "max_concurrent_calls": self.max_concurrent_calls,
            "max_call_seconds": self.max_call_seconds,
            "upstream_timeout": self.upstream_timeout,
            "upstream_deadline": self.upstream_deadline,
            "max_body_bytes": self.max_body_bytes,
            "max_visitor_value_length": self.max_visitor_value_length,
            "callback_timeout": self.callback_timeout,
            "callback_attempts": self.callback_attempts,
            "callback_rate_limit": self.callback_rate_limit,
            "callback_rate_window": self.callback_rate_window,
            "callback_country_hourly_limit": self.callback_country_hourly_limit,
            "callback_hourly_limit": self.callback_hourly_limit,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be greater than 0 (got {value}).")
        if self.outbox_reclaim_seconds is not None and self.outbox_reclaim_seconds <= 0:
            raise ConfigError("outbox_reclaim_seconds must be greater than 0.")
        if self.trusted_proxies < 0:
            raise ConfigError("trusted_proxies is a count of proxy hops and cannot be negative.")
        if self.max_connections_per_address < 1:
            raise ConfigError(
                "max_connections_per_address (WEBCALL_MAX_CONNECTIONS_PER_ADDRESS) must be at least 1 "
                f"(got {self.max_connections_per_address})."
            )
        if self.max_event_streams is not None and self.max_event_streams < 1:
            raise ConfigError(
                "max_event_streams (WEBCALL_MAX_EVENT_STREAMS) must be at least 1, or unset to size it from the "
                f"open-files limit (got {self.max_event_streams})."
            )
        redis_url = self.store.startswith(("redis://", "rediss://", "unix://", "redis+", "rediss+"))
        if not (self.store == "memory" or redis_url):
            raise ConfigError(
                "store must be 'memory' or a Redis URL: redis://host:6379/0 (one server), redis+sentinel://host:26379"
                "/service_name (Sentinel) or redis+cluster://host:6379,host:6379 (a cluster); rediss for TLS."
            )
        if self.store.startswith(("redis+", "rediss+")):
            try:
                from .store.redis import parse_store_url
            except ImportError:  # without redis-py, starting says to install the redis extra
                pass
            else:
                parse_store_url(self.store)
        if self.store != "memory" and not self.session_secrets:
            raise ConfigError(
                "A Redis store is shared by several workers, so they need one signing secret: set "
                "WEBCALL_SESSION_SECRET (session_secrets) to the same value of at least 32 bytes on every worker, "
                "e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
        if bool(self.turn_urls) != (self.turn_secret is not None):
            raise ConfigError(
                "TURN credentials are minted from turn_urls (WEBCALL_TURN_URLS) and turn_secret (WEBCALL_TURN_SECRET) "
                "together: set both (the secret is coturn's static-auth-secret), or neither."
            )
        if self.turn_urls:
            self.turn  # noqa: B018 - TurnRest checks the URLs, the secret and the lifetime
        if self.api_key is not None and not self.agents:
            raise ConfigError(
                "No agents configured: pass agents={'sales': webcall.Agent(id='agent_...')} or set WEBCALL_AGENTS."
            )

    @property
    def uses_emulator(self) -> bool:
        """True when no API key is configured: the plugin then runs the local DialNexa emulator in-process."""
        return self.api_key is None

    @property
    def turn(self) -> TurnRest | None:
        """The TURN servers whose credentials are minted per visitor, when ``turn_urls`` are configured."""
        if not self.turn_urls or self.turn_secret is None:
            return None
        return TurnRest(urls=self.turn_urls, secret=self.turn_secret, ttl=self.turn_ttl)

    @property
    def generated_session_secret(self) -> bool:
        """True when no session secret was configured and tokens are signed with one made for this process, so they
        do not outlive it."""
        return self._generated_secret

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WebCallConfig:
        """Read ``DIALNEXA_*`` and ``WEBCALL_*`` variables; keyword arguments (e.g. hooks) override them."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def text(name: str, key: str) -> None:
            if env.get(name, "").strip():
                values[key] = env[name].strip()

        def number(name: str, key: str, kind: type[int] | type[float]) -> None:
            raw = env.get(name, "").strip()
            if raw:
                try:
                    values[key] = kind(raw)
                except ValueError:
                    raise ConfigError(f"{name} must be a number, got {raw!r}.") from None

        text("DIALNEXA_API_KEY", "api_key")
        text("DIALNEXA_BASE_URL", "base_url")
        text("WEBCALL_WEB_CALL_PATH", "web_call_path")
        text("WEBCALL_END_CALL_PATH", "end_call_path")
        text("WEBCALL_ALLOWED_ORIGINS", "allowed_origins")
        text("WEBCALL_SESSION_SECRET", "session_secrets")
        text("WEBCALL_WEBHOOK_SECRETS", "webhook_secrets")
        text("WEBCALL_WEBHOOK_EVENTS", "webhook_events")
        text("WEBCALL_TICKET_SECRETS", "ticket_secrets")
        text("WEBCALL_TICKET_AUDIENCE", "ticket_audience")
        text("WEBCALL_PUBLIC_URL", "public_url")
        text("WEBCALL_STORE", "store")
        text("WEBCALL_CALLBACK_COUNTRIES", "callback_countries")
        text("WEBCALL_TURN_URLS", "turn_urls")
        text("WEBCALL_TURN_SECRET", "turn_secret")
        number("WEBCALL_TURN_TTL", "turn_ttl", int)
        if env.get("WEBCALL_ICE_SERVERS", "").strip():
            values["ice_servers"] = _ice_servers_json(env["WEBCALL_ICE_SERVERS"])
        number("WEBCALL_IDENTITY_RATE_LIMIT", "identity_rate_limit", int)
        number("WEBCALL_GLOBAL_RATE_LIMIT", "global_rate_limit", int)
        number("WEBCALL_MAX_CONCURRENT_CALLS", "max_concurrent_calls", int)
        number("WEBCALL_MAX_CALL_SECONDS", "max_call_seconds", int)
        number("WEBCALL_TRUSTED_PROXIES", "trusted_proxies", int)
        number("WEBCALL_MAX_CONNECTIONS_PER_ADDRESS", "max_connections_per_address", int)
        number("WEBCALL_MAX_EVENT_STREAMS", "max_event_streams", int)
        number("WEBCALL_UPSTREAM_TIMEOUT", "upstream_timeout", float)
        number("WEBCALL_UPSTREAM_DEADLINE", "upstream_deadline", float)
        number("WEBCALL_MAX_BODY_BYTES", "max_body_bytes", int)
        number("WEBCALL_MAX_VISITOR_VALUE_LENGTH", "max_visitor_value_length", int)
        number("WEBCALL_EMULATOR_PORT", "emulator_port", int)
        number("WEBCALL_CALLBACK_TIMEOUT", "callback_timeout", float)
        number("WEBCALL_CALLBACK_ATTEMPTS", "callback_attempts", int)
        number("WEBCALL_CALLBACK_COUNTRY_LIMIT", "callback_country_hourly_limit", int)
        number("WEBCALL_CALLBACK_HOURLY_LIMIT", "callback_hourly_limit", int)
        number("WEBCALL_OUTBOX_RECLAIM_SECONDS", "outbox_reclaim_seconds", float)
        if env.get("WEBCALL_METRICS", "").strip():
            values["metrics"] = _boolean("WEBCALL_METRICS", env["WEBCALL_METRICS"])
        if env.get("WEBCALL_REQUIRE_TICKET", "").strip():
            values["require_ticket"] = _boolean("WEBCALL_REQUIRE_TICKET", env["WEBCALL_REQUIRE_TICKET"])
        if env.get("WEBCALL_STRICT_AGENTS", "").strip():
            values["strict_agents"] = _boolean("WEBCALL_STRICT_AGENTS", env["WEBCALL_STRICT_AGENTS"])
        if env.get("WEBCALL_RATE_LIMIT", "").strip():
            values["rate_limit"], values["rate_limit_window"] = _rate("WEBCALL_RATE_LIMIT", env["WEBCALL_RATE_LIMIT"])
        if env.get("WEBCALL_CALLBACK_RATE_LIMIT", "").strip():
            values["callback_rate_limit"], values["callback_rate_window"] = _rate(
                "WEBCALL_CALLBACK_RATE_LIMIT", env["WEBCALL_CALLBACK_RATE_LIMIT"], default_window=3600
            )
        if env.get("WEBCALL_AGENTS", "").strip():
            values["agents"] = parse_agents(env["WEBCALL_AGENTS"])
        values.update(overrides)
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"Unknown configuration option(s): {', '.join(sorted(unknown))}.")
        return cls(**values)


def _ice_servers(servers: object) -> tuple[dict[str, Any], ...]:
    """``ice_servers`` checked and copied (a list of ``RTCIceServer`` dictionaries)."""
    where = "ice_servers (WEBCALL_ICE_SERVERS)"
    if isinstance(servers, Mapping) or not isinstance(servers, list | tuple):
        raise ConfigError(
            f'{where} must be a list of RTCIceServer objects, e.g. [{{"urls": "stun:stun.example.com"}}].'
        )
    if len(servers) > MAX_ICE_SERVERS:
        raise ConfigError(f"{where}: at most {MAX_ICE_SERVERS} servers; more only slow the browser's gathering down.")
    return tuple(check_ice_server(server, where=where) for server in servers)


def _ice_servers_json(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"WEBCALL_ICE_SERVERS is not JSON ({error.msg}); give a list of RTCIceServer objects."
        ) from None


def refuse_unprintable(setting: str, value: str) -> None:
    """Refuse a key or URL holding whitespace or a control or invisible character (a line break pasted with a key):
    it would reach an HTTP header or a URL as it is, and fail there with a traceback instead of a sentence."""
    for position, character in enumerate(value, start=1):
        if character in "\r\n":
            kind = "a line break"
        elif character == " ":
            kind = "a space"
        elif character.isspace():
            kind = "whitespace"
        elif unicodedata.category(character).startswith("C"):
            kind = "an invisible or control character"
        else:
            continue
        raise ConfigError(
            f"{setting} contains {kind} (character {position}): set it again as one line with nothing around it."
        )


def check_base_url(base_url: str) -> None:
    refuse_unprintable("DIALNEXA_BASE_URL", base_url)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"DIALNEXA_BASE_URL must be an absolute URL such as {DEFAULT_BASE_URL!r}.")
    if not parts.path.rstrip("/").endswith("/v1"):
        raise ConfigError(
            f"DIALNEXA_BASE_URL {base_url!r} has no '/v1': DialNexa retired its unversioned API on 2026-07-31. "
            f"Use {DEFAULT_BASE_URL!r}."
        )


def parse_agents(spec: str) -> dict[str, Agent]:
    """Parse ``WEBCALL_AGENTS``: ``alias=agent_id[@version][+var1+var2][;var=default...]`` separated by commas.

    ``+name`` entries list the variables visitors may supply and ``;name=value`` entries give defaults, e.g.
    ``sales=agent_x@2+name+company;name=there;company=your team``.
    """
    agents: dict[str, Agent] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        alias, sep, rest = item.partition("=")
        if not sep or not alias.strip() or not rest.strip():
            raise ConfigError(f"WEBCALL_AGENTS entry {item!r} must look like 'sales=agent_2g7Xy3tY53gRlp'.")
        spec_part, *default_parts = rest.strip().split(";")
        ident, *visitor = spec_part.strip().split("+")
        agent_id, at, version = ident.partition("@")
        try:
            number = int(version) if at else None
        except ValueError:
            raise ConfigError(f"WEBCALL_AGENTS entry {item!r}: the version after '@' must be a number.") from None
        defaults: dict[str, str] = {}
        for part in default_parts:
            name, equals, value = part.partition("=")
            if not equals or not name.strip():
                raise ConfigError(f"WEBCALL_AGENTS entry {item!r}: a default must look like ';name=value'.")
            if AGENT_SPEC_PATTERN.match(value.strip()):
                raise ConfigError(
                    f"WEBCALL_AGENTS entry {item!r}: ';{part.strip()}' looks like another agent, not a default value; "
                    f"separate agents with ',': {item.replace(';' + part, ',' + part, 1)}"
                )
            defaults[name.strip()] = value.strip()
        agents[alias.strip()] = Agent(
            id=agent_id.strip(), version=number, visitor_variables=frozenset(visitor), defaults=defaults
        )
    return agents


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}.")


def _rate(name: str, raw: str, *, default_window: float = 60) -> tuple[int, float]:
    count, _, window = raw.strip().partition("/")
    try:
        return int(count), float(window or default_window)
    except ValueError:
        raise ConfigError(f"{name} must look like '10/60' (requests per seconds), got {raw!r}.") from None


def _country_codes(value: str | tuple[str, ...] | list[str] | frozenset[str] | None) -> tuple[str, ...]:
    """``callback_countries`` as sorted, upper-case ISO 3166 alpha-2 codes (``"us, ca"`` or a collection of codes);
    a code no phone numbering plan is known for is refused."""
    if isinstance(value, str) or value is None:
        value = _secret_list(value)
    if any(not isinstance(code, str) for code in value):
        raise ConfigError("callback_countries must be ISO 3166 alpha-2 codes such as 'US', 'CA', 'GB'.")
    codes = sorted({code.strip().upper() for code in value if code.strip()})
    for code in codes:
        if code not in SUPPORTED_REGIONS:
            hint = " (the United Kingdom is GB)" if code == "UK" else ""
            raise ConfigError(
                f"callback_countries (WEBCALL_CALLBACK_COUNTRIES): {code!r} is not an ISO 3166 alpha-2 country code"
                f"{hint}; list the countries call-backs may ring, e.g. 'US,CA,GB'."
            )
    return tuple(codes)


def _normalise_origin(origin: str) -> str:
    refuse_unprintable("allowed origin (WEBCALL_ALLOWED_ORIGINS)", origin.strip())
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ConfigError(f"Allowed origin {origin!r} must be scheme://host[:port], e.g. 'https://shop.example.com'.")
    return f"{parts.scheme}://{parts.netloc.lower()}"
