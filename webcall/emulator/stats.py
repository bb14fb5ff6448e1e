"""What the emulator has been asked: per-route request counts, created calls, fired faults, and a request log.

:func:`record_middleware` (the outermost middleware) files every request outside ``/_control`` under its route key,
``"<METHOD> <canonical path>"`` (for example ``"GET /v1/calls/{id}"``), and keeps the last 500 in a log that tests
read through ``GET /_control/requests``.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, TypedDict

from aiohttp import web
from aiohttp.typedefs import Handler

from webcall.emulator.keys import FAULT_KIND_KEY, REQUEST_ENTRY_KEY, STATS_KEY

REQUEST_LOG_SIZE = 500
_MAX_LOGGED_BODY = 64 * 1024
CONTROL_PREFIX = "/_control"


class RequestEntry(TypedDict):
    method: str
    route: str
    path: str
    json: Any
    status: int | None
    fault: str | None


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    calls_created: Counter[str] = field(default_factory=Counter)
    faults_fired: int = 0
    timed_out: int = 0
    resets: int = 0
    log: deque[RequestEntry] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))

    def clear(self) -> None:
        self.requests.clear()
        self.calls_created.clear()
        self.faults_fired = self.timed_out = self.resets = 0
        self.log.clear()

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "calls_created": {"web": self.calls_created["web"], "phone": self.calls_created["phone"]},
            "faults_fired": self.faults_fired,
            "timed_out": self.timed_out,
            "resets": self.resets,
        }


def route_key(request: web.Request) -> str:
    """``"<METHOD> <canonical path>"`` of the route that matched, or of the raw path when none did."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return f"{request.method} {path}"


async def _logged_json(request: web.Request) -> Any:
    length = request.content_length
    if not request.can_read_body or length is None or length > _MAX_LOGGED_BODY:
        return None
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        return None
    try:
        return json.loads(await request.read())
    except (ValueError, web.HTTPException, ConnectionError):
        return None


@web.middleware
async def record_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
        return await handler(request)
    stats = request.app[STATS_KEY]
    key = route_key(request)
    stats.requests[key] += 1
    entry: RequestEntry = {
        "method": request.method,
        "route": key.partition(" ")[2],
        "path": request.path,
        "json": await _logged_json(request),
        "status": None,
        "fault": None,
    }
    stats.log.append(entry)
    request[REQUEST_ENTRY_KEY] = entry
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        entry["status"] = exc.status
        raise
    fault = request.get(FAULT_KIND_KEY)
    entry["fault"] = fault
    entry["status"] = None if fault == "reset" else response.status
    return response
