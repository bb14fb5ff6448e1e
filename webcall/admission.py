"""Who may start a call, with which agent and variables: the checks before any billable work, in two steps.

:func:`receive` costs nothing and counts nowhere: the origin allowlist, the JSON body and the call ticket's
signature. The views then check what the request asks for (the SDP offer, the agent alias, a call-back's number),
still without counting. Only a request that passed all of that is counted, by :func:`slot` (a start, which claims a
concurrent-call slot in the same store step) or :func:`visit` (a call-back): per visitor address (IPv6 per /64) and
for the whole site, then the host's ``authorize`` hook with the per-identity limit and the ``bot_check`` hook.
Garbage therefore never uses up the site-wide limit that protects every visitor. :func:`spend_ticket` settles the
``{{variables}}`` (visitor values the host allows, overridden by the ticket's, overridden by the host hook's) and
reserves the ticket last, so a refusal never costs the visitor their ticket.

Both context managers are the one owner of what a counted request holds: should their body fail, the request gives
back its concurrent-call slot (unless the call desk has taken it over), the call ticket it reserved (no call was
made: "Try again" may use it) and, when nothing billable was asked, its share of the site-wide limit.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
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


@dataclass(kw_only=True)
class Admitted:
    """A counted request that passed the checks every billable route shares, and what it holds while its body runs."""

    origin: str
    body: dict[str, Any]
    identity: str | None
    address: str
    """The visitor's address as every per-address limit counts it (:func:`guard.address_key`)."""
    ticket: CallTicket | None = None
    slot: Slot | None = None
    """The concurrent-call slot claimed for a start request (:func:`slot`)."""
    reserved_ticket: CallTicket | None = None
    """The call ticket :func:`spend_ticket` reserved for this request, given back if the request fails."""


async def receive(request: web.Request, runtime: Runtime) -> Received:
    """The checks that cost nothing: the origin, the JSON body, the call ticket's signature and expiry."""
    config = runtime.config
    origin = guard.check_origin(request, config)
    body = await guard.read_json(request, config.max_body_bytes)
    return Received(origin=origin, body=body, ticket=_read_ticket(runtime, body))


@contextlib.asynccontextmanager
async def slot(request: web.Request, runtime: Runtime, received: Received) -> AsyncIterator[tuple[Admitted, Slot]]:
    """Count a start request with its concurrent-call slot (one store step), run the host's hooks, and hold the slot
    for the body, which starts the call: :meth:`CallDesk.create_call` takes the slot over when it asks DialNexa for
    the call. If the body fails before that, the slot is given back (see the module's docstring)."""
    async with visit(request, runtime, received, claim_slot=True) as admitted:
        assert admitted.slot is not None  # claim_slot=True: the visit's store step claimed one
        yield admitted, admitted.slot


@contextlib.asynccontextmanager
async def visit(
    request: web.Request, runtime: Runtime, received: Received, *, claim_slot: bool = False
) -> AsyncIterator[Admitted]:
    """Count a well-formed request (per address, site-wide, and with ``claim_slot`` a concurrent-call slot), run the
    host's hooks and the per-identity limit, and give back what the request holds if anything fails before the
    body ends."""
    address = guard.address_key(guard.client_ip(request, runtime.config.trusted_proxies))
    claimed = await _count_visit(runtime, address, claim_slot=claim_slot)
    admitted: Admitted | None = None
    try:
        identity = await _identify(request, runtime, received)
        admitted = Admitted(
            origin=received.origin,
            body=received.body,
            identity=identity,
            address=address,
            ticket=received.ticket,
            slot=claimed,
        )
        yield admitted
    except BaseException:
        await _give_back(runtime, claimed, admitted.reserved_ticket if admitted is not None else None)
        raise


async def _identify(request: web.Request, runtime: Runtime, received: Received) -> str | None:
    """Who asks: the host's ``authorize`` hook's answer, else the call ticket's subject (each rate-limited)."""
    identity = await _authorize(request, runtime, received.body)
    ticket = received.ticket
    if ticket is not None:
        if ticket.subject != identity:
            await _limit_identity(runtime, ticket.subject)
        identity = identity or ticket.subject
    return identity


async def _give_back(runtime: Runtime, slot: Slot | None, reserved_ticket: CallTicket | None) -> None:
    """What a failed request still holds: its reserved ticket, its slot unless the call took it over, and (when
    nothing billable was asked) its share of the site-wide limit (its address keeps the count)."""
    if reserved_ticket is not None:
        await runtime.store.forget_once(_ticket_key(reserved_ticket))
    if slot is not None and slot.held_by_call:
        return
    if slot is not None and slot.taken:
        await runtime.store.release_slot(slot.id)
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


async def spend_ticket(request: web.Request, runtime: Runtime, admitted: Admitted, alias: str, agent: Agent) -> Caller:
    """The last check: who calls which agent, with the call's ``{{variables}}``; then the call ticket, if the request
    carries one, is reserved for this request (spent once its call exists)."""
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
        admitted.reserved_ticket = ticket
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
    reservation stands once DialNexa has a call for it, and is given back if the request fails before that (the
    context manager that counted the request does it); concurrent requests with one ticket find it reserved."""
    remember_for = max(ticket.expires_at - time.time(), 0) + 2 * LEEWAY_SECONDS
    if not await runtime.store.use_once(_ticket_key(ticket), ttl=remember_for):
        raise HTTPProblem(409, "ticket_used", "This call ticket was already used; reload the page for a new one.")


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
