"""Server-sent events with no task per stream: the reader's own wait doubles as the ping timer.

An idle stream costs one suspended handler and the connection; there is no separate ping task, no queue object.
:meth:`EventStream.relay` is the whole loop, for the plugin's call events and for a host's own streams alike::

    box = webcall.Mailbox()  # the host's code puts items in it; box.close() ends the stream
    stream = webcall.EventStream(request)
    return await stream.relay(box, as_event=lambda item: webcall.ServerSentEvent(json.dumps(item)))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiohttp import web

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}
PING_SECONDS = 15.0
"""How long a stream stays silent before a comment line checks that the browser is still there."""

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class RelaySource(Protocol[T_co]):
    """Where a relayed stream's items come from: ``get`` waits for the next one, None once the source is closed (a
    :class:`~webcall.store.base.Mailbox`, a store's subscription to a call's events)."""

    async def get(self) -> T_co | None: ...


@dataclass(frozen=True)
class ServerSentEvent:
    """One event to send: ``data`` must not contain a line break (JSON from ``json.dumps`` never does); ``id`` is what
    the browser sends back as ``Last-Event-ID`` when it reconnects; ``last`` ends the stream after it."""

    data: str
    id: str | None = None
    last: bool = False


class EventStream:
    """A server-sent event stream to one browser: :meth:`relay` sends a source's items until it closes or the browser
    goes away; ``open``, ``send`` and ``ping`` are its steps, for a stream written by hand."""

    def __init__(self, request: web.Request, headers: Mapping[str, str] | None = None, *, retry_ms: int = 3000):
        self._request = request
        self._response = web.StreamResponse(headers={**HEADERS, **(headers or {})})
        self._retry_ms = retry_ms

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    async def open(self) -> None:
        await self._response.prepare(self._request)
        await self._response.write(f"retry: {self._retry_ms}\n\n".encode())

    async def send(self, data: str, *, id: str | None = None) -> None:
        """One unnamed event; ``data`` must not contain a line break (JSON from ``json.dumps`` never does)."""
        head = f"id: {id}\n" if id is not None else ""
        await self._response.write(f"{head}data: {data}\n\n".encode())

    async def ping(self) -> None:
        await self._response.write(b": ping\n\n")

    async def relay(
        self,
        source: RelaySource[T],
        *,
        as_event: Callable[[T], ServerSentEvent | None],
        backlog: Iterable[T] = (),
        ping_seconds: float | None = None,
    ) -> web.StreamResponse:
        """Open the stream and send what the browser should see: the ``backlog`` first, then each item of ``source``
        as it comes, each as ``as_event`` makes it (None: not sent), pinging after ``ping_seconds`` of quiet
        (:data:`PING_SECONDS` unless given). Returns the response when the source closes, a message is the last, or
        the browser goes away."""
        quiet_limit = PING_SECONDS if ping_seconds is None else ping_seconds
        try:
            await self.open()
            for earlier in backlog:
                if await self._send(as_event(earlier)):
                    return self._response
            while True:
                try:
                    async with asyncio.timeout(quiet_limit):
                        item = await source.get()
                except TimeoutError:
                    await self.ping()  # also how a vanished browser is noticed
                    continue
                if item is None or await self._send(as_event(item)):
                    return self._response
        except ConnectionResetError:  # the browser went away (closed tab, lost network): not an error
            return self._response

    async def _send(self, event: ServerSentEvent | None) -> bool:
        """Send ``event`` (nothing for None); True when it was the last."""
        if event is None:
            return False
        await self.send(event.data, id=event.id)
        return event.last
