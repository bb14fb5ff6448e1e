"""Server-sent events with no task per stream: the reader's own wait doubles as the ping timer.

An idle stream costs one suspended handler and the connection; there is no separate ping task, no queue object.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


class EventStream:
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
