"""``create_app()`` builds the plugin's sub-application; ``setup()`` mounts it in a host app and returns its handle.

All lifetimes (the DialNexa client, the store, the embedded emulator) are opened and closed in one ``cleanup_ctx``.
The host application is never touched beyond ``add_subapp``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import jinja2
from aiohttp import web

from . import views
from .bus import CallbackList, DeadLetter, EventBus
from .config import Agent, WebCallConfig
from .dialnexa import AgentInfo, DialNexaClient
from .dialnexa.models import CallRecord
from .errors import ConfigError, DialNexaConflict, DialNexaError, DialNexaNotFound, WebCallError
from .keys import WEBCALL
from .metrics import Metrics
from .resources import Asset, templates_dir, widget_asset
from .store import MemoryStore, Store
from .store.base import Subscription
from .tokens import TokenIssuer

log = logging.getLogger("webcall")

T = TypeVar("T")

WEBHOOK_EVENTS = ("call_initiated", "call_ended", "transfer_completed")

# Aliases offered when the plugin runs on its embedded emulator without agents of its own.
EMULATOR_AGENTS = {
    "sales": Agent(id="agent_sales", visitor_variables=frozenset({"name", "company"}), label="Sales"),
    "support": Agent(id="agent_support", visitor_variables=frozenset({"name", "company"}), label="Support"),
    "collections": Agent(id="agent_collections", visitor_variables=frozenset({"name", "company"}), label="Accounts"),
}


async def maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class WebCall:
    """The handle of one mounted plugin: its configuration, state, and the Python API for the host."""

    def __init__(self, config: WebCallConfig, app: web.Application) -> None:
        self.config = config
        self.app = app
        self.tokens = TokenIssuer(config.session_secrets)
        self.agents: dict[str, Agent] = dict(config.agents)
        self.agent_info: dict[str, AgentInfo] = {}
        self.required_variables: dict[str, frozenset[str]] = {}
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()), autoescape=True, enable_async=False
        )
        self._store: Store | None = None
        self._client: DialNexaClient | None = None
        self._bus: EventBus | None = None
        self.emulator: Any = None  # webcall.emulator.EmulatorServer when running on the embedded emulator
        self.on_call_event = CallbackList()
        self.streams: set[Subscription] = set()  # open SSE streams, closed on shutdown
        self.metrics = Metrics(lambda: len(self.streams))
        self.webhook_secrets: tuple[str, ...] = config.webhook_secrets
        self.webhook_url: str | None = None
        self._webhook_lock = asyncio.Lock()

    # -- state opened at startup -------------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            raise WebCallError("webcall is not started: mount it with webcall.setup() and run the host app")
        return self._store

    @property
    def client(self) -> DialNexaClient:
        if self._client is None:
            raise WebCallError("webcall is not started: mount it with webcall.setup() and run the host app")
        return self._client

    @property
    def bus(self) -> EventBus:
        if self._bus is None:
            raise WebCallError("webcall is not started: mount it with webcall.setup() and run the host app")
        return self._bus

    @property
    def widget(self) -> Asset:
        return widget_asset()

    @property
    def widget_sri(self) -> str:
        """The Subresource Integrity hash of the widget, for ``<script integrity=...>``."""
        return self.widget.sri

    @property
    def media_origin(self) -> str:
        """The origin browsers reach for call media (WHIP): add it to your pages' CSP ``connect-src``."""
        if self.emulator is not None:
            return str(self.emulator.origin)
        scheme, _, rest = self.client.base_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"

    @property
    def content_security_policy(self) -> str:
        """A strict policy that lets the widget run on a page: ``default-src 'self'`` plus the media origin."""
        return f"default-src 'self'; connect-src 'self' {self.media_origin}; img-src 'self' data:"

    def url(self, name: str, **parts: str) -> str:
        """The path of one of the plugin's routes, with the mount prefix."""
        return str(self.app.router[name].url_for(**parts))

    @property
    def widget_url(self) -> str:
        """The widget's versioned path (cached for a year by browsers; changes when the widget does)."""
        return f"{self.url('widget')}?v={self.widget.version}"

    # -- host API ----------------------------------------------------------------------------------------------
    async def end_call(self, call_id: str, *, reason: str | None = None) -> CallRecord | None:
        """Hang a call up through DialNexa and free its concurrent-call slot.

        ``reason`` is recorded as the call's end reason (DialNexa's default when omitted: the agent ended it)."""
        try:
            record = await self.client.end_call(call_id, reason=reason)
        except DialNexaConflict:
            record = None  # it had already ended
        await self.call_finished(call_id)
        log.info("call %s: ended through the API", call_id)
        return record

    async def call_finished(self, call_id: str) -> None:
        """Free what a call held: its concurrent-call slot and its maximum-length deadline."""
        context = await self.store.get_context(call_id)
        if context and context.get("slot_id"):
            await self.store.release_slot(str(context["slot_id"]))
        await self.store.deadline_clear(call_id)

    async def _end_at_deadline(self, call_id: str) -> None:
        log.info("call %s: maximum call length reached; hanging up", call_id)
        try:
            await self.end_call(call_id)
        except DialNexaError as err:
            log.warning("call %s: could not hang up at the maximum call length: %s", call_id, err)

    async def dead_letters(self) -> list[DeadLetter]:
        """Callback deliveries that kept failing, oldest first."""
        return await self.bus.dead_letters()

    async def replay(self, letter_id: str) -> bool:
        """Deliver a dead letter's event to its callback again; False when there is no such letter."""
        return await self.bus.replay(letter_id)

    async def ensure_webhook(self, url: str | None = None) -> str:
        """Make sure exactly one DialNexa webhook subscription points at this plugin's ``/webhooks`` route.

        Finds subscriptions by URL; creates one, or updates the one found (active, events, current secret), and
        deletes duplicates. Returns the subscription id.
        """
        target = url or self._webhook_target()
        if not self.webhook_secrets:
            raise ConfigError("Set webhook_secrets (WEBCALL_WEBHOOK_SECRETS) before registering a webhook.")
        async with self._webhook_lock:
            hooks = [h for h in await self.client.list_webhooks() if h.url == target]
            events, secret = list(WEBHOOK_EVENTS), self.webhook_secrets[0]
            if not hooks:
                hook = await self.client.create_webhook(url=target, events=events, secret=secret)
                log.info("webcall: registered DialNexa webhook %s -> %s", hook.id, target)
            else:
                hook, extra = hooks[0], hooks[1:]
                hook = await self.client.update_webhook(
                    hook.id, url=target, events=events, secret=secret, is_active=True
                )
                for dup in extra:
                    await self.client.delete_webhook(dup.id)
                log.info(
                    "webcall: DialNexa webhook %s -> %s is up to date%s",
                    hook.id,
                    target,
                    f" ({len(extra)} duplicate(s) removed)" if extra else "",
                )
            self.webhook_url = target
            return hook.id

    def _webhook_target(self) -> str:
        if not self.config.public_url:
            raise ConfigError("Set public_url (WEBCALL_PUBLIC_URL) so DialNexa knows where to send webhooks.")
        return self.config.public_url.rstrip("/") + self.url("webhooks")

    async def ensure_webhook_for(self, origin: str) -> None:
        """On the embedded emulator, register this site's webhook route the first time its address is known."""
        if self.webhook_url is not None or not self.config.uses_emulator:
            return
        try:
            await self.ensure_webhook(origin.rstrip("/") + self.url("webhooks"))
        except (DialNexaError, ConfigError) as err:
            log.warning("webcall: could not register the emulator's webhook: %s", err)

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def _open(self) -> None:
        config = self.config
        self._store = make_store(config.store)
        api_key, base_url = config.api_key, config.base_url
        if config.uses_emulator:
            api_key, base_url = await self._start_emulator()
        assert api_key is not None
        self._client = DialNexaClient(
            api_key=api_key,
            base_url=base_url,
            web_call_path=config.web_call_path,
            end_call_path=config.end_call_path,
            timeout=config.upstream_timeout,
            deadline=config.upstream_deadline,
            observer=self.metrics.upstream_call,
        )
        if config.generated_session_secret:
            log.info("webcall: no WEBCALL_SESSION_SECRET set; tokens are signed with a per-process secret")
        self._bus = EventBus(
            self._store,
            self.on_call_event,
            callback_timeout=config.callback_timeout,
            attempts=config.callback_attempts,
            on_deadline=self._end_at_deadline,
            metrics=self.metrics,
        )
        if config.outbox_reclaim_seconds is not None:
            self._bus.reclaim_after = config.outbox_reclaim_seconds
        self._bus.start()
        await self._check_agents()
        if config.public_url and self.webhook_secrets and not config.uses_emulator:
            try:
                await self.ensure_webhook()
            except DialNexaError as err:
                log.error("webcall: could not register the DialNexa webhook: %s", err)

    async def _start_emulator(self) -> tuple[str, str]:
        from .emulator.config import EmulatorConfig
        from .emulator.server import EmulatorServer

        key = f"emu_{secrets.token_hex(8)}:{secrets.token_urlsafe(24)}"
        if not self.webhook_secrets:
            self.webhook_secrets = (secrets.token_urlsafe(32),)
        self.emulator = EmulatorServer(EmulatorConfig(api_keys=frozenset({key})), port=self.config.emulator_port)
        await self.emulator.start()
        if not self.agents:
            self.agents = dict(EMULATOR_AGENTS)
        log.warning(
            "webcall: DIALNEXA_API_KEY is not set; calls go to the local DialNexa emulator at %s",
            self.emulator.base_url,
        )
        return str(self.emulator.api_key), str(self.emulator.base_url)

    async def _check_agents(self) -> None:
        problems: list[str] = []
        for alias, agent in self.agents.items():
            try:
                info = await self.client.get_agent(agent.id)
            except DialNexaNotFound:
                problems.append(f"agent {alias!r} ({agent.id}) does not exist at DialNexa")
                continue
            except DialNexaError as err:
                log.warning("webcall: could not check agent %r (%s) at startup: %s", alias, agent.id, err)
                continue
            if info.versions and info.version(agent.version) is None:
                which = f"version {agent.version}" if agent.version else "any version"
                problems.append(f"agent {alias!r} ({agent.id}) has no published {which}")
                continue
            self.agent_info[alias] = info
            self.required_variables[alias] = info.required_variables(agent.version)
            log.info(
                "webcall: agent %r is %s%s; its messages use %s",
                alias,
                agent.id,
                f" v{agent.version}" if agent.version else "",
                ", ".join(f"{{{{{n}}}}}" for n in sorted(self.required_variables[alias])) or "no variables",
            )
        for problem in problems:
            log.error("webcall: %s", problem)
        if problems and self.config.strict_agents:
            raise ConfigError("; ".join(problems) + ". Fix the agents in the configuration (strict_agents is on).")

    async def _close(self) -> None:
        if self._bus is not None:
            await self._bus.stop()
            self._bus = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self.emulator is not None:
            await self.emulator.stop()
            self.emulator = None


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    webcall = app[WEBCALL]
    try:
        await webcall._open()
        yield
    finally:
        await webcall._close()


def make_store(url: str) -> Store:
    if url == "memory":
        return MemoryStore()
    try:
        from .store.redis import RedisStore
    except ImportError as err:
        raise ConfigError("WEBCALL_STORE is a Redis URL: install dialnexa-webcall[redis].") from err
    return RedisStore(url)


async def _close_streams(app: web.Application) -> None:
    for subscription in list(app[WEBCALL].streams):
        await subscription.close()


def create_app(config: WebCallConfig | None = None) -> web.Application:
    """The plugin as an aiohttp application, to mount under a prefix (see :func:`setup`)."""
    config = config if config is not None else WebCallConfig.from_env()
    app = web.Application(middlewares=[views.error_middleware], client_max_size=config.max_body_bytes)
    app[WEBCALL] = WebCall(config, app)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_close_streams)
    views.add_routes(app)
    return app


def setup(host: web.Application, config: WebCallConfig | None = None, *, prefix: str = "/webcall") -> WebCall:
    """Mount the plugin into ``host`` under ``prefix`` and return its handle."""
    if not prefix.startswith("/") or prefix.endswith("/") or prefix == "/":
        raise ConfigError("prefix must look like '/webcall' (a leading slash, no trailing slash).")
    app = create_app(config)
    host.add_subapp(prefix, app)
    return app[WEBCALL]
