"""Fault injection: make chosen routes slow, fail, hang or drop the connection, deterministically.

A fault targets ``"*"`` or one route key ``"<METHOD> <canonical path>"`` (``"POST /v1/web-calls"``,
``"GET /v1/calls/{id}"``). Kinds:

* ``latency`` — wait ``delay`` seconds, then handle the request normally (several latency faults add up);
* ``status`` — answer ``status`` with a DialNexa-shaped error body (and ``Retry-After`` when set); the handler never
  runs, so nothing is created;
* ``timeout`` — wait ``delay`` seconds (default 60) and then answer 504; the request is never processed;
* ``reset`` — read the request, then close the connection without any response; the handler never runs.

``count`` is how many requests a fault fires for (0: until cleared); ``probability`` the chance it fires for each
matching request. Latency faults apply first; then the first matching fault of another kind answers the request.
Routes under ``/_control`` are never faulted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from webcall.emulator.errors import error_response
from webcall.emulator.keys import FAULT_KIND_KEY, FAULTS_KEY, REQUEST_ENTRY_KEY, STATS_KEY
from webcall.emulator.state import new_id
from webcall.emulator.stats import CONTROL_PREFIX, route_key

log = logging.getLogger("webcall.emulator")

FAULT_KINDS = ("latency", "status", "timeout", "reset")
DEFAULT_TIMEOUT_DELAY = 60.0

_DEFAULT_MESSAGES = {
    400: "Bad request",
    401: "API key is missing or invalid",
    402: "Insufficient billing wallet balance",
    403: "You do not have permission to access this resource",
    404: "Not found",
    409: "Conflict",
    429: "Too many requests, please retry later",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


@dataclass
class Fault:
    id: str
    route: str
    kind: str
    count: int = 1
    delay: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    probability: float = 1.0
    message: str | None = None
    fired: int = 0

    def matches(self, key: str) -> bool:
        return self.route == "*" or self.route == key

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "route": self.route,
            "kind": self.kind,
            "count": self.count,
            "delay": self.delay,
            "status": self.status,
            "retry_after": self.retry_after,
            "probability": self.probability,
            "message": self.message,
            "fired": self.fired,
        }


class HasId(Protocol):
    id: str


F = TypeVar("F", bound=HasId)


class FaultList(Generic[F]):
    """Active faults in the order they were added, removable by id (request faults and delivery faults)."""

    def __init__(self) -> None:
        self._faults: list[F] = []

    def __len__(self) -> int:
        return len(self._faults)

    def active(self) -> list[F]:
        return list(self._faults)

    def remove(self, fault_id: str) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def clear(self) -> int:
        n = len(self._faults)
        self._faults.clear()
        return n


class FaultRegistry(FaultList[Fault]):
    """The active faults of one emulator, in the order they were added."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__()
        self._rng = rng or random.Random()
        self._closing: asyncio.Event | None = None

    def add(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        return fault

    def new(self, **fields: Any) -> Fault:
        return self.add(Fault(id=new_id("fault"), **fields))

    def _fire(self, fault: Fault) -> bool:
        if fault.probability < 1.0 and self._rng.random() >= fault.probability:
            return False
        fault.fired += 1
        if fault.count > 0:
            fault.count -= 1
            if fault.count == 0:
                self._faults.remove(fault)
        return True

    def select(self, key: str) -> tuple[list[Fault], Fault | None]:
        """The latency faults and the (first) answering fault that fire for one request to ``key``."""
        latency: list[Fault] = []
        answer: Fault | None = None
        for fault in list(self._faults):
            if not fault.matches(key):
                continue
            if fault.kind == "latency":
                if self._fire(fault):
                    latency.append(fault)
            elif answer is None and self._fire(fault):
                answer = fault
        return latency, answer

    async def sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, cut short when the emulator shuts down."""
        if delay <= 0:
            return
        if self._closing is None:
            self._closing = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay)

    def shutting_down(self) -> None:
        if self._closing is None:
            self._closing = asyncio.Event()
        self._closing.set()


def _mark(request: web.Request, kind: str) -> None:
    request[FAULT_KIND_KEY] = kind
    entry = request.get(REQUEST_ENTRY_KEY)
    if entry is not None:
        entry["fault"] = kind


def _status_response(fault: Fault) -> web.Response:
    status = fault.status or 500
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    if status == 429:
        wait = fault.retry_after if fault.retry_after is not None else 1.0
        headers.update(
            {
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time() + wait + 0.999)),
            }
        )
    message = fault.message or _DEFAULT_MESSAGES.get(status, "Request failed")
    return error_response(status, message, headers=headers)


# The media routes are called by browsers from other origins: their fault answers carry the same CORS headers as
# their real answers, so a page sees the injected status rather than a CORS failure.
_BROWSER_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "location, etag, retry-after",
}


def _browser_readable(request: web.Request, response: web.Response) -> web.Response:
    if "/whip" in request.path:
        response.headers.update(_BROWSER_CORS)
    return response


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
        return await handler(request)
    registry = request.app[FAULTS_KEY]
    if not len(registry):
        return await handler(request)
    key = route_key(request)
    latency, answer = registry.select(key)
    stats = request.app[STATS_KEY]
    stats.faults_fired += len(latency) + (answer is not None)
    if latency:
        _mark(request, "latency")
    for fault in latency:
        await registry.sleep(fault.delay)
    if answer is None:
        return await handler(request)
    _mark(request, answer.kind)
    log.info("emulator: %s fault %s answers %s %s", answer.kind, answer.id, request.method, request.path)
    if answer.kind == "status":
        return _browser_readable(request, _status_response(answer))
    if answer.kind == "timeout":
        stats.timed_out += 1
        await registry.sleep(answer.delay)
        return _browser_readable(request, error_response(504, "Gateway timeout"))
    # reset: take the whole request in, then drop the connection without a byte of response.
    stats.resets += 1
    await request.read()
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=499)
