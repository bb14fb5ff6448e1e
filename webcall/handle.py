"""The host's handle on one mounted plugin: callbacks, hang-ups, dead letters, the webhook, and page helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .bus import CallbackList, DeadLetter
from .config import WebCallConfig
from .dialnexa.models import CallRecord, WebCallSession
from .errors import ConfigError
from .resources import widget_asset
from .runtime import Runtime


class WebCall:
    """What :func:`webcall.setup` returns. Register callbacks before the host app starts; the rest works while it runs.

    ::

        handle = webcall.setup(app, config)

        @handle.on_call_event.on("call.ended")
        async def ended(event: webcall.CallEvent) -> None: ...
    """

    def __init__(self, runtime: Runtime, app: web.Application) -> None:
        self._runtime = runtime
        self.app = app
        """The plugin's own sub-application (mounted in the host under the prefix)."""

    @property
    def config(self) -> WebCallConfig:
        return self._runtime.config

    @property
    def on_call_event(self) -> CallbackList:
        """Host callbacks for call events: ``.append(fn)``, or the decorator ``.on("call.ended", ...)``."""
        return self._runtime.callbacks

    # -- calls -----------------------------------------------------------------------------------------------------
    async def create_web_call(self, alias: str, variables: Mapping[str, str] | None = None) -> WebCallSession:
        """A raw DialNexa web-call descriptor (access token, WHIP URL, ICE servers) for host code that speaks WHIP
        itself, e.g. a native app's backend. Never hand it to a browser: the widget's start request does the WHIP
        exchange server-side. Raises ``ConfigError`` for an unknown alias and ``DialNexaError`` from DialNexa."""
        agent = self._runtime.catalog.get(alias)
        if agent is None:
            raise ConfigError(f"No agent is configured under the alias {alias!r}.")
        values = {**agent.defaults, **(variables or {})}
        return await self._runtime.client.create_web_call(
            agent_id=agent.id, agent_version_number=agent.version, metadata=values
        )

    @property
    def agent_aliases(self) -> tuple[str, ...]:
        """The aliases visitors may call, in the configured order (the emulator's seeded agents when it runs)."""
        return tuple(self._runtime.catalog.aliases())

    async def health(self) -> dict[str, Any]:
        """What ``{prefix}/healthz`` answers: ``{"status": "ok", "store", "upstream", "agents", "active_calls"}``,
        or ``{"status": "unavailable", ...}`` when the store does not answer."""
        return await self._runtime.health()

    async def end_call(self, call_id: str, *, reason: str | None = None) -> CallRecord | None:
        """Hang a call up through DialNexa and free its concurrent-call slot; None when it had already ended.

        ``reason`` is recorded as the call's end reason (DialNexa's default when omitted: the agent ended it).
        Raises :class:`webcall.DialNexaError` when DialNexa cannot be reached or refuses."""
        return await self._runtime.desk.end(call_id, reason=reason)

    async def dead_letters(self) -> list[DeadLetter]:
        """Callback deliveries that kept failing, oldest first."""
        return await self._runtime.bus.dead_letters()

    async def replay(self, letter_id: str) -> bool:
        """Deliver a dead letter's event to its callback again; False when there is no such letter."""
        return await self._runtime.bus.replay(letter_id)

    async def ensure_webhook(self, url: str | None = None) -> str:
        """Make sure exactly one DialNexa webhook subscription points at this plugin's ``/webhooks`` route (at
        ``url``, by default ``public_url`` plus the route's path); returns the subscription id."""
        if url is None:
            if not self.config.public_url:
                raise ConfigError("Set public_url (WEBCALL_PUBLIC_URL) so DialNexa knows where to send webhooks.")
            url = self.config.public_url.rstrip("/") + self.url("webhooks")
        return await self._runtime.subscription.ensure(url)

    # -- pages -----------------------------------------------------------------------------------------------------
    def url(self, name: str, **parts: str) -> str:
        """The path of one of the plugin's routes (``widget``, ``sessions``, ``webhooks``…), with the mount prefix."""
        return str(self.app.router[name].url_for(**parts))

    @property
    def widget_url(self) -> str:
        """The widget's versioned path (cached for a year by browsers; changes when the widget does)."""
        return f"{self.url('widget')}?v={widget_asset().version}"

    @property
    def widget_sri(self) -> str:
        """The Subresource Integrity hash of the widget, for ``<script integrity=...>``."""
        return widget_asset().sri

    @property
    def media_origin(self) -> str:
        """The origin of DialNexa's media (WHIP) endpoint. Server-side knowledge: browsers reach only the plugin over
        HTTP, and the call's audio (ICE/UDP) is not governed by a page's CSP."""
        return self._runtime.upstream.media_origin

    @property
    def content_security_policy(self) -> str:
        """A strict policy for a page that embeds the widget from its own origin: ``default-src 'self'`` (plus
        ``img-src data:``). For an embed from another origin, add the plugin's origin to ``script-src`` and
        ``connect-src``."""
        return self._runtime.upstream.content_security_policy
