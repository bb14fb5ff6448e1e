"""The plugin's HTTP routes: thin handlers over the guard, the hooks, the store and the DialNexa client."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler

from . import guard, openapi, webhooks
from .dialnexa.models import iso
from .errors import (
    DialNexaError,
    DialNexaTransportError,
    HTTPProblem,
    StoreUnavailable,
    TokenError,
    WebhookSignatureError,
    problem_response,
    upstream_problem,
)
from .events import CallEvent, EventParseError, from_delivery, parse_delivery
from .keys import WEBCALL
from .metrics import route_label
from .resources import page_css
from .sse import EventStream
from .tokens import AUDIENCE_CALL

if TYPE_CHECKING:
    from .app import WebCall
    from .config import Agent

log = logging.getLogger("webcall")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
_JSON = "application/json"


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(data, separators=(",", ":")),
        content_type=_JSON,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the one JSON error shape; nothing unexpected reaches a client as a traceback."""
    problem: HTTPProblem | None = None
    try:
        response = await handler(request)
    except HTTPProblem as raised:
        problem = raised
        response = problem_response(problem)
    except StoreUnavailable as err:
        log.warning(
            "webcall: the state store is unreachable (%s %s): %s", request.method, request.path, err.__cause__ or err
        )
        problem = HTTPProblem(503, "store_unavailable", "The service is briefly unavailable; try again.", retry_after=2)
        response = problem_response(problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        sentence = {
            404: "There is nothing at this address.",
            405: f"{request.method} is not allowed here.",
            413: "The request body is too large.",
        }.get(exc.status, exc.reason)
        problem = HTTPProblem(exc.status, _HTTP_CODES.get(exc.status, "error"), sentence)
        response = problem_response(problem)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("webcall: unexpected error on %s %s", request.method, request.path)
        problem = HTTPProblem(500, "internal_error", "Something went wrong on our side.")
        response = problem_response(problem)
    if problem is not None:
        request.app[WEBCALL].metrics.refusal(route_label(request), problem.code)
    if not response.prepared:
        response.headers.update(guard.cors_headers(request, request.app[WEBCALL].config))
    return response


# -- widget and pages -------------------------------------------------------------------------------------------
async def widget_js(request: web.Request) -> web.StreamResponse:
    asset = request.app[WEBCALL].widget
    versioned = request.query.get("v") == asset.version
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "public, max-age=300, must-revalidate",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if asset.etag in (t.strip() for t in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = asset.gzipped, "gzip"
    return web.Response(body=body, headers={**headers, "Content-Type": "text/javascript; charset=utf-8"})


def _page(webcall: WebCall, template: str, http_status: int = 200, **context: Any) -> web.Response:
    csp = webcall.content_security_policy
    html = webcall.templates.get_template(template).render(css_url=webcall.url("call_css"), csp=csp, **context)
    return web.Response(
        text=html,
        status=http_status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": csp + "; base-uri 'none'; frame-ancestors 'self'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


async def call_css(request: web.Request) -> web.StreamResponse:
    asset = page_css()
    headers = {"ETag": asset.etag, "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": "text/css; charset=utf-8"})


async def call_page(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    alias = request.match_info["agent"]
    if alias not in webcall.agents:
        return _page(
            webcall,
            "error.html",
            404,
            status=404,
            title="Unknown agent",
            message="There is no agent to call at this address.",
        )
    agent = webcall.agents[alias]
    return _page(
        webcall,
        "call.html",
        agent=alias,
        label=agent.label or alias.title(),
        widget_url=webcall.widget_url,
        widget_sri=webcall.widget_sri,
    )


async def snippet_page(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    alias = request.query.get("agent") or next(iter(webcall.agents), "")
    if alias not in webcall.agents:
        raise HTTPProblem(404, "unknown_agent", "There is no agent with that name.")
    attributes = {"agent": alias}
    return _page(
        webcall,
        "snippet.html",
        agent=alias,
        widget_url=webcall.widget_url,
        widget_sri=webcall.widget_sri,
        attributes=attributes,
    )


async def healthz(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    try:
        await webcall.store.ping()
    except Exception:
        return _json({"status": "unavailable", "store": "unreachable"}, status=503, headers={"Retry-After": "2"})
    return _json(
        {
            "status": "ok",
            "store": "redis" if webcall.config.store != "memory" else "memory",
            "upstream": "emulator" if webcall.config.uses_emulator else "dialnexa",
            "agents": sorted(webcall.agents),
            "active_calls": await webcall.store.active_slots(),
        }
    )


# -- sessions ---------------------------------------------------------------------------------------------------
async def preflight_post(request: web.Request) -> web.Response:
    return guard.preflight(request, request.app[WEBCALL].config, "POST")


async def _admit(request: web.Request) -> tuple[str, dict[str, Any], str | None]:
    """The checks before any billable work: origin, rate limits, the JSON body, the host's hooks.

    Returns (origin, body, identity)."""
    config = request.app[WEBCALL].config
    origin = guard.check_origin(request, config)
    await _rate_limits(request)
    body = await guard.read_json(request, config.max_body_bytes)
    identity = await _authorize(request, body)
    return origin, body, identity


async def create_session(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    config = webcall.config
    store = webcall.store
    origin, body, identity = await _admit(request)
    alias, agent = _agent(webcall, body)
    metadata = await _variables(request, webcall, alias, agent, body)
    missing = webcall.required_variables.get(alias, frozenset()) - metadata.keys()

    slot_id = secrets.token_urlsafe(12)
    max_seconds = _max_call_seconds(webcall, alias)
    if not await store.acquire_slot(slot_id, config.max_concurrent_calls, max_seconds + 60):
        raise HTTPProblem(
            503, "capacity_reached", "All lines are busy right now; try again in a minute.", retry_after=30
        )
    try:
        session = await webcall.client.create_web_call(
            agent_id=agent.id, agent_version_number=agent.version, metadata=metadata
        )
    except DialNexaError as err:
        await store.release_slot(slot_id)
        raise upstream_problem(err, doing="starting the call") from err
    if missing:
        log.warning(
            "call %s: agent %r uses %s but this session gives no value; the agent will say the placeholder aloud",
            session.id,
            alias,
            ", ".join(f"{{{{{n}}}}}" for n in sorted(missing)),
        )
    now = datetime.now(UTC)
    context = {
        "call_id": session.id,
        "agent": alias,
        "agent_id": agent.id,
        "origin": origin,
        "identity": identity,
        "variables": metadata,
        "slot_id": slot_id,
        "created_at": iso(now),
    }
    created = CallEvent(
        id=f"{session.id}:session.created",
        type="session.created",
        call_id=session.id,
        time=iso(now),
        call={"id": session.id, "agent_id": agent.id, "status": session.status, "type": "web"},
        context=context,
        source="webcall",
    )
    await asyncio.gather(  # independent writes: one round trip's wait, not two
        store.remember_call(session.id, context, ttl=max_seconds + 3600, deadline_at=time.time() + max_seconds),
        webcall.bus.publish(created),
    )
    await webcall.ensure_webhook_for(guard.own_origin(request, config))
    token, claims = webcall.tokens.issue(session.id, AUDIENCE_CALL, ttl=max_seconds + 120)
    webcall.metrics.minted(alias)
    log.info("call %s: session minted for agent %r from %s", session.id, alias, origin)
    return _json(
        {
            "call_id": session.id,
            "agent": alias,
            "access_token": session.access_token,
            "expires_at": iso(session.expires_at) if session.expires_at else None,
            "media": session.media.to_json(),
            "token": token,
            "token_expires_at": iso(datetime.fromtimestamp(claims.expires_at, UTC)),
            "max_call_seconds": max_seconds,
            "end_url": webcall.url("session_end", call_id=session.id),
            "events_url": webcall.url("session_events", call_id=session.id),
            "callbacks_url": webcall.url("callbacks"),
        },
        status=201,
    )


async def _rate_limits(request: web.Request) -> None:
    """Per visitor IP and for the whole site (a flood from many addresses), counted together in one step."""
    webcall = request.app[WEBCALL]
    config = webcall.config
    ip = guard.client_ip(request, config.trusted_proxies)
    limits = [(f"rl:ip:{ip}", config.rate_limit), ("rl:global", config.global_rate_limit)]
    refused = await webcall.store.hit_all(limits, config.rate_limit_window)
    if refused is not None:
        who = ("this address", "everyone right now")[refused[0]]
        raise guard.rate_limited(who, refused[1])


async def _authorize(request: web.Request, body: dict[str, Any]) -> str | None:
    """The host's authorize and bot-check hooks, and the per-identity rate limit; returns the identity."""
    webcall = request.app[WEBCALL]
    config = webcall.config
    identity: str | None = None
    if config.authorize is not None:
        verdict = await _hook("authorize", config.authorize, request)
        if verdict is False:
            raise HTTPProblem(403, "forbidden", "You are not allowed to start a call.")
        identity = verdict if isinstance(verdict, str) and verdict else None
    if identity is not None:
        await guard.rate_limit(
            webcall.store,
            f"rl:id:{identity}",
            config.identity_rate_limit,
            config.rate_limit_window,
            who="this account",
        )
    if config.bot_check is not None:
        token = body.get("bot_token")
        passed = await _hook("bot_check", config.bot_check, request, token if isinstance(token, str) else None)
        if passed is not True:
            raise HTTPProblem(403, "bot_check_failed", "The anti-robot check did not pass; reload the page and retry.")
    return identity


def _agent(webcall: WebCall, body: dict[str, Any]) -> tuple[str, Agent]:
    alias = body.get("agent")
    if not isinstance(alias, str) or not alias:
        raise HTTPProblem(400, "invalid_request", 'Name the agent to call: {"agent": "sales"}.')
    agent = webcall.agents.get(alias)
    if agent is None:
        raise HTTPProblem(404, "unknown_agent", "There is no agent with that name.")
    return alias, agent


async def _variables(
    request: web.Request, webcall: WebCall, alias: str, agent: Agent, body: dict[str, Any]
) -> dict[str, Any]:
    """The call's ``{{variables}}``: visitor values the host allows, overridden by the host's own."""
    host_values: dict[str, Any] = {}
    if webcall.config.variables is not None:
        result = await _hook("variables", webcall.config.variables, request, alias, agent)
        host_values = dict(result or {})
    visitor_values = guard.visitor_variables(
        body.get("variables"), agent.visitor_variables, host_values, webcall.config.max_visitor_value_length
    )
    return {**visitor_values, **host_values}


def _max_call_seconds(webcall: WebCall, alias: str) -> int:
    limit = webcall.config.max_call_seconds
    info = webcall.agent_info.get(alias)
    if info is not None and info.max_call_duration_sec:
        limit = min(limit, info.max_call_duration_sec)
    return limit


async def _hook(name: str, hook: Callable[..., Any], *args: Any) -> Any:
    """Run a host hook, sync or async; its own HTTPProblem passes through, anything else is a 500 logged once."""
    try:
        value = hook(*args)
        return await value if inspect.isawaitable(value) else value
    except HTTPProblem:
        raise
    except Exception as err:
        log.exception("webcall: the host's %s hook failed", name)
        raise HTTPProblem(500, "hook_failed", "The site could not prepare this call.") from err


def _bearer(request: web.Request, *, query: bool = True) -> str | None:
    """The token from ``Authorization: Bearer``, or (where EventSource needs it) from ``?token=``."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("token") if query else None


async def end_session(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    call_id = request.match_info["call_id"]
    try:
        claims = webcall.tokens.verify(_bearer(request, query=False), AUDIENCE_CALL, call_id=call_id)
    except TokenError:
        raise HTTPProblem(401, "unauthorized", "This call's token is missing, invalid or expired.") from None
    if not await webcall.store.use_once(f"end:{claims.jti}", ttl=claims.expires_at - time.time() + 60):
        raise HTTPProblem(401, "unauthorized", "This call's token was already used to hang up.")
    try:
        record = await webcall.end_call(call_id, reason="user_disconnected")  # the visitor hung up
    except DialNexaError as err:
        raise upstream_problem(err, doing="ending the call") from err
    return _json({"call_id": call_id, "status": record.status if record else "ended"})


# -- webhooks from DialNexa -------------------------------------------------------------------------------------
WEBHOOK_MAX_BYTES = 256 * 1024


async def receive_webhook(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    raw = await guard.read_body(request, WEBHOOK_MAX_BYTES)
    try:
        webhooks.verify(raw, request.headers, webcall.webhook_secrets)
    except WebhookSignatureError as err:
        webcall.metrics.webhook("rejected")
        log.warning("webcall: webhook refused (%s) from %s", err, request.remote)
        raise HTTPProblem(401, "invalid_signature", "Invalid signature.") from None
    try:
        event_type, call = parse_delivery(raw)
    except EventParseError as err:
        webcall.metrics.webhook("invalid")
        log.warning("webcall: signed webhook ignored: %s", err)
        raise HTTPProblem(400, "invalid_event", "The webhook body is not a call event.") from None
    context = await webcall.store.get_context(str(call["id"]))
    event = from_delivery(event_type, call, context)
    fresh = await webcall.bus.publish(event)
    webcall.metrics.webhook("accepted" if fresh else "duplicate")
    if event.type == "call.ended":
        await webcall.call_finished(event.call_id)
    return _json({"received": True, "duplicate": not fresh})


# -- browser events (SSE) ---------------------------------------------------------------------------------------
SSE_PING_SECONDS = 15.0
_SEQ = re.compile(r"[0-9]{1,18}")


async def session_events(request: web.Request) -> web.StreamResponse:
    webcall = request.app[WEBCALL]
    call_id = request.match_info["call_id"]
    try:
        webcall.tokens.verify(request.query.get("token") or _bearer(request), AUDIENCE_CALL, call_id=call_id)
    except TokenError:
        raise HTTPProblem(401, "unauthorized", "This call's token is missing, invalid or expired.") from None
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "0"
    sent = int(last) if _SEQ.fullmatch(last) else 0  # anything else replays from the start
    store = webcall.store
    subscription = store.subscribe(call_id)
    try:
        await subscription.start()  # before reading the backlog, so nothing falls between the two
        backlog = await store.events_after(call_id, sent)
        stream = EventStream(request, guard.cors_headers(request, webcall.config))
        await stream.open()
        webcall.streams.add(subscription)
        for seq, event in backlog:
            sent = seq
            await stream.send(json.dumps(event), id=str(seq))
            if event["type"] == "call.ended":
                return stream.response
        while True:
            try:
                async with asyncio.timeout(SSE_PING_SECONDS):
                    item = await subscription.get()
            except TimeoutError:
                await stream.ping()  # also how a vanished browser is noticed
                continue
            if item is None:  # closed: shutting down
                return stream.response
            seq, event = item
            if seq <= sent:
                continue
            sent = seq
            await stream.send(json.dumps(event), id=str(seq))
            if event["type"] == "call.ended":
                return stream.response
    except ConnectionResetError:  # the browser went away (closed tab, lost network): not an error
        log.debug("call %s: event stream closed by the browser", call_id)
        return web.Response(status=204)
    finally:
        webcall.streams.discard(subscription)
        await subscription.close()


# -- "call me back" --------------------------------------------------------------------------------------------
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


async def request_callback(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    config = webcall.config
    store = webcall.store
    origin, body, identity = await _admit(request)
    phone = body.get("phone_number")
    phone = re.sub(r"[\s().-]", "", phone) if isinstance(phone, str) else None
    if not phone or not E164.fullmatch(phone):
        raise HTTPProblem(400, "invalid_phone_number", "Enter the number in international form, e.g. +14155550123.")
    if body.get("consent") is not True:
        raise HTTPProblem(400, "consent_required", "Please agree to be called before we ring you.")
    alias, agent = _agent(webcall, body)
    await guard.rate_limit(
        store, f"rl:phone:{phone}", config.callback_rate_limit, config.callback_rate_window, who="this number"
    )
    metadata = await _variables(request, webcall, alias, agent, body)
    request_id = secrets.token_urlsafe(12)
    notes = {"webcall_request": request_id, "source": "webcall callback"}
    try:
        call = await webcall.client.create_call(
            phone_number=phone, agent_id=agent.id, agent_version_number=agent.version, metadata=metadata, notes=notes
        )
        call_id = call.id
    except DialNexaTransportError as err:
        # Ambiguous: the call may exist. Never retry blindly; look for it first.
        found = await _reconcile(webcall, agent.id, request_id)
        if found is None:
            raise upstream_problem(err, doing="requesting the call back") from err
        call_id = found
    except DialNexaError as err:
        raise upstream_problem(err, doing="requesting the call back") from err
    created_at = iso(datetime.now(UTC))
    context = {
        "call_id": call_id,
        "agent": alias,
        "agent_id": agent.id,
        "origin": origin,
        "identity": identity,
        "variables": metadata,
        "phone_number": phone,
        "created_at": created_at,
    }
    await store.put_context(call_id, context, ttl=24 * 3600)
    await webcall.bus.publish(
        CallEvent(
            id=f"{call_id}:callback.requested",
            type="callback.requested",
            call_id=call_id,
            time=created_at,
            call={"id": call_id, "agent_id": agent.id, "type": "phone", "to_number": phone},
            context=context,
            source="webcall",
        )
    )
    await webcall.ensure_webhook_for(guard.own_origin(request, config))
    webcall.metrics.callback(alias)
    log.info("call %s: call back requested for agent %r", call_id, alias)
    return _json({"callback_id": call_id, "status": "requested"}, status=202)


RECONCILE_WAITS = (0.0, 0.5, 1.0)


async def _reconcile(webcall: WebCall, agent_id: str, request_id: str) -> str | None:
    """After an ambiguous failure, look for the call we may have created (by the request id in its notes)."""
    for wait in RECONCILE_WAITS:
        await asyncio.sleep(wait)
        try:
            recent = await webcall.client.list_calls(limit=50, type="phone", agent_id=agent_id)
        except DialNexaError:
            continue
        for record in recent:
            notes = record.raw.get("notes")
            if isinstance(notes, dict) and notes.get("webcall_request") == request_id:
                log.info("call %s: found after an ambiguous failure; not created twice", record.id)
                return record.id
    return None


async def openapi_json(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    prefix = webcall.url("healthz").rsplit("/", 1)[0]
    return _json(openapi.spec(prefix), headers={"Cache-Control": "public, max-age=300"})


async def metrics_page(request: web.Request) -> web.Response:
    webcall = request.app[WEBCALL]
    if not (webcall.config.metrics and webcall.metrics.enabled):
        raise HTTPProblem(404, "not_found", "Metrics are off: set metrics=True and install dialnexa-webcall[metrics].")
    body, content_type = webcall.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/widget.js", widget_js, name="widget")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
    app.router.add_get("/metrics", metrics_page, name="metrics")
    app.router.add_post("/sessions", create_session, name="sessions")
    app.router.add_route("OPTIONS", "/sessions", preflight_post)
    app.router.add_post("/sessions/{call_id}/end", end_session, name="session_end")
    app.router.add_route("OPTIONS", "/sessions/{call_id}/end", preflight_post)
    app.router.add_get("/sessions/{call_id}/events", session_events, name="session_events")
    app.router.add_post("/webhooks", receive_webhook, name="webhooks")
    app.router.add_post("/callbacks", request_callback, name="callbacks")
    app.router.add_route("OPTIONS", "/callbacks", preflight_post)
    app.router.add_get("/call/{agent}", call_page, name="call_page")
    app.router.add_get("/call.css", call_css, name="call_css")
    app.router.add_get("/snippet", snippet_page, name="snippet")
