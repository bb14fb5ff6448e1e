"""What the plugin talks to: a DialNexa account, described by one value.

The plugin consumes an :class:`Upstream` and never asks what is behind it. :func:`open_upstream` yields the account
the configuration names (``api_key`` and ``base_url``); without an API key it yields the embedded local emulator,
which the ``emulator`` extra provides. That lazy import of :mod:`webcall.embedded` (the adapter, which imports the
emulator) is the one place the rest of the plugin reaches for the emulator.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .config import Agent, WebCallConfig
from .errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """One DialNexa API the plugin can use.

    ``agents`` and ``webhook_secret`` are what the upstream offers when the host configured none (the embedded
    emulator seeds both). ``learns_public_url`` is true when the upstream can reach the host at whatever origin the
    host's first request arrived on (a local upstream on the same machine), so the webhook is registered then.
    """

    name: str
    api_key: str = field(repr=False)
    base_url: str
    media_origin: str
    agents: Mapping[str, Agent] = field(default_factory=dict)
    webhook_secret: str | None = field(default=None, repr=False)
    learns_public_url: bool = False
    max_calls: int | None = None
    """How many calls the upstream carries at once, when it says (the embedded emulator's media server); the plugin's
    concurrent-call cap never exceeds it, so a visitor beyond it hears "all lines are busy", not a failure."""

    def call_cap(self, configured: int) -> int:
        """The concurrent-call cap to apply: the configured one, or what the upstream carries if that is lower."""
        return configured if self.max_calls is None else min(configured, self.max_calls)

    @functools.cached_property
    def is_local(self) -> bool:
        """Whether the upstream runs on this machine: its base URL's host is loopback (the embedded emulator, or
        ``python -m webcall.emulator`` reached through ``DIALNEXA_BASE_URL=http://127.0.0.1:...``). Its media server
        can then reach the browser's loopback and private addresses, which a DialNexa on the Internet cannot. Worked out
        once (every start and ICE fragment asks)."""
        host = (urlsplit(self.base_url).hostname or "").rstrip(".")
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def content_security_policy(self) -> str:
        """A strict policy for a page that embeds the widget from its own origin. The browser talks HTTP only to the
        plugin; the call's audio (ICE/UDP) is not governed by ``connect-src``."""
        return "default-src 'self'; img-src 'self' data:"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@contextlib.asynccontextmanager
async def open_upstream(config: WebCallConfig) -> AsyncIterator[Upstream]:
    """The upstream the configuration names, open for as long as the context lasts."""
    if config.api_key is not None:
        yield Upstream(
            name="dialnexa", api_key=config.api_key, base_url=config.base_url, media_origin=origin_of(config.base_url)
        )
        return
    try:
        from .embedded import embedded_emulator
    except ImportError as err:
        raise ConfigError(
            "DIALNEXA_API_KEY is not set and the local emulator is not installed: set the key, "
            "or install dialnexa-webcall[emulator] to run on the emulator."
        ) from err
    async with embedded_emulator(port=config.emulator_port) as upstream:
        yield upstream
