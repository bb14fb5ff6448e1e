"""The emulator's configuration: one frozen, keyword-only dataclass validated on construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from webcall.emulator.state import EmulatedAgent, default_agents

DEFAULT_API_KEY = "emu_key:emu_secret"
# DialNexa's dashboard limits for webhook deliveries.
WEBHOOK_RETRIES_MAX = 3
WEBHOOK_TIMEOUT_MIN, WEBHOOK_TIMEOUT_MAX = 1.0, 60.0


def _default_api_keys() -> frozenset[str]:
    return frozenset({DEFAULT_API_KEY})


DTLS_SETUPS = ("passive", "active")
"""The DTLS roles an answer may take (RFC 8842): ``passive`` waits for the browser's handshake, ``active`` opens it."""


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """How one emulator instance behaves.

    ``api_keys`` are the bearer keys the REST API accepts; ``agents`` the agents it knows (each app works on its own
    copy); ``token_ttl`` the lifetime in seconds of a web call's media token; ``public_url`` the origin a browser
    uses to reach the emulator (default: the origin of each request); ``phone_ring_seconds`` and
    ``phone_talk_seconds`` pace the simulated phone calls; ``max_media_sessions`` caps simultaneous WHIP sessions
    (further offers get 503), ``media_connect_timeout`` ends a session whose media never connects, and
    ``media_dtls_setup`` is the DTLS role of its SDP answers: ``passive`` (the browser opens the handshake and the
    agent's first audio arrives as the browser reports the connection) or ``active`` (one round trip later).

    Webhook deliveries follow DialNexa's semantics: ``webhook_retries`` further attempts (0 to 3) after a timeout, a
    connection error or a non-2xx answer, each attempt limited to ``webhook_timeout`` seconds (1 to 60), waiting
    ``webhook_backoff * 2**n`` seconds before retry n+1. ``webhook_seed`` makes the probabilistic webhook faults
    reproducible (default: a fresh random seed per emulator).
    """

    api_keys: frozenset[str] = field(default_factory=_default_api_keys, repr=False)
    agents: Mapping[str, EmulatedAgent] = field(default_factory=default_agents)
    token_ttl: float = 30.0
    public_url: str | None = None
    phone_ring_seconds: float = 0.3
    phone_talk_seconds: float = 1.5
    webhook_retries: int = WEBHOOK_RETRIES_MAX
    webhook_timeout: float = 10.0
    webhook_backoff: float = 0.2
    webhook_seed: int | None = None
    max_media_sessions: int = 16
    media_connect_timeout: float = 30.0
    media_dtls_setup: str = "passive"
    ice_servers: tuple[Mapping[str, Any], ...] = ()
    """The ``media.ice_servers`` of every web call it creates (DialNexa's own STUN/TURN for the call)."""

    def __post_init__(self) -> None:
        keys = frozenset(self.api_keys)
        if not keys or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ValueError(
                "EmulatorConfig.api_keys must hold at least one non-empty key such as 'emu_key:emu_secret'"
            )
        object.__setattr__(self, "api_keys", keys)
        for agent_id, agent in self.agents.items():
            if agent_id != agent.id:
                raise ValueError(f"EmulatorConfig.agents: key {agent_id!r} does not match the agent's id {agent.id!r}")
        if self.token_ttl <= 0:
            raise ValueError("EmulatorConfig.token_ttl must be a positive number of seconds")
        if self.phone_ring_seconds < 0 or self.phone_talk_seconds < 0:
            raise ValueError("EmulatorConfig.phone_ring_seconds and phone_talk_seconds must not be negative")
        if isinstance(self.webhook_retries, bool) or not isinstance(self.webhook_retries, int):
            raise ValueError("EmulatorConfig.webhook_retries must be an integer from 0 to 3")
        if not 0 <= self.webhook_retries <= WEBHOOK_RETRIES_MAX:
            raise ValueError(f"EmulatorConfig.webhook_retries must be from 0 to 3, not {self.webhook_retries}")
        if not WEBHOOK_TIMEOUT_MIN <= self.webhook_timeout <= WEBHOOK_TIMEOUT_MAX:
            raise ValueError(
                f"EmulatorConfig.webhook_timeout must be from 1 to 60 seconds, not {self.webhook_timeout:g}"
            )
        if self.media_dtls_setup not in DTLS_SETUPS:
            raise ValueError(
                f"EmulatorConfig.media_dtls_setup must be passive or active, not {self.media_dtls_setup!r}"
            )
        if self.max_media_sessions < 1 or self.media_connect_timeout <= 0:
            raise ValueError("EmulatorConfig.max_media_sessions and media_connect_timeout must be positive")
        if self.webhook_backoff < 0:
            raise ValueError("EmulatorConfig.webhook_backoff must not be negative")
        if self.webhook_seed is not None and (
            isinstance(self.webhook_seed, bool) or not isinstance(self.webhook_seed, int)
        ):
            raise ValueError("EmulatorConfig.webhook_seed must be an integer or None")
        if self.public_url is not None:
            parts = urlsplit(self.public_url)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path.strip("/")
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"EmulatorConfig.public_url must be an origin such as 'http://127.0.0.1:8700', "
                    f"not {self.public_url!r}"
                )
            object.__setattr__(self, "public_url", f"{parts.scheme}://{parts.netloc}")
