"""The emulator's DialNexa REST API under ``/v1`` (bearer-key auth), plus 410 answers on the retired legacy paths.

Documented routes follow DialNexa's OpenAPI (field names, status codes, error bodies); ``POST /v1/web-calls`` is the
contract webcall assumes for browser calls (DESIGN.md §4).
"""

from __future__ import annotations

import functools
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from webcall.dialnexa.facts import DOCUMENTED_SUBSCRIPTION_EVENTS
from webcall.emulator.errors import ApiError
from webcall.emulator.keys import CONFIG_KEY, STATE_KEY, STATS_KEY, TASKS_KEY
from webcall.emulator.listing import parse_call_query
from webcall.emulator.phone import simulate_phone_call
from webcall.emulator.state import AgentVersion, Call, EmulatedAgent, EmulatorState, Webhook, new_id
from webcall.emulator.validation import BodyValidator, read_json_object
from webcall.emulator.webhooks import undocumented

log = logging.getLogger("webcall.emulator")

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CALL_ID_FORMAT = "call_"
NOTES_MAX_KEYS = 15
WEBHOOKS_MAX_LIMIT = 100
MASKED_SECRET = "********"
RETIRED_ON = "2026-07-31"
# DialNexa's documented end reasons (an open set upstream; the emulator accepts these on POST /v1/calls/{id}/end).
END_REASONS = (
    "agent_disconnected",
    "user_disconnected",
    "user_did_not_pick_up",
    "user_busy",
    "user_unreachable",
    "invalid_phone_number",
    "destination_forbidden",
    "network_failure",
    "voicemail_detected",
)
LEGACY_PREFIXES = ("/calls", "/agents", "/user-webhooks")


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _given(value: T | None) -> T:
    """A value a validator has vouched for (it raised otherwise)."""
    if value is None:
        raise ApiError(400, "Invalid request")
    return value


# -- auth ---------------------------------------------------------------------------------------------------------
def _check_api_key(request: web.Request) -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    keys = request.app[STATE_KEY].api_keys
    if scheme.lower() == "bearer" and key:
        # Compare against every key, so the time taken does not tell which one nearly matched.
        matched = [hmac.compare_digest(key.encode(), k.encode()) for k in keys]
        if any(matched):
            return
    raise ApiError(401, "API key is missing or invalid", headers={"WWW-Authenticate": "Bearer"})


def authed(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        _check_api_key(request)
        return await handler(request)

    return wrapper


# -- helpers ------------------------------------------------------------------------------------------------------
def _resolve_agent(
    state: EmulatorState, agent_id: str, number: int | None, *, not_found: str
) -> tuple[EmulatedAgent, AgentVersion]:
    agent = state.agents.get(agent_id)
    if agent is None:
        raise ApiError(404, not_found)
    version = agent.published_version(number)
    if version is None:
        if number is not None:
            raise ApiError(400, f"agent_version_number {number} is not a published version of agent {agent_id}")
        raise ApiError(400, f"Agent {agent_id} has no published version")
    return agent, version


def _call_from_path(request: web.Request) -> Call:
    call_id = request.match_info["id"]
    suffix = call_id.removeprefix(CALL_ID_FORMAT)
    if not call_id.startswith(CALL_ID_FORMAT) or not suffix.isascii() or not suffix.isalnum():
        raise ApiError(400, "Invalid call ID format")
    call = request.app[STATE_KEY].calls.get(call_id)
    if call is None:
        raise ApiError(404, "Call not found")
    return call


def _webhook_from_path(request: web.Request) -> Webhook:
    hook = request.app[STATE_KEY].webhooks.get(request.match_info["id"])
    if hook is None:
        raise ApiError(404, "Webhook not found")
    return hook


def _single_valued_query(request: web.Request) -> dict[str, str]:
    """The query as a plain dict; a repeated parameter is a 400."""
    query = request.query
    if len(set(query)) != len(query):
        raise ApiError(400, "Invalid query parameters")
    return dict(query)


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "Invalid query parameters")
    return int(raw)


def _webhook_json(state: EmulatorState, hook: Webhook, *, masked: bool) -> dict[str, Any]:
    body = state.webhook_json(hook)
    body["createdAt"] = iso_utc(hook.created_at)
    body["updatedAt"] = iso_utc(hook.updated_at)
    if masked:
        body["secret"] = MASKED_SECRET
    return body


# -- web calls ----------------------------------------------------------------------------------------------------
@authed
async def create_web_call(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await read_json_object(request)
    v = BodyValidator(body, ("agent_id", "agent_version_number", "metadata", "notes"))
    agent_id = v.string("agent_id", required=True)
    number = v.integer("agent_version_number", minimum=1)
    metadata = v.obj("metadata")
    notes = v.obj("notes", max_keys=NOTES_MAX_KEYS)
    v.finish()
    agent, version = _resolve_agent(state, _given(agent_id), number, not_found="Agent not found")
    call = state.create_call(type="web", agent=agent, version=version, metadata=metadata or {}, notes=notes)
    request.app[STATS_KEY].calls_created["web"] += 1
    origin = request.app[CONFIG_KEY].public_url or f"{request.scheme}://{request.host}"
    log.info("emulator: web call %s created for agent %s", call.id, agent.id)
    return web.json_response(
        {
            "id": call.id,
            "type": "web_call",
            "agent_id": call.agent_id,
            "agent_version_number": call.agent_version_number,
            "status": call.status,
            "access_token": call.access_token,
            "expires_at": iso_utc(_given(call.token_expires_at)),
            "media": {
                "transport": "webrtc-whip",
                "whip_url": f"{origin}/v1/web-calls/{call.id}/whip",
                "ice_servers": [dict(server) for server in request.app[CONFIG_KEY].ice_servers],
            },
        },
        status=201,
    )


# -- calls --------------------------------------------------------------------------------------------------------
@authed
async def create_phone_call(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    config = request.app[CONFIG_KEY]
    body = await read_json_object(request)
    v = BodyValidator(body, ("phone_number", "agent_id", "agent_version_number", "metadata", "notes"))
    phone_number = v.phone_number("phone_number", required=True)
    agent_id = v.string("agent_id", required=True)
    number = v.integer("agent_version_number", minimum=1)
    metadata = v.obj("metadata", required=True)
    notes = v.obj("notes", max_keys=NOTES_MAX_KEYS)
    v.finish()
    agent, version = _resolve_agent(state, _given(agent_id), number, not_found="Agent or phone number not found")
    call = state.create_call(
        type="phone",
        agent=agent,
        version=version,
        metadata=_given(metadata),
        notes=notes,
        to_number=_given(phone_number),
    )
    request.app[STATS_KEY].calls_created["phone"] += 1
    request.app[TASKS_KEY].spawn(
        simulate_phone_call(
            state, call, ring_seconds=config.phone_ring_seconds, talk_seconds=config.phone_talk_seconds
        ),
        name=f"emulator-phone-{call.id}",
    )
    log.info("emulator: phone call %s created for agent %s", call.id, agent.id)
    return web.json_response(
        {
            "id": call.id,
            "to_phone_number": call.to_number,
            "agent_id": call.agent_id,
            "agent_version_number": call.agent_version_number,
        },
        status=201,
    )


@authed
async def list_calls(request: web.Request) -> web.StreamResponse:
    query = parse_call_query(_single_valued_query(request))
    return web.json_response(query.select(request.app[STATE_KEY]))


@authed
async def get_call(request: web.Request) -> web.StreamResponse:
    call = _call_from_path(request)
    return web.json_response(request.app[STATE_KEY].call_json(call))


@authed
async def end_call(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    call = _call_from_path(request)
    body = await read_json_object(request, optional=True)
    v = BodyValidator(body, ("reason",))
    reason = v.one_of("reason", END_REASONS)
    v.finish()
    if not state.end_call(call, reason or "agent_disconnected"):
        raise ApiError(409, "Call has already ended")
    log.info("emulator: call %s ended through the API (%s)", call.id, call.end_reason)
    return web.json_response(state.call_json(call))


# -- agents -------------------------------------------------------------------------------------------------------
@authed
async def list_agents(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    return web.json_response({"agents": [state.agent_json(a) for a in state.agents.values()]})


@authed
async def get_agent(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    agent = state.agents.get(request.match_info["id"])
    if agent is None:
        raise ApiError(404, "Agent not found")
    return web.json_response(state.agent_json(agent))


# The fields of DialNexa's updateAgent the emulator models; ``webhook_enabled`` is its assumed name for the dashboard's
# "Enable Webhook" setting (the emulator's agents report it under that name too).
_AGENT_EDITS = (
    "title",
    "version_title",
    "welcome_message",
    "prompt_text",
    "default_dynamic_variables",
    "webhook_id",
    "webhook_enabled",
)
_AGENT_UPDATE_FIELDS = ("version_number", *_AGENT_EDITS, "is_published", "update_deployment")


@authed
async def update_agent(request: web.Request) -> web.StreamResponse:
    """``PATCH /v1/agents/{id}``, DialNexa's updateAgent: ``version_number`` (required) names the version edited —
    its ``version_title``, ``welcome_message``, ``prompt_text`` and ``default_dynamic_variables``; ``is_published:
    true`` publishes it — and ``title``, ``webhook_id`` and ``webhook_enabled`` change the agent. As DialNexa documents,
    a published version cannot be updated except to publish it, unless ``update_deployment`` is true; nothing
    unpublishes a version. ``webhook_id`` must name one of the account's webhooks (``""`` or ``null`` unbinds the
    agent, which then sends to every subscription): an assumption, DialNexa does not say."""
    state = request.app[STATE_KEY]
    agent = state.agents.get(request.match_info["id"])
    if agent is None:
        raise ApiError(404, "Agent not found")
    body = await read_json_object(request)
    v = BodyValidator(body, _AGENT_UPDATE_FIELDS)
    number = v.integer("version_number", required=True, minimum=1)
    title = v.string("title", max_length=70)
    version_title = v.string("version_title", max_length=150)
    welcome_message = v.string("welcome_message")
    prompt = v.string("prompt_text")
    defaults = v.obj("default_dynamic_variables")
    webhook_enabled = v.boolean("webhook_enabled")
    publish = v.boolean("is_published")
    update_deployment = v.boolean("update_deployment")
    if defaults is not None and not all(isinstance(value, str) for value in defaults.values()):
        v.errors.append("each value in default_dynamic_variables must be a string")
    webhook_given = "webhook_id" in body
    webhook_id = body.get("webhook_id")
    if webhook_given and webhook_id is not None and not isinstance(webhook_id, str):
        v.errors.append("webhook_id must be a string")
    elif webhook_id and webhook_id not in state.webhooks:
        v.errors.append(f"webhook_id {webhook_id} is not a webhook of this organization")
    v.finish()
    version = next((each for each in agent.versions if each.version_number == number), None)
    if version is None:
        raise ApiError(404, f"Version {number} of agent {agent.id} not found")
    if version.is_published and publish is False:
        raise ApiError(400, f"Version {number} is published; a published version cannot be unpublished")
    edits = [name for name in _AGENT_EDITS if name in body]
    if version.is_published and edits and not update_deployment:
        raise ApiError(
            400,
            f"Version {number} is published and cannot be updated ({', '.join(edits)}); "
            "set update_deployment to true to change it",
        )
    if title is not None:
        agent.name = title
    if webhook_given:
        agent.webhook_id = webhook_id or None
    if webhook_enabled is not None:
        agent.webhook_enabled = webhook_enabled
    if version_title is not None:
        version.title = version_title
    if welcome_message is not None:
        version.welcome_message = welcome_message
    if prompt is not None:
        version.prompt = prompt
    if defaults is not None:
        version.default_dynamic_variables = dict(defaults)
    if publish:
        version.is_published = True
    log.info("emulator: agent %s updated (version %d%s)", agent.id, number, ", published" if publish else "")
    return web.json_response(state.agent_json(agent))


# -- user webhooks ------------------------------------------------------------------------------------------------
_WEBHOOK_FIELDS = ("url", "events", "secret", "is_active")


@authed
async def create_webhook(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await read_json_object(request)
    v = BodyValidator(body, _WEBHOOK_FIELDS)
    url = v.url("url", required=True)
    events = _subscription_events(v, required=True)
    secret = v.string("secret", required=True)
    is_active = v.boolean("is_active")
    v.finish()
    hook = Webhook(
        id=new_id("webhook"),
        url=_given(url),
        events=_given(events),
        secret=_given(secret),
        is_active=True if is_active is None else is_active,
    )
    state.webhooks[hook.id] = hook
    log.info("emulator: webhook %s registered for %s", hook.id, ", ".join(hook.events))
    return web.json_response(
        {"message": "Webhook created successfully", "webhook": _webhook_json(state, hook, masked=False)},
        status=201,
    )


@authed
async def list_webhooks(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    query = _single_valued_query(request)
    if not set(query) <= {"page", "limit"}:
        raise ApiError(400, "Invalid query parameters")
    page = _int_param(query, "page", 1, 1, 1_000_000)
    limit = _int_param(query, "limit", 10, 1, WEBHOOKS_MAX_LIMIT)
    hooks = sorted(state.webhooks.values(), key=lambda h: h.created_at, reverse=True)
    window = hooks[(page - 1) * limit : page * limit]
    return web.json_response(
        {
            "message": "Webhooks fetched successfully",
            "webhooks": [_webhook_json(state, h, masked=True) for h in window],
            "page": page,
            "limit": limit,
            "total": len(hooks),
            "totalPages": math.ceil(len(hooks) / limit),
        }
    )


@authed
async def get_webhook(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    hook = _webhook_from_path(request)
    return web.json_response(
        {"message": "Webhook fetched successfully", "webhook": _webhook_json(state, hook, masked=True)}
    )


def _subscription_events(v: BodyValidator, *, required: bool = False) -> list[str] | None:
    """``events``: a non-empty list of the subscription names DialNexa documents."""
    events = v.string_list("events", required=required)
    if events is not None and (unknown := undocumented(events)):
        documented = ", ".join(DOCUMENTED_SUBSCRIPTION_EVENTS)
        v.errors.append(f"events must be documented webhook events ({documented}); unknown: {', '.join(unknown)}")
        return None
    return events


@authed
async def update_webhook(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    hook = _webhook_from_path(request)
    body = await read_json_object(request)
    v = BodyValidator(body, _WEBHOOK_FIELDS)
    url = v.url("url")
    events = _subscription_events(v)
    secret = v.string("secret")
    is_active = v.boolean("is_active")
    for name in _WEBHOOK_FIELDS:
        if name in body and body[name] is None:
            v.errors.append(f"{name} should not be null")
    v.finish()
    if url is not None:
        hook.url = url
    if events is not None:
        hook.events = events
    if secret is not None:
        hook.secret = secret
    if is_active is not None:
        hook.is_active = is_active
    hook.updated_at = time.time()
    return web.json_response(
        {"message": "Webhook updated successfully", "webhook": _webhook_json(state, hook, masked=True)}
    )


@authed
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    hook = _webhook_from_path(request)
    del state.webhooks[hook.id]
    log.info("emulator: webhook %s deleted", hook.id)
    return web.json_response({"message": "Webhook deleted successfully"})


# -- legacy -------------------------------------------------------------------------------------------------------
async def legacy_gone(request: web.Request) -> web.StreamResponse:
    raise ApiError(
        410,
        f"The unversioned API was retired on {RETIRED_ON}; use /v1{request.path} "
        f"(base URL https://api.dialnexa.com/v1)",
    )


def add_rest_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/v1/web-calls", create_web_call)
    router.add_post("/v1/calls", create_phone_call)
    router.add_get("/v1/calls", list_calls)
    router.add_get("/v1/calls/{id}", get_call)
    router.add_post("/v1/calls/{id}/end", end_call)
    router.add_get("/v1/agents", list_agents)
    router.add_get("/v1/agents/{id}", get_agent)
    router.add_patch("/v1/agents/{id}", update_agent)
    router.add_post("/v1/user-webhooks", create_webhook)
    router.add_get("/v1/user-webhooks", list_webhooks)
    router.add_get("/v1/user-webhooks/{id}", get_webhook)
    router.add_patch("/v1/user-webhooks/{id}", update_webhook)
    router.add_delete("/v1/user-webhooks/{id}", delete_webhook)
    for prefix in LEGACY_PREFIXES:
        router.add_route("*", prefix, legacy_gone)
        router.add_route("*", prefix + "/{tail:.*}", legacy_gone)
