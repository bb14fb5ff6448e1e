"""Caps on what a stranger can hold open, so that one visitor cannot use up the process's open files.

* :func:`raise_open_files_limit` raises the soft ``RLIMIT_NOFILE`` to the hard limit at start-up (as Go's runtime
  does); :func:`event_streams_for` sizes the event-stream cap from the result.
* :class:`EventStreams` owns every browser event stream of the process: a few per call, a cap in total, ``503``
  with ``Retry-After`` beyond either, and the subscriptions closed at shutdown.
* :class:`PeerConnections` counts connections per peer address (IPv6 per /64, see :func:`webcall.guard.address_key`);
  :class:`PeerLimitedServer` closes a connection over the cap as soon as it is accepted, before reading it, and
  :class:`PeerLimitedRunner` serves an application with that server (``serve`` and gunicorn's aiohttp worker).
* :class:`AcceptErrorThrottle` is an event-loop exception handler that reports ``accept()`` failing for want of file
  descriptors once per interval with a count, instead of once per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .errors import HTTPProblem
from .guard import address_key
from .store.base import EventFeed

log = logging.getLogger("webcall")

# -- the open-files limit ---------------------------------------------------------------------------------------
try:
    import resource
except ImportError:  # Windows: no RLIMIT_NOFILE to raise
    resource = None  # type: ignore[assignment]

UNLIMITED_FALLBACK = 1 << 20
"""What the soft limit is raised to when the hard limit is "unlimited" (Linux's default ``nr_open``)."""
DARWIN_OPEN_MAX = 10240
"""macOS refuses a soft limit above ``OPEN_MAX`` whatever the hard limit says."""


def raise_open_files_limit() -> tuple[int | None, int | None]:
    """Raise the soft limit on open files to the hard limit (never lower it); ``(before, after)``, or
    ``(None, None)`` where the platform has no such limit. A refusal keeps the soft limit as it was."""
    if resource is None:
        return None, None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None, None
    target = UNLIMITED_FALLBACK if hard == resource.RLIM_INFINITY else hard
    for candidate in (target, DARWIN_OPEN_MAX):
        if candidate <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
        except (ValueError, OSError) as err:
            log.debug("webcall: cannot raise the open-files limit to %d: %s", candidate, err)
            continue
        return soft, candidate
    return soft, soft


def open_files_limit() -> int | None:
    """The soft limit on open files now; None where there is none."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


RESERVED_FILES = 256
"""Files kept out of the event-stream budget: listening sockets, the store, upstream connections, logs, the
interpreter's own."""
STREAMS_WITHOUT_A_LIMIT = 1000
"""The event-stream cap where the platform reports no open-files limit."""
FEWEST_EVENT_STREAMS = 16


def event_streams_for(open_files: int | None) -> int:
    """The event-stream cap for a process that may hold ``open_files`` files: half of what the reserve leaves (each
    stream holds one socket; the other half answers starts, pages and connections that are not streaming)."""
    if open_files is None:
        return STREAMS_WITHOUT_A_LIMIT
    return max(FEWEST_EVENT_STREAMS, (open_files - RESERVED_FILES) // 2)


# -- event streams ----------------------------------------------------------------------------------------------
STREAMS_PER_CALL = 3
"""Event streams one call's token may hold at once: a browser holds one, plus the overlap of a reconnect."""
STREAM_RETRY_SECONDS = 5


class EventStreams:
    """Every browser event stream of this process: the streams each call holds, the caps, and the subscriptions.

    A call holds at most ``per_call`` streams: a new one beyond that ends the call's oldest. A browser whose network
    dropped reconnects before the service can notice that its old stream is gone (at the next keep-alive ping), and
    it must never be refused because of its own dead stream; a stranger with the token still holds no more than
    ``per_call``. Beyond ``total`` streams in the process, a new one is refused (503) before anything is opened.

    The count is per process: a call's streams reach the worker that answers them, so with several workers each
    enforces its own caps.
    """

    def __init__(self, *, total: int, per_call: int = STREAMS_PER_CALL) -> None:
        self.total = total
        self.per_call = per_call
        self._by_call: dict[str, list[EventFeed]] = {}
        self._open = 0

    def __len__(self) -> int:
        """Streams held now."""
        return self._open

    def held_by(self, call_id: str) -> int:
        return len(self._by_call.get(call_id, ()))

    async def _make_room(self, call_id: str) -> None:
        """End the call's oldest streams while it holds ``per_call``; refuse when the process is full."""
        held = self._by_call.get(call_id, [])
        while len(held) >= self.per_call:
            oldest = held.pop(0)
            self._open -= 1
            await oldest.close()  # its relay sees the end of the feed and finishes the response
        if self._open >= self.total:
            raise HTTPProblem(
                503,
                "streams_full",
                "The server holds as many event streams as it can; try again shortly.",
                retry_after=STREAM_RETRY_SECONDS,
            )

    def _forget(self, call_id: str, subscription: EventFeed) -> None:
        held = self._by_call.get(call_id, [])
        if subscription in held:  # not ended to make room for a newer one
            held.remove(subscription)
            self._open -= 1
        if not held:
            self._by_call.pop(call_id, None)

    @contextlib.asynccontextmanager
    async def open(self, call_id: str, subscribe: Callable[[str], EventFeed]) -> AsyncIterator[EventFeed]:
        """Hold one stream of ``call_id`` with its subscription (from ``subscribe``), released and closed on exit;
        :class:`HTTPProblem` ``503`` when the process is full, before ``subscribe`` is called."""
        await self._make_room(call_id)
        subscription = subscribe(call_id)
        self._by_call.setdefault(call_id, []).append(subscription)
        self._open += 1
        try:
            yield subscription
        finally:
            self._forget(call_id, subscription)
            await subscription.close()

    async def close_all(self) -> None:
        """End every open stream's subscription (at shutdown, before the server waits for handlers)."""
        for held in list(self._by_call.values()):
            for subscription in list(held):
                await subscription.close()


# -- connections per peer address -------------------------------------------------------------------------------
class PeerConnections:
    """How many connections each peer group holds, against one cap for all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def admit(self, group: str) -> bool:
        """Count one more connection of ``group``; False (and nothing counted) when it holds ``limit`` already."""
        held = self._held.get(group, 0)
        if held >= self.limit:
            return False
        self._held[group] = held + 1
        return True

    def release(self, group: str) -> None:
        left = self._held.get(group, 0) - 1
        if left > 0:
            self._held[group] = left
        else:
            self._held.pop(group, None)

    def held_by(self, group: str) -> int:
        return self._held.get(group, 0)

    def __len__(self) -> int:
        """Peer groups holding a connection now."""
        return len(self._held)


class IntervalReport:
    """One log line per interval about something that may happen thousands of times a second: the first time at
    once, then at most once per ``interval`` seconds how many times it happened since the last line."""

    def __init__(self, describe: str, *, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.describe = describe
        self.interval = interval
        self._clock = clock
        self._reported_at: float | None = None
        self._unreported = 0
        self.total = 0

    def happened(self, detail: str) -> None:
        self.total += 1
        self._unreported += 1
        now = self._clock()
        if self._reported_at is None:
            log.warning("webcall: %s (%s); reported at most once per %g s", self.describe, detail, self.interval)
        elif now - self._reported_at >= self.interval:
            log.warning(
                "webcall: %s: %d times in the last %.0f s (latest: %s)",
                self.describe,
                self._unreported,
                now - self._reported_at,
                detail,
            )
        else:
            return
        self._reported_at = now
        self._unreported = 0


REFUSAL_REPORT_SECONDS = 10.0


class PeerLimitedServer(web.Server):
    """aiohttp's low-level server, closing a connection whose peer group already holds its cap as soon as it is
    accepted: nothing is read from it and it frees its file descriptor at once. Admitted connections are counted
    until they are lost."""

    def __init__(self, handler: Any, *, connections: PeerConnections, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.peer_connections = connections
        self._groups: dict[RequestHandler, str] = {}
        self.refusals = IntervalReport(
            f"connections refused beyond {connections.limit} per address", interval=REFUSAL_REPORT_SECONDS
        )

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            group = address_key(str(peer[0]))
            if not self.peer_connections.admit(group):
                # On the loop's next turn, once the handler waits for its first request (aborting sooner would end
                # the handler before it has started): it is then cancelled, as any idle connection that closes.
                # Nothing is read: the abort also drops the read the transport had scheduled.
                asyncio.get_running_loop().call_soon(transport.abort)
                self.refusals.happened(f"from {group}")
                return
            self._groups[handler] = group
        super().connection_made(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        group = self._groups.pop(handler, None)
        if group is not None:
            self.peer_connections.release(group)
        super().connection_lost(handler, exc)


class PeerLimitedRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose server is a :class:`PeerLimitedServer` (``connections_per_address``
    None: aiohttp's own server, e.g. behind a proxy that every connection comes from).

    gunicorn's aiohttp worker serves a runner that the application factory returns as it is, so the cap holds
    under ``gunicorn webcall.service:app -k aiohttp.GunicornWebWorker`` as well as in ``python -m webcall serve``.
    """

    def __init__(self, app: web.Application, *, connections_per_address: int | None, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.connections_per_address = connections_per_address

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the application's startup, then builds aiohttp's server
        if self.connections_per_address is None:
            return server
        return PeerLimitedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            connections=PeerConnections(self.connections_per_address),
            **server._kwargs,  # what aiohttp built its server with: the runner's settings and the app's handler_args
        )


# -- accept() errors --------------------------------------------------------------------------------------------
ACCEPT_REPORT_SECONDS = 10.0
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"
"""How asyncio's selector loop reports ``accept()`` failing with EMFILE, ENFILE, ENOBUFS or ENOMEM. Without the fix
for CPython gh-151615 (Python 3.11 here) the loop keeps accepting after such a failure: each wake-up reports up to
``backlog`` (128) times and schedules as many retries, which multiply, so a full descriptor table writes thousands
of tracebacks a second."""
ACCEPT_RETRY = "._start_serving("
"""In the message of a scheduled accept retry that failed: left over from such a burst, it fires after shutdown
closed the listening socket ("Invalid file descriptor: -1")."""


class AcceptErrorThrottle:
    """An event-loop exception handler: accept failures for want of file descriptors (and their stale retries) are
    logged once per interval with a count; everything else goes to the handler it replaced, or the loop's default.

    ``python -m webcall serve`` and ``webcall.service:app`` install it at start-up; a host serving the plugin in its
    own process installs it with ``AcceptErrorThrottle().install(asyncio.get_running_loop())``.
    """

    def __init__(self, *, interval: float = ACCEPT_REPORT_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.report = IntervalReport("accept() failed for want of file descriptors", interval=interval, clock=clock)
        self._previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Become ``loop``'s exception handler (once; a second install changes nothing)."""
        current = loop.get_exception_handler()
        if current is self:
            return
        self._previous = current
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message == ACCEPT_OUT_OF_RESOURCES or (
            message.startswith("Exception in callback") and ACCEPT_RETRY in message
        ):
            soft = open_files_limit()
            limit = f"; open-files limit {soft}" if soft is not None else ""
            self.report.happened(f"{context.get('exception') or message}{limit}")
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
