"""What the plugin opens at startup and closes at shutdown: the upstream, the store, the DialNexa client, the event
bus, the agent catalog, the call desk, and the tasks that end calls at their deadline and reconcile open calls. The
routes and the host's handle share one :class:`Runtime`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .bus import CallbackList, EventBus
from .calls import CallDesk
from .catalog import AgentCatalog
from .config import WebCallConfig
from .deadlines import CallDeadlines
from .dialnexa import DialNexaClient
from .errors import ConfigError, DialNexaError, StoreUnavailable, WebCallError
from .limits import EventStreams, event_streams_for, raise_open_files_limit
from .metrics import Metrics
from .outage import watch_store
from .reconcile import Reconciler
from .startup import start_with_dialnexa
from .store import MemoryStore, Store
from .subscription import ManagedSubscription
from .tickets import TicketVerifier
from .tokens import TokenIssuer
from .upstream import Upstream, open_upstream

log = logging.getLogger("webcall")


def make_store(url: str) -> Store:
    if url == "memory":
        return MemoryStore()
    try:
        from .store.redis import RedisStore
    except ImportError as err:
        raise ConfigError("WEBCALL_STORE is a Redis URL: install dialnexa-webcall[redis].") from err
    return RedisStore(url)


def make_client(
    config: WebCallConfig,
    *,
    api_key: str,
    base_url: str,
    observer: Callable[[str, str, float], None] | None = None,
) -> DialNexaClient:
    """The DialNexa client for ``config`` (paths, timeouts) against the account ``api_key`` at ``base_url``."""
    return DialNexaClient(
        api_key=api_key,
        base_url=base_url,
        web_call_path=config.web_call_path,
        end_call_path=config.end_call_path,
        timeout=config.upstream_timeout,
        deadline=config.upstream_deadline,
        observer=observer,
    )


@dataclass(frozen=True, kw_only=True)
class Started:
    upstream: Upstream
    store: Store
    client: DialNexaClient
    bus: EventBus
    catalog: AgentCatalog
    desk: CallDesk
    subscription: ManagedSubscription


class Runtime:
    """The plugin's state: what exists from construction (config, tokens, callbacks, open streams, metrics) and
    what :meth:`running` opens for the application's lifetime."""

    def __init__(self, config: WebCallConfig) -> None:
        self.config = config
        self.tokens = TokenIssuer(config.session_secrets)
        self.tickets = (
            TicketVerifier(config.ticket_secrets, audience=config.ticket_audience) if config.ticket_secrets else None
        )
        self.callbacks = CallbackList()
        self.streams = EventStreams(total=config.max_event_streams or event_streams_for(None))
        """Every open SSE stream: the caps per call and in total (sized at startup), closed at shutdown."""
        self.metrics = Metrics(lambda: len(self.streams))
        self.refuse_unworkable = config.strict_agents
        """Whether start-up fails (ConfigError) when DialNexa refuses the key, cannot be reached, or will not register
        the webhook; otherwise that is logged and the plugin runs on. ``python -m webcall serve`` always refuses."""
        self._started: Started | None = None

    def _require(self) -> Started:
        if self._started is None:
            raise WebCallError("webcall is not started: mount it with webcall.setup() and run the host app")
        return self._started

    @property
    def upstream(self) -> Upstream:
        return self._require().upstream

    @property
    def store(self) -> Store:
        return self._require().store

    @property
    def client(self) -> DialNexaClient:
        return self._require().client

    @property
    def bus(self) -> EventBus:
        return self._require().bus

    @property
    def catalog(self) -> AgentCatalog:
        return self._require().catalog

    @property
    def desk(self) -> CallDesk:
        return self._require().desk

    @property
    def subscription(self) -> ManagedSubscription:
        return self._require().subscription

    @contextlib.asynccontextmanager
    async def running(self, *, webhook_path: str) -> AsyncIterator[None]:
        """Open everything for the application's lifetime; ``webhook_path`` is where the plugin receives webhooks."""
        config = self.config
        self._size_streams()
        async with contextlib.AsyncExitStack() as stack:
            upstream = await stack.enter_async_context(open_upstream(config))
            store = make_store(config.store)
            watch_store(store, config.store)
            stack.push_async_callback(store.close)
            client = make_client(
                config, api_key=upstream.api_key, base_url=upstream.base_url, observer=self.metrics.upstream_call
            )
            stack.push_async_callback(client.aclose)
            catalog = AgentCatalog(config.agents or upstream.agents)
            bus = EventBus(
                store,
                self.callbacks,
                callback_timeout=config.callback_timeout,
                attempts=config.callback_attempts,
            )
            if config.outbox_reclaim_seconds is not None:
                bus.reclaim_after = config.outbox_reclaim_seconds
            desk = CallDesk(
                store=store,
                client=client,
                bus=bus,
                tokens=self.tokens,
                catalog=catalog,
                metrics=self.metrics,
                max_concurrent_calls=upstream.call_cap(config.max_concurrent_calls),
                max_call_seconds=config.max_call_seconds,
            )
            webhook_secrets = config.webhook_secrets or ((upstream.webhook_secret,) if upstream.webhook_secret else ())
            subscription = ManagedSubscription(client, webhook_secrets, config.webhook_events)
            self._started = Started(
                upstream=upstream,
                store=store,
                client=client,
                bus=bus,
                catalog=catalog,
                desk=desk,
                subscription=subscription,
            )
            stack.callback(self._forget)
            if config.generated_session_secret:
                log.info("webcall: no WEBCALL_SESSION_SECRET set; tokens are signed with a per-process secret")
            bus.start()
            stack.push_async_callback(bus.stop)
            deadlines = CallDeadlines(store, desk.end_at_deadline)
            deadlines.start()
            stack.push_async_callback(deadlines.stop)
            reconciler = Reconciler(desk)
            reconciler.start()
            stack.push_async_callback(reconciler.stop)
            await start_with_dialnexa(
                config,
                upstream=upstream,
                client=client,
                catalog=catalog,
                subscription=subscription,
                webhook_path=webhook_path,
                refuse=self.refuse_unworkable,
            )
            yield

    def _size_streams(self) -> None:
        """Raise the open-files limit to its hard limit and size the event-stream cap from it (unless configured);
        one log line says what this process can hold."""
        before, after = raise_open_files_limit()
        room = event_streams_for(after)
        configured = self.config.max_event_streams
        self.streams.total = configured or room
        limit = "unknown" if after is None else str(after) if before == after else f"{before} -> {after}"
        log.info(
            "webcall: open-files limit %s; up to %d event streams (%d per call)%s",
            limit,
            self.streams.total,
            self.streams.per_call,
            " as WEBCALL_MAX_EVENT_STREAMS says" if configured else "",
        )
        if configured and after is not None and configured > room:
            log.warning(
                "webcall: WEBCALL_MAX_EVENT_STREAMS=%d is more than the open-files limit of %d leaves room for "
                "(%d): event streams could take the descriptors that starts and other visitors need",
                configured,
                after,
                room,
            )

    def _forget(self) -> None:
        self._started = None

    async def learn_public_url(self, webhook_url: str) -> None:
        """On an upstream that reaches the host wherever its requests arrive, register the webhook the first time
        the site's address is known (from a request)."""
        if not self.upstream.learns_public_url or self.subscription.url is not None:
            return
        try:
            await self.subscription.ensure(webhook_url)
        except (DialNexaError, ConfigError) as err:
            log.warning("webcall: could not register the upstream's webhook: %s", err)

    async def health(self) -> dict[str, Any]:
        """Readiness: ``status`` is ``ok`` when the store answers; which store, upstream and agents, active calls. A
        store that cannot be reached or used (a Redis Cluster node named as one server) is ``unavailable``, with the
        ``reason``."""
        try:
            await self.store.ping()
            active_calls = await self.store.active_slots()
        except StoreUnavailable as err:
            return {"status": "unavailable", "store": "unavailable", "reason": str(err)}
        except Exception as err:
            log.warning("webcall: the store cannot be used: %s", type(err).__name__)
            return {
                "status": "unavailable",
                "store": "unavailable",
                "reason": f"the store failed ({type(err).__name__})",
            }
        return {
            "status": "ok",
            "store": "redis" if self.config.store != "memory" else "memory",
            "upstream": self.upstream.name,
            "agents": sorted(self.catalog.aliases()),
            "active_calls": active_calls,
        }

    async def close_streams(self) -> None:
        """End every open SSE stream (at shutdown, before the server waits for handlers)."""
        await self.streams.close_all()
