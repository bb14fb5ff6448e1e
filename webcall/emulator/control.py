"""Control routes under ``/_control`` (no auth) for tests, the demo and benchmarks.

* ``POST /_control/faults`` → 201 ``{"id"}``; ``GET /_control/faults`` → ``{"faults": [...]}``;
  ``DELETE /_control/faults`` → ``{"cleared": n}``; ``DELETE /_control/faults/{id}``.
* ``GET /_control/stats`` → ``{"requests", "calls_created", "faults_fired", "timed_out", "resets"}``.
* ``GET /_control/requests`` → the last 500 requests ``[{"method", "route", "path", "json", "status", "fault"}]``.
* ``GET /_control/calls/{id}`` → the call's JSON plus internal fields.
* ``POST /_control/reset`` → forget calls, webhooks, stats, faults, webhook faults and the delivery log.

Webhook deliveries (see :mod:`webcall.emulator.webhooks`):

* ``POST /_control/webhook-faults`` ``{"kind": "duplicate" | "drop" | "bad_signature" | "delay", "probability"
  (0..1, default 1), "count" (default 1; 0: until cleared), "delay" (seconds; required for "delay"), "seed"?}``
  → 201 ``{"id"}``; ``GET /_control/webhook-faults`` → ``{"faults": [...], "seed"}``;
  ``DELETE /_control/webhook-faults`` → ``{"cleared": n}``; ``DELETE /_control/webhook-faults/{id}``.
* ``GET /_control/deliveries`` → the last 5000 attempts, oldest first, ``[{"delivery_id", "webhook_id", "url",
  "event_type", "call_id", "attempt", "copy", "status", "error", "fault", "signed_ok", "response"}]``; filter with
  ``?call_id=``, ``?webhook_id=``, ``?event_type=``. ``GET /_control/deliveries/pending`` → ``{"pending": n}``.
* ``POST /_control/calls/{id}/transfer`` → transfers a live call (``transfer_completed``); 409 when it is not live.
* ``POST /_control/emit`` ``{"count" (1..10000, default 1), "event_type" (default "call_ended"), "agent_id"?,
  "metadata"?, "type" ("phone" | "web", default "phone")}`` → 201 ``{"call_ids", "events", "deliveries"}``:
  synthetic calls run through the state model (created → initiated [→ transferred] [→ completed]), so every event
  up to ``event_type`` is delivered for real to the registered webhooks, faults included.
"""

from __future__ import annotations

import logging

from aiohttp import web

from webcall.emulator.errors import ApiError
from webcall.emulator.faults import DEFAULT_TIMEOUT_DELAY, FAULT_KINDS
from webcall.emulator.keys import FAULTS_KEY, STATE_KEY, STATS_KEY, TASKS_KEY, WEBHOOKS_KEY
from webcall.emulator.rest import iso_utc
from webcall.emulator.state import EmulatorState, InvalidTransition, render
from webcall.emulator.validation import BodyValidator, read_json_object
from webcall.emulator.webhooks import EVENT_TYPES, WEBHOOK_FAULT_KINDS

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
    await app[WEBHOOKS_KEY].reset()
    state.webhooks.clear()
    for call in list(state.calls.values()):
        state.end_call(call, "agent_disconnected")
    state.clear()
    app[STATS_KEY].clear()
    log.info("emulator: reset")


# -- webhook deliveries -------------------------------------------------------------------------------------------
EMIT_MAX = 10_000
EMIT_PHONE_NUMBER = "+15550100001"
EMIT_CALLER_LINE = "Yes, that works for me."


async def add_webhook_fault(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    v = BodyValidator(body, ("kind", "probability", "count", "delay", "seed"))
    kind = v.one_of("kind", WEBHOOK_FAULT_KINDS, required=True)
    probability = v.number("probability", minimum=0)
    count = v.integer("count", minimum=0)
    delay = v.number("delay", minimum=0)
    seed = v.integer("seed")
    if probability is not None and probability > 1:
        v.errors.append("probability must not be greater than 1")
    if kind == "delay" and delay is None and not v.present("delay"):
        v.errors.append("delay is required for a delay fault")
    v.finish()
    if kind is None:  # finish() has raised already
        raise ApiError(400, "Invalid webhook fault")
    fault = request.app[WEBHOOKS_KEY].faults.add(
        kind=kind,
        probability=1.0 if probability is None else probability,
        count=1 if count is None else count,
        delay=delay or 0.0,
        seed=seed,
    )
    log.info(
        "emulator: webhook fault %s added: %s (probability %g, count %d)",
        fault.id,
        fault.kind,
        fault.probability,
        fault.count,
    )
    return web.json_response({"id": fault.id}, status=201)


async def list_webhook_faults(request: web.Request) -> web.StreamResponse:
    faults = request.app[WEBHOOKS_KEY].faults
    return web.json_response({"faults": [f.as_json() for f in faults.active()], "seed": faults.seed})


async def clear_webhook_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response({"cleared": request.app[WEBHOOKS_KEY].faults.clear()})


async def delete_webhook_fault(request: web.Request) -> web.StreamResponse:
    if not request.app[WEBHOOKS_KEY].faults.remove(request.match_info["id"]):
        raise ApiError(404, "Webhook fault not found")
    return web.json_response({"cleared": 1})


async def get_deliveries(request: web.Request) -> web.StreamResponse:
    query = request.query
    records = [
        r
        for r in request.app[WEBHOOKS_KEY].deliveries
        if query.get("call_id", r["call_id"]) == r["call_id"]
        and query.get("webhook_id", r["webhook_id"]) == r["webhook_id"]
        and query.get("event_type", r["event_type"]) == r["event_type"]
    ]
    return web.json_response(records)


async def get_pending_deliveries(request: web.Request) -> web.StreamResponse:
    return web.json_response({"pending": request.app[WEBHOOKS_KEY].pending})


async def transfer_call(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    call = state.calls.get(request.match_info["id"])
    if call is None:
        raise ApiError(404, "Call not found")
    await read_json_object(request, optional=True)
    try:
        state.transfer(call)
    except InvalidTransition:
        raise ApiError(409, f"Only a live call can be transferred; this call is {call.status}") from None
    log.info("emulator: call %s transferred", call.id)
    return web.json_response(state.call_json(call))


async def emit(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    sender = request.app[WEBHOOKS_KEY]
    body = await read_json_object(request, optional=True)
    v = BodyValidator(body, ("count", "event_type", "agent_id", "metadata", "type"))
    count = v.integer("count", minimum=1)
    event_type = v.one_of("event_type", EVENT_TYPES)
    agent_id = v.string("agent_id")
    metadata = v.obj("metadata")
    call_type = v.one_of("type", ("phone", "web"))
    if count is not None and count > EMIT_MAX:
        v.errors.append(f"count must not be greater than {EMIT_MAX}")
    v.finish()
    agent = state.agents.get(agent_id) if agent_id is not None else next(iter(state.agents.values()), None)
    if agent is None:
        raise ApiError(404, "Agent not found")
    version = agent.published_version(None)
    if version is None:
        raise ApiError(400, f"Agent {agent.id} has no published version")
    last = event_type or "call_ended"
    kind = call_type or "phone"
    scheduled_before = sender.scheduled
    call_ids: list[str] = []
    events = 0
    for _ in range(count or 1):
        call = state.create_call(
            type=kind,
            agent=agent,
            version=version,
            metadata=metadata or {},
            to_number=EMIT_PHONE_NUMBER if kind == "phone" else None,
        )
        call_ids.append(call.id)
        state.transition(call, "initiated")
        events += 1
        variables = state.variables_for(call)
        state.add_transcript(call, "agent", render(version.welcome_message or agent.welcome_message, variables))
        state.add_transcript(call, "user", EMIT_CALLER_LINE)
        if last == "transfer_completed":
            state.transfer(call)
            events += 1
        if last != "call_initiated":
            state.add_transcript(call, "agent", render(agent.closing, variables))
            state.transition(call, "completed", end_reason="agent_disconnected")
            events += 1
    log.info("emulator: emitted %d synthetic %s call(s) up to %s", len(call_ids), kind, last)
    return web.json_response(
        {"call_ids": call_ids, "events": events, "deliveries": sender.scheduled - scheduled_before}, status=201
    )


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
    router.add_post("/_control/webhook-faults", add_webhook_fault)
    router.add_get("/_control/webhook-faults", list_webhook_faults)
    router.add_delete("/_control/webhook-faults", clear_webhook_faults)
    router.add_delete("/_control/webhook-faults/{id}", delete_webhook_fault)
    router.add_get("/_control/deliveries", get_deliveries)
    router.add_get("/_control/deliveries/pending", get_pending_deliveries)
    router.add_post("/_control/calls/{id}/transfer", transfer_call)
    router.add_post("/_control/emit", emit)
