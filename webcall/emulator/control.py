"""Control routes under ``/_control`` (no auth) for tests, the demo and benchmarks.

* ``POST /_control/faults`` → 201 ``{"id"}``; ``GET /_control/faults`` → ``{"faults": [...]}``;
  ``DELETE /_control/faults`` → ``{"cleared": n}``; ``DELETE /_control/faults/{id}``.
* ``GET /_control/stats`` → ``{"requests", "calls_created", "faults_fired", "timed_out", "resets"}``.
* ``GET /_control/requests`` → the last 500 requests ``[{"method", "route", "path", "json", "status", "fault"}]``.
* ``GET /_control/calls/{id}`` → the call's JSON plus internal fields.
* ``POST /_control/reset`` → forget calls, webhooks, stats and faults.
"""

from __future__ import annotations

import logging

from aiohttp import web

from webcall.emulator.errors import ApiError
from webcall.emulator.faults import DEFAULT_TIMEOUT_DELAY, FAULT_KINDS
from webcall.emulator.keys import FAULTS_KEY, STATE_KEY, STATS_KEY, TASKS_KEY
from webcall.emulator.rest import iso_utc
from webcall.emulator.state import EmulatorState
from webcall.emulator.validation import BodyValidator, read_json_object

log = logging.getLogger("webcall.emulator")


def _route_keys(app: web.Application) -> set[str]:
    keys: set[str] = set()
    for route in app.router.routes():
        if route.method != "*" and route.resource is not None and not route.resource.canonical.startswith("/_control"):
            keys.add(f"{route.method} {route.resource.canonical}")
    return keys


async def add_fault(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    v = BodyValidator(body, ("route", "kind", "count", "delay", "status", "retry_after", "probability", "message"))
    route = v.string("route", required=True)
    kind = v.one_of("kind", FAULT_KINDS, required=True)
    count = v.integer("count", minimum=0)
    delay = v.number("delay", minimum=0)
    status = v.integer("status", minimum=400)
    retry_after = v.number("retry_after", minimum=0)
    probability = v.number("probability", minimum=0)
    message = v.string("message")
    if status is not None and status > 599:
        v.errors.append("status must not be greater than 599")
    if probability is not None and probability > 1:
        v.errors.append("probability must not be greater than 1")
    if kind == "status" and status is None and not v.present("status"):
        v.errors.append("status is required for a status fault")
    if kind == "latency" and delay is None and not v.present("delay"):
        v.errors.append("delay is required for a latency fault")
    if route is not None and route != "*":
        method, _, path = route.partition(" ")
        route = f"{method.upper()} {path.strip()}"
        if route not in _route_keys(request.app):
            v.errors.append(
                f"route {route!r} matches no emulator route; use '*' or '<METHOD> <canonical path>' "
                f"such as 'POST /v1/web-calls' or 'GET /v1/calls/{{id}}'"
            )
    v.finish()
    if route is None or kind is None:  # finish() has raised already
        raise ApiError(400, "Invalid fault")
    fault = request.app[FAULTS_KEY].new(
        route=route,
        kind=kind,
        count=1 if count is None else count,
        delay=(DEFAULT_TIMEOUT_DELAY if kind == "timeout" else 0.0) if delay is None else delay,
        status=status,
        retry_after=retry_after,
        probability=1.0 if probability is None else probability,
        message=message,
    )
    log.info("emulator: fault %s added: %s on %s (count %d)", fault.id, fault.kind, fault.route, fault.count)
    return web.json_response({"id": fault.id}, status=201)


async def list_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response({"faults": [f.as_json() for f in request.app[FAULTS_KEY].active()]})


async def clear_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response({"cleared": request.app[FAULTS_KEY].clear()})


async def delete_fault(request: web.Request) -> web.StreamResponse:
    if not request.app[FAULTS_KEY].remove(request.match_info["id"]):
        raise ApiError(404, "Fault not found")
    return web.json_response({"cleared": 1})


async def get_stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATS_KEY].as_json())


async def get_requests(request: web.Request) -> web.StreamResponse:
    return web.json_response(list(request.app[STATS_KEY].log))


async def get_call_internals(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    call = state.calls.get(request.match_info["id"])
    if call is None:
        raise ApiError(404, "Call not found")
    body = state.call_json(call)
    body.update(
        {
            "has_access_token": call.access_token is not None,
            "access_token_used": call.token_used,
            "access_token_expires_at": iso_utc(call.token_expires_at) if call.token_expires_at else None,
            "transcript_lines": [{"role": t.role, "text": t.text, "at": iso_utc(t.at)} for t in call.transcript],
            "ended": call.ended,
        }
    )
    return web.json_response(body)


async def reset(request: web.Request) -> web.StreamResponse:
    app = request.app
    await reset_emulator(app)
    return web.json_response({"message": "Emulator reset"})


async def reset_emulator(app: web.Application) -> None:
    """Stop simulations, end live calls (so media sessions close), then forget calls, webhooks, stats and faults."""
    state: EmulatorState = app[STATE_KEY]
    app[FAULTS_KEY].clear()
    await app[TASKS_KEY].cancel_all()
    state.webhooks.clear()
    for call in list(state.calls.values()):
        state.end_call(call, "agent_disconnected")
    state.clear()
    app[STATS_KEY].clear()
    log.info("emulator: reset")


def add_control_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/_control/faults", add_fault)
    router.add_get("/_control/faults", list_faults)
    router.add_delete("/_control/faults", clear_faults)
    router.add_delete("/_control/faults/{id}", delete_fault)
    router.add_get("/_control/stats", get_stats)
    router.add_get("/_control/requests", get_requests)
    router.add_get("/_control/calls/{id}", get_call_internals)
    router.add_post("/_control/reset", reset)
