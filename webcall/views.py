"""The plugin's HTTP routes: each handler parses the request, calls the admission checks or the call desk, and
answers. The route table is at the end; every failure leaves through :func:`error_middleware` in one JSON shape."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from . import admission, guard, openapi, ringback, webhooks
from .dialnexa.models import iso
from .errors import (
    ConfigError,
    HTTPProblem,
    Refusal,
    StoreUnavailable,
    TokenError,
    TokenReused,
    UpstreamFailed,
    WebhookSignatureError,
    problem_response,
    upstream_problem,
)
from .events import EventParseError, parse_delivery
from .ice import link_header_values, servers_for_visitor, usable_servers
from .keys import RUNTIME
from .metrics import route_label
from .outage import store_outage
from .quality import MAX_SUMMARY_BYTES, InvalidSummary, check_summary
from .resources import Asset, page_css, templates_dir, widget_asset
from .runtime import Runtime
from .sdp import InvalidOffer, sanitize_fragment, sanitize_offer
from .sse import EventStream, ServerSentEvent
from .store.base import EventFeed, EventId

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


def _json(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    all_headers = CIMultiDict({"Cache-Control": "no-store"})
    all_headers.extend(headers or {})
    return web.Response(
        status=status, text=json.dumps(data, separators=(",", ":")), content_type=_JSON, headers=all_headers
    )


def _url(request: web.Request, name: str, **parts: str) -> str:
    """The path of one of the plugin's routes, with the mount prefix."""
    return str(request.app.router[name].url_for(**parts))


REFUSAL_STATUS = {
    "ticket_invalid": 401,
    "ticket_expired": 401,
    "call_expired": 502,
    "invalid_offer": 400,
    "not_found": 404,
    "precondition_failed": 412,
}
"""The HTTP status of each :class:`~webcall.errors.Refusal` code the call desk and the ticket verifier raise."""


def domain_problem(err: TokenError | Refusal | UpstreamFailed) -> HTTPProblem:
    """The answer to a refusal raised by code that knows nothing of HTTP (the call desk, the tokens, the tickets)."""
    if isinstance(err, UpstreamFailed):
        return upstream_problem(err.cause, doing=err.doing)
    if isinstance(err, TokenReused):
        return HTTPProblem(401, "unauthorized", "This call's token was already used to hang up.")
    if isinstance(err, TokenError):
        return HTTPProblem(401, "unauthorized", "This call's token is missing, invalid or expired.")
    return HTTPProblem(REFUSAL_STATUS.get(err.code, 400), err.code, err.message, retry_after=err.retry_after)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the one JSON error shape; nothing unexpected reaches a client as a traceback."""
    runtime = request.app[RUNTIME]
    problem: HTTPProblem | None = None
    try:
        response = await handler(request)
    except HTTPProblem as raised:
        problem = raised
        response = problem_response(problem)
    except (TokenError, Refusal, UpstreamFailed) as refused:
        problem = domain_problem(refused)
        response = problem_response(problem)
    except StoreUnavailable as err:
        store_outage(runtime.store).failed(err, by="requests")
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
        runtime.metrics.refusal(route_label(request), problem.code)
    if not response.prepared:
        response.headers.update(guard.cors_headers(request, runtime.config))
    return response


# -- widget and pages -------------------------------------------------------------------------------------------
def _not_modified(request: web.Request, asset: Asset) -> bool:
    """Whether the browser's ``If-None-Match`` names the asset's current ETag."""
    return asset.etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(","))


async def widget_js(request: web.Request) -> web.StreamResponse:
    asset = widget_asset()
    versioned = request.query.get("v") == asset.version
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "public, max-age=300, must-revalidate",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if _not_modified(request, asset):
        return web.Response(status=304, headers=headers)
    body, encoding = asset.encoded(request.headers.get("Accept-Encoding", ""))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    return web.Response(body=body, headers={**headers, "Content-Type": "text/javascript; charset=utf-8"})


async def call_css(request: web.Request) -> web.StreamResponse:
    asset = page_css()
    headers = {"ETag": asset.etag, "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    if _not_modified(request, asset):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": "text/css; charset=utf-8"})


def _page(request: web.Request, template: str, http_status: int = 200, **context: Any) -> web.Response:
    csp = request.app[RUNTIME].upstream.content_security_policy
    html = templates().get_template(template).render(css_url=_url(request, "call_css"), csp=csp, **context)
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


def _widget_url(request: web.Request) -> str:
    return f"{_url(request, 'widget')}?v={widget_asset().version}"


async def call_page(request: web.Request) -> web.Response:
    catalog = request.app[RUNTIME].catalog
    alias = request.match_info["agent"]
    agent = catalog.get(alias)
    if agent is None:
        return _page(
            request,
            "error.html",
            404,
            status=404,
            title="Unknown agent",
            message="There is no agent to call at this address.",
        )
    return _page(
        request,
        "call.html",
        agent=alias,
        label=agent.label or alias.title(),
        widget_url=_widget_url(request),
        widget_sri=widget_asset().sri,
    )


async def snippet_page(request: web.Request) -> web.Response:
    catalog = request.app[RUNTIME].catalog
    alias = request.query.get("agent") or next(iter(catalog.aliases()), "")
    if alias not in catalog:
        raise HTTPProblem(404, "unknown_agent", "There is no agent with that name.")
    config = request.app[RUNTIME].config
    origin = guard.public_origin(request, config)  # never the request's Host: this page may be cached and shared
    return _page(
        request,
        "snippet.html",
        agent=alias,
        widget_url=_widget_url(request),
        embed_url=origin + _widget_url(request) if origin else None,
        widget_sri=widget_asset().sri,
        embed_csp=(
            f"default-src 'self'; script-src 'self' {origin}; connect-src 'self' {origin}; img-src 'self' data:"
            if origin
            else None
        ),
        tickets="required" if config.require_ticket else "accepted" if config.ticket_secrets else None,
    )


async def healthz(request: web.Request) -> web.Response:
    return health_response(await request.app[RUNTIME].health())


def health_response(report: dict[str, Any]) -> web.Response:
    """``/healthz``'s answer for a :meth:`Runtime.health` report: 200, or 503 with ``Retry-After`` when not ready."""
    if report["status"] != "ok":
        return _json(report, status=503, headers={"Retry-After": "2"})
    return _json(report)


# -- sessions ---------------------------------------------------------------------------------------------------
async def preflight_post(request: web.Request) -> web.Response:
    return guard.preflight(request, request.app[RUNTIME].config, "POST")


async def _learn_public_url(request: web.Request, runtime: Runtime) -> None:
    """On an upstream that learns the site's address from its first call (the embedded emulator), the webhook URL
    is the configured public URL or the address this server is bound to: never the request's ``Host``."""
    origin = guard.public_origin(request, runtime.config)
    if origin is not None:
        await runtime.learn_public_url(origin + _url(request, "webhooks"))


SDP_FRAGMENT = "application/trickle-ice-sdpfrag"


def _offer(body: dict[str, Any], *, local_upstream: bool) -> str:
    """The browser's SDP offer, sent with the start request, checked and its candidates trimmed (:mod:`webcall.sdp`)
    before anything billable happens. ``local_upstream``: the media server runs on this machine (the emulator), so
    the browser's loopback and private addresses are worth passing on."""
    offer = body.get("offer")
    if not isinstance(offer, str) or not offer.startswith("v=0"):
        raise HTTPProblem(
            400, "offer_required", "Send the SDP offer of the call's peer connection in 'offer' (it starts with v=0)."
        )
    try:
        checked = sanitize_offer(offer, local_upstream=local_upstream)
    except InvalidOffer as err:
        raise HTTPProblem(400, "invalid_offer", str(err)) from None
    if checked.dropped:
        log.debug("webcall: candidates left out of an offer: %s", dict(checked.dropped))
    return checked.sdp


async def create_session(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    received = await admission.receive(request, runtime)
    offer = _offer(received.body, local_upstream=runtime.upstream.is_local)
    alias, agent = admission.choose_agent(runtime, received)
    async with admission.slot(request, runtime, received) as (admitted, slot):  # given back if the start fails
        caller = await admission.spend_ticket(request, runtime, admitted, alias, agent)
        session = await runtime.desk.create_call(caller, slot)
    started = await runtime.desk.connect(caller, session, offer, slot.id)
    await _learn_public_url(request, runtime)
    call_id = started.session.id
    media_url = _url(request, "session_media", call_id=call_id)
    headers = CIMultiDict({"Location": media_url, **({"ETag": started.media_etag} if started.media_etag else {})})
    call_ice_servers = usable_servers(started.session.media.ice_servers)
    for link in link_header_values(call_ice_servers):
        headers.add("Link", link)
    return _json(
        {
            "call_id": call_id,
            "agent": alias,
            "answer": started.answer,
            "token": started.token,
            "token_expires_at": iso(datetime.fromtimestamp(started.token_expires_at, UTC)),
            "max_call_seconds": started.max_call_seconds,
            "media_url": media_url,
            "end_url": _url(request, "session_end", call_id=call_id),
            "events_url": _url(request, "session_events", call_id=call_id),
            "quality_url": _url(request, "session_quality", call_id=call_id),
            "media_etag": started.media_etag,
            "ice_servers": call_ice_servers,
            "callbacks_url": _url(request, "callbacks"),
        },
        status=201,
        headers=headers,
    )


def _bearer(request: web.Request) -> str | None:
    """The token from ``Authorization: Bearer``."""
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


MEDIA_UPDATES_PER_CALL = 20
"""Trickle and ICE-restart fragments one call may send in its lifetime: a browser trickles a handful of candidates
and restarts ICE when its network changes; each fragment passes on at most ``sdp.MAX_CANDIDATES`` candidates, so a
call can never make the media server check more than a bounded number of addresses."""


async def _limit_media_updates(runtime: Runtime, call_id: str) -> None:
    wait = await runtime.store.hit(f"rl:media:{call_id}", MEDIA_UPDATES_PER_CALL, runtime.config.max_call_seconds)
    if wait is not None:
        raise HTTPProblem(
            429, "too_many_updates", "This call has changed its connection too many times.", retry_after=wait
        )


async def update_media(request: web.Request) -> web.Response:
    """``PATCH`` the call's media resource (RFC 9725 ICE restart or trickle), relayed to DialNexa's."""
    runtime = request.app[RUNTIME]
    call_id = request.match_info["call_id"]
    runtime.desk.verify_call_token(call_id, _bearer(request))
    if request.content_type != SDP_FRAGMENT:
        raise HTTPProblem(415, "unsupported_media_type", f"Send the ICE fragment as {SDP_FRAGMENT}.")
    if_match = request.headers.get("If-Match")
    if not if_match:
        raise HTTPProblem(428, "precondition_required", "Send If-Match: * for an ICE restart, or the ETag.")
    raw = (await guard.read_body(request, runtime.config.max_body_bytes)).decode("utf-8", errors="replace")
    try:
        fragment = sanitize_fragment(raw, local_upstream=runtime.upstream.is_local)
    except InvalidOffer as err:
        raise HTTPProblem(400, "invalid_fragment", str(err)) from None
    await _limit_media_updates(runtime, call_id)
    update = await runtime.desk.update_media(call_id, fragment.sdp, content_type=SDP_FRAGMENT, if_match=if_match)
    if update.status >= 400:
        message = "DialNexa refused the ICE update" + (" (not supported)" if update.status in (405, 501) else "")
        raise HTTPProblem(update.status, "media_update_refused", message + ".", headers=update.headers)
    body = update.body or None
    return web.Response(
        status=update.status, text=body, content_type=update.content_type if body else None, headers=update.headers
    )


async def delete_media(request: web.Request) -> web.Response:
    """``DELETE`` the call's media resource: the visitor hung up (RFC 9725 §4.2)."""
    call_id = request.match_info["call_id"]
    request.app[RUNTIME].desk.verify_call_token(call_id, _bearer(request))
    await request.app[RUNTIME].desk.delete_media(call_id)
    return web.Response(status=200)


async def preflight_media(request: web.Request) -> web.Response:
    return guard.preflight(request, request.app[RUNTIME].config, "PATCH, DELETE")


async def report_quality(request: web.Request) -> web.Response:
    """The browser's quality summary of the call (:mod:`webcall.quality`), sent once as the call ends."""
    runtime = request.app[RUNTIME]
    call_id = request.match_info["call_id"]
    runtime.desk.verify_call_token(call_id, _bearer(request))
    body = await guard.read_json(request, MAX_SUMMARY_BYTES)
    try:
        summary = check_summary(body)
    except InvalidSummary as err:
        raise HTTPProblem(400, "invalid_quality", str(err)) from None
    if await runtime.desk.keep_quality(call_id, summary):
        runtime.metrics.call_quality(summary)
    return web.Response(status=204, headers=guard.cors_headers(request, runtime.config))


async def end_session(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    record = await request.app[RUNTIME].desk.hang_up_for_visitor(call_id, _bearer(request))
    return _json({"call_id": call_id, "status": record.status if record else "ended"})


# -- webhooks from DialNexa -------------------------------------------------------------------------------------
WEBHOOK_MAX_BYTES = 256 * 1024


async def receive_webhook(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    raw = await guard.read_body(request, WEBHOOK_MAX_BYTES)
    try:
        webhooks.verify(raw, request.headers, runtime.subscription.secrets)
    except WebhookSignatureError as err:
        runtime.metrics.webhook("rejected")
        log.warning("webcall: webhook refused (%s) from %s", err, request.remote)
        raise HTTPProblem(401, "invalid_signature", "Invalid signature.") from None
    try:
        event_type, call = parse_delivery(raw)
    except EventParseError as err:
        runtime.metrics.webhook("invalid")
        log.warning("webcall: signed webhook ignored: %s", err)
        raise HTTPProblem(400, "invalid_event", "The webhook body is not a call event.") from None
    fresh = await runtime.desk.record_delivery(event_type, call)
    runtime.metrics.webhook("accepted" if fresh else "duplicate")
    return _json({"received": True, "duplicate": not fresh})


# -- browser events (SSE) ---------------------------------------------------------------------------------------


def _last_event_id(request: web.Request) -> EventId | None:
    """The last event the browser has (``Last-Event-ID`` on a reconnect); anything unreadable replays everything."""
    return EventId.parse(request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or "")


async def session_events(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    call_id = request.match_info["call_id"]
    runtime.desk.verify_call_token(call_id, request.query.get("token") or _bearer(request))
    # A call's 4th stream ends its oldest; beyond the process's cap, 503 + Retry-After before anything is opened.
    async with runtime.streams.open(call_id, runtime.store.subscribe) as subscription:
        return await _relay_events(request, runtime, call_id, subscription)


async def _relay_events(
    request: web.Request, runtime: Runtime, call_id: str, subscription: EventFeed
) -> web.StreamResponse:
    """Send the events the browser does not have yet (after ``Last-Event-ID``), then each as it comes, until the
    call ends, the browser goes away or the server shuts down."""
    sent = _last_event_id(request)
    await subscription.start()  # before reading the backlog, so nothing falls between the two
    backlog = await runtime.store.events_after(call_id, sent)

    def as_event(item: tuple[EventId, dict[str, Any]]) -> ServerSentEvent | None:
        """The event as the browser receives it, unless the browser has it already; the call's end is the last."""
        nonlocal sent
        event_id, event = item
        if not event_id.is_after(sent):
            return None
        sent = event_id
        return ServerSentEvent(json.dumps(event), id=str(event_id), last=event["type"] == "call.ended")

    stream = EventStream(request, guard.cors_headers(request, runtime.config))
    return await stream.relay(subscription, as_event=as_event, backlog=backlog)


# -- "call me back" --------------------------------------------------------------------------------------------
async def request_callback(request: web.Request) -> web.Response:
    """Ring the visitor's phone. The number is judged before anything is counted or asked of DialNexa (toll fraud:
    see :mod:`webcall.ringback`); then the visit, then the call-back budgets."""
    runtime = request.app[RUNTIME]
    config = runtime.config
    received = await admission.receive(request, runtime)
    ringback.require_enabled(config)
    to = ringback.destination(received.body, config.callback_countries)
    ringback.require_consent(received.body)
    alias, agent = admission.choose_agent(runtime, received)
    async with (
        admission.visit(request, runtime, received) as admitted,  # counted, and given back if refused
        ringback.budgets(runtime, to, ringback.requester(admitted)),
    ):
        caller = await admission.spend_ticket(request, runtime, admitted, alias, agent)
    call_id = await runtime.desk.ring_back(caller, to.e164)
    await _learn_public_url(request, runtime)
    return _json({"callback_id": call_id, "status": "requested"}, status=202)


ICE_SERVER_REQUESTS_PER_WINDOW = 30
"""ICE-server requests one visitor address may make per rate-limit window: the widget asks once when the visitor
shows interest (and again when credentials near their end), so this only stops someone harvesting TURN credentials."""


async def ice_servers(request: web.Request) -> web.Response:
    """``POST`` (so that the browser sends ``Origin``): the ICE servers this visitor's browser gathers with (STUN and
    TURN, with TURN credentials minted now), asked for before the click; ``no-store``, origin-checked and rate-limited
    per address like a start."""
    runtime = request.app[RUNTIME]
    config = runtime.config
    guard.check_origin(request, config)
    address = guard.address_key(guard.client_ip(request, config.trusted_proxies))
    wait = await runtime.store.hit(f"rl:ice:{address}", ICE_SERVER_REQUESTS_PER_WINDOW, config.rate_limit_window)
    if wait is not None:
        raise HTTPProblem(429, "rate_limited", "Too many requests from your network. Please wait.", retry_after=wait)
    hooked = None
    if config.ice_servers_hook is not None:
        hooked = await admission.run_hook("ice_servers_hook", config.ice_servers_hook, request)
    try:
        servers = servers_for_visitor(config.ice_servers, config.turn, hooked)
    except ConfigError as err:
        log.error("webcall: the host's ice_servers_hook returned what is not ICE servers: %s", err)
        raise HTTPProblem(500, "hook_failed", "The site could not prepare this call.") from None
    ttl = config.turn_ttl if config.turn is not None or hooked is not None else None
    return _json({"ice_servers": servers, "ttl": ttl}, headers=guard.cors_headers(request, config))


async def callback_countries(request: web.Request) -> web.Response:
    """The countries call-backs may ring (none: call-backs are off), so the widget offers no form that can only
    fail."""
    countries = request.app[RUNTIME].config.callback_countries
    return _json({"countries": list(countries)}, headers={"Cache-Control": "public, max-age=60"})


# -- operations -------------------------------------------------------------------------------------------------
async def openapi_json(request: web.Request) -> web.Response:
    prefix = _url(request, "healthz").rsplit("/", 1)[0]
    return _json(openapi.spec(prefix), headers={"Cache-Control": "public, max-age=300"})


async def _sample_outbox(runtime: Runtime) -> None:
    """Set the outbox and dead-letter gauges from the store as it is now (the queue every worker shares); while the
    store is unreachable they keep their last values."""
    try:
        runtime.metrics.depths(await runtime.store.outbox_depth(), await runtime.store.dead_count())
    except StoreUnavailable as err:
        store_outage(runtime.store).failed(err, by="metrics")


async def metrics_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if not (runtime.config.metrics and runtime.metrics.enabled):
        raise HTTPProblem(404, "not_found", "Metrics are off: set metrics=True and install dialnexa-webcall[metrics].")
    await _sample_outbox(runtime)
    body, content_type = runtime.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


@functools.cache
def templates() -> jinja2.Environment:
    """The plugin's page templates (call page, snippet, errors), loaded once per process."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()), autoescape=True)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/widget.js", widget_js, name="widget")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
    app.router.add_get("/metrics", metrics_page, name="metrics")
    app.router.add_post("/sessions", create_session, name="sessions")
    app.router.add_route("OPTIONS", "/sessions", preflight_post)
    app.router.add_patch("/sessions/{call_id}/media", update_media, name="session_media")
    app.router.add_delete("/sessions/{call_id}/media", delete_media)
    app.router.add_route("OPTIONS", "/sessions/{call_id}/media", preflight_media)
    app.router.add_post("/sessions/{call_id}/end", end_session, name="session_end")
    app.router.add_route("OPTIONS", "/sessions/{call_id}/end", preflight_post)
    app.router.add_get("/sessions/{call_id}/events", session_events, name="session_events")
    app.router.add_post("/sessions/{call_id}/quality", report_quality, name="session_quality")
    app.router.add_route("OPTIONS", "/sessions/{call_id}/quality", preflight_post)
    app.router.add_post("/webhooks", receive_webhook, name="webhooks")
    app.router.add_post("/ice-servers", ice_servers, name="ice_servers")
    app.router.add_route("OPTIONS", "/ice-servers", preflight_post)
    app.router.add_post("/callbacks", request_callback, name="callbacks")
    app.router.add_get("/callbacks", callback_countries)
    app.router.add_route("OPTIONS", "/callbacks", preflight_post)
    app.router.add_get("/call/{agent}", call_page, name="call_page")
    app.router.add_get("/call.css", call_css, name="call_css")
    app.router.add_get("/snippet", snippet_page, name="snippet")
