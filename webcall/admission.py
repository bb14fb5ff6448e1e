"""Who may start a call, with which agent and variables: the checks before any billable work, in two steps.

:func:`receive` costs nothing and counts nowhere: the origin allowlist, the JSON body and the call ticket's
signature. The views then check what the request asks for (the SDP offer, the agent alias, a call-back's number),
still without counting. Only a request that passed all of that is counted by :func:`admit`: per visitor address
(IPv6 per /64) and for the whole site, in one store step with a start request's concurrent-call slot (given back if a
later check refuses), then the host's ``authorize`` hook with the per-identity limit and the ``bot_check`` hook.
Garbage therefore never uses up the site-wide limit that protects every visitor. :func:`caller` settles the
``{{variables}}`` (visitor values the host allows, overridden by the ticket's, overridden by the host hook's) and
reserves the ticket last, so a refusal never costs the visitor their ticket; a start that fails before DialNexa has
a call gives it back with :func:`release_ticket`.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import guard
from .calls import Caller, Slot
from .config import Agent
from .errors import HTTPProblem
from .runtime import Runtime
from .tickets import LEEWAY_SECONDS, CallTicket

log = logging.getLogger("webcall")


@dataclass(frozen=True)
class Received:
    """A request from an allowed origin with a JSON body and, if it carries one, a valid call ticket: what
    :func:`receive` checked without counting it anywhere."""

    origin: str
    body: dict[str, Any]
    ticket: CallTicket | None


@dataclass(frozen=True)
class Admitted:
    """A request that passed the checks every billable route shares."""

    origin: str
    body: dict[str, Any]
    identity: str | None
    address: str
    """The visitor's address as every per-address limit counts it (:func:`guard.address_key`)."""
    ticket: CallTicket | None = None
    slot: Slot | None = None
    """The concurrent-call slot claimed for a start request (``claim_slot``); the caller gives it to the call, or
    back if it refuses the request."""


async def receive(request: web.Request, runtime: Runtime) -> Received:
    """The checks that cost nothing: the origin, the JSON body, the call ticket's signature and expiry."""
    config = runtime.config
    origin = guard.check_origin(request, config)
    body = await guard.read_json(request, config.max_body_bytes)
    return Received(origin=origin, body=body, ticket=_read_ticket(runtime, body))


async def admit(request: web.Request, runtime: Runtime, received: Received, *, claim_slot: bool = False) -> Admitted:
    """Count a well-formed request (per address, site-wide, and with ``claim_slot`` a concurrent-call slot), then
    run the host's hooks and the per-identity limit."""
    address = guard.address_key(guard.client_ip(request, runtime.config.trusted_proxies))
    slot = await _count_visit(runtime, address, claim_slot=claim_slot)
    ticket = received.ticket
    try:
        identity = await _authorize(request, runtime, received.body)
        if ticket is not None:
            if ticket.subject != identity:
                await _limit_identity(runtime, ticket.subject)
            identity = identity or ticket.subject
    except BaseException:
        await _withdraw(runtime, slot)
        raise
    return Admitted(
        origin=received.origin, body=received.body, identity=identity, address=address, ticket=ticket, slot=slot
    )


async def withdraw(runtime: Runtime, admitted: Admitted) -> None:
    """A counted request refused before anything billable (a hook, its variables, every line busy): its slot back,
    and its share of the site-wide limit (its address keeps the count)."""
    await _withdraw(runtime, admitted.slot)


async def _withdraw(runtime: Runtime, slot: Slot | None) -> None:
    await runtime.desk.give_back(slot)
    await runtime.store.uncount(GLOBAL_LIMIT_KEY)


def choose_agent(runtime: Runtime, received: Received) -> tuple[str, Agent]:
    """The alias the body names, and its agent; one the call ticket allows, if there is a ticket."""
    alias = received.body.get("agent")
    if not isinstance(alias, str) or not alias:
        raise HTTPProblem(400, "invalid_request", 'Name the agent to call: {"agent": "sales"}.')
    agent = runtime.catalog.get(alias)
    if agent is None:
        raise HTTPProblem(404, "unknown_agent", "There is no agent with that name.")
    if received.ticket is not None and alias not in received.ticket.agents:
        raise HTTPProblem(403, "ticket_agent", "The call ticket does not allow calling this agent.")
    return alias, agent


async def caller(request: web.Request, runtime: Runtime, admitted: Admitted, alias: str, agent: Agent) -> Caller:
    """Who calls which agent, with the call's ``{{variables}}``; the last check, so it reserves the call ticket."""
    ticket = admitted.ticket
    host_values: dict[str, Any] = {}
    if runtime.config.variables is not None:
        host_values = dict(await run_hook("variables", runtime.config.variables, request, alias, agent) or {})
    signed_values = {**(ticket.variables if ticket else {}), **host_values}
    visitor_values = guard.visitor_variables(
        admitted.body.get("variables"), agent.visitor_variables, signed_values, runtime.config.max_visitor_value_length
    )
    if admitted.slot is not None and not admitted.slot.taken:  # refused before the ticket is reserved
        raise HTTPProblem(
            503, "capacity_reached", "All lines are busy right now; try again in a minute.", retry_after=30
        )
    if ticket is not None:
        await _reserve(runtime, ticket)
    return Caller(
        alias=alias,
        agent=agent,
        variables={**agent.defaults, **visitor_values, **signed_values},
        origin=admitted.origin,
        identity=admitted.identity,
        reports_quality=admitted.body.get("quality_report") is True,
    )


def _read_ticket(runtime: Runtime, body: dict[str, Any]) -> CallTicket | None:
    """The verified call ticket the widget sent, if any; refused when one is required and missing."""
    raw = body.get("ticket")
    if raw is None or raw == "":
        if runtime.config.require_ticket:
            raise HTTPProblem(401, "ticket_required", "Calls here need a call ticket from the site's own page.")
        return None
    if runtime.tickets is None:
        raise HTTPProblem(400, "ticket_invalid", "This service accepts no call tickets (no WEBCALL_TICKET_SECRETS).")
    return runtime.tickets.verify(raw)


def _ticket_key(ticket: CallTicket) -> str:
    return f"ticket:{ticket.ticket_id}"


async def _reserve(runtime: Runtime, ticket: CallTicket) -> None:
    """A ticket admits one call: its id is reserved for this request until well after the ticket expires. The
    reservation stands once DialNexa has a call for it, and is given back (:func:`release_ticket`) if the start
    fails before that; concurrent requests with one ticket find it reserved."""
    remember_for = max(ticket.expires_at - time.time(), 0) + 2 * LEEWAY_SECONDS
    if not await runtime.store.use_once(_ticket_key(ticket), ttl=remember_for):
        raise HTTPProblem(409, "ticket_used", "This call ticket was already used; reload the page for a new one.")


async def release_ticket(runtime: Runtime, ticket: CallTicket | None) -> None:
    """Give back a ticket reserved by a start that failed before DialNexa created a call, so "Try again" works."""
    if ticket is not None:
        await runtime.store.forget_once(_ticket_key(ticket))


GLOBAL_LIMIT_KEY = "rl:global"
"""The site-wide counter: well-formed requests from every address together (a flood from many addresses)."""


async def _count_visit(runtime: Runtime, address: str, *, claim_slot: bool) -> Slot | None:
    """Per visitor ``address`` and for the whole site (a flood from many addresses), counted together in one step;
    with ``claim_slot``, a concurrent-call slot is claimed in that step too (unless a limit refuses the visit)."""
    config = runtime.config
    limits = [(f"rl:ip:{address}", config.rate_limit), (GLOBAL_LIMIT_KEY, config.global_rate_limit)]
    slot = None
    if claim_slot:
        desk = runtime.desk
        slot_id = secrets.token_urlsafe(12)
        refused, taken = await runtime.store.hit_all_and_acquire(
            limits, config.rate_limit_window, slot_id, desk.max_concurrent_calls, desk.slot_lease_seconds
        )
        slot = Slot(slot_id, taken)
    else:
        refused = await runtime.store.hit_all(limits, config.rate_limit_window)
    if refused is not None:
        which, wait = refused
        raise guard.rate_limited(("this address", "everyone right now")[which], wait)
    return slot


async def _authorize(request: web.Request, runtime: Runtime, body: dict[str, Any]) -> str | None:
    """The host's authorize and bot-check hooks, and the per-identity rate limit; returns the identity."""
    config = runtime.config
    identity: str | None = None
    if config.authorize is not None:
        verdict = await run_hook("authorize", config.authorize, request)
        if verdict is False:
            raise HTTPProblem(403, "forbidden", "You are not allowed to start a call.")
        identity = verdict if isinstance(verdict, str) and verdict else None
    if identity is not None:
        await _limit_identity(runtime, identity)
    if config.bot_check is not None:
        token = body.get("bot_token")
        passed = await run_hook("bot_check", config.bot_check, request, token if isinstance(token, str) else None)
        if passed is not True:
            raise HTTPProblem(403, "bot_check_failed", "The anti-robot check did not pass; reload the page and retry.")
    return identity


async def _limit_identity(runtime: Runtime, identity: str) -> None:
    config = runtime.config
    await guard.rate_limit(
        runtime.store, f"rl:id:{identity}", config.identity_rate_limit, config.rate_limit_window, who="this account"
    )


async def run_hook(name: str, hook: Callable[..., Any], *args: Any) -> Any:
    """Run a host hook, sync or async; its own HTTPProblem passes through, anything else is a 500 logged once."""
    try:
        value = hook(*args)
        return await value if inspect.isawaitable(value) else value
    except HTTPProblem:
        raise
    except Exception as err:
        log.exception("webcall: the host's %s hook failed", name)
        raise HTTPProblem(500, "hook_failed", "The site could not prepare this call.") from err
