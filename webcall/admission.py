"""Who may start a call, with which agent and variables: the checks before any billable work, in order.

Origin allowlist, per-IP and site-wide rate limits (with a start request's concurrent-call slot, claimed in the same
store step and given back if a later check refuses), the JSON body, the host's ``authorize`` hook and call ticket
with the per-identity limit, the ``bot_check`` hook, the agent alias (one the ticket names), then the
``{{variables}}``: visitor values the host allows, overridden by the ticket's, overridden by the host hook's. A
call-back also needs a valid phone number, consent, and its number's limit. A ticket is spent last, when every other
check has passed, so a refusal never costs the visitor their ticket.
"""

from __future__ import annotations

import inspect
import logging
import re
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
class Admitted:
    """A request that passed the checks every billable route shares."""

    origin: str
    body: dict[str, Any]
    identity: str | None
    ticket: CallTicket | None = None
    slot: Slot | None = None
    """The concurrent-call slot claimed for a start request (``claim_slot``); the caller gives it to the call, or
    back if it refuses the request."""


async def admit(request: web.Request, runtime: Runtime, *, claim_slot: bool = False) -> Admitted:
    config = runtime.config
    origin = guard.check_origin(request, config)
    slot = await _count_visit(request, runtime, claim_slot=claim_slot)
    try:
        body = await guard.read_json(request, config.max_body_bytes)
        identity = await _authorize(request, runtime, body)
        ticket = _read_ticket(runtime, body)
        if ticket is not None:
            if ticket.subject != identity:
                await _limit_identity(runtime, ticket.subject)
            identity = identity or ticket.subject
    except BaseException:
        await runtime.desk.give_back(slot)
        raise
    return Admitted(origin=origin, body=body, identity=identity, ticket=ticket, slot=slot)


def choose_agent(runtime: Runtime, body: dict[str, Any]) -> tuple[str, Agent]:
    """The alias the body names, and its agent."""
    alias = body.get("agent")
    if not isinstance(alias, str) or not alias:
        raise HTTPProblem(400, "invalid_request", 'Name the agent to call: {"agent": "sales"}.')
    agent = runtime.catalog.get(alias)
    if agent is None:
        raise HTTPProblem(404, "unknown_agent", "There is no agent with that name.")
    return alias, agent


async def caller(request: web.Request, runtime: Runtime, admitted: Admitted, alias: str, agent: Agent) -> Caller:
    """Who calls which agent, with the call's ``{{variables}}``; the last check, so it spends the call ticket."""
    ticket = admitted.ticket
    if ticket is not None and alias not in ticket.agents:
        raise HTTPProblem(403, "ticket_agent", "The call ticket does not allow calling this agent.")
    host_values: dict[str, Any] = {}
    if runtime.config.variables is not None:
        host_values = dict(await run_hook("variables", runtime.config.variables, request, alias, agent) or {})
    signed_values = {**(ticket.variables if ticket else {}), **host_values}
    visitor_values = guard.visitor_variables(
        admitted.body.get("variables"), agent.visitor_variables, signed_values, runtime.config.max_visitor_value_length
    )
    if admitted.slot is not None and not admitted.slot.taken:  # refused before the ticket is spent
        raise HTTPProblem(
            503, "capacity_reached", "All lines are busy right now; try again in a minute.", retry_after=30
        )
    if ticket is not None:
        await _spend(runtime, ticket)
    return Caller(
        alias=alias,
        agent=agent,
        variables={**agent.defaults, **visitor_values, **signed_values},
        origin=admitted.origin,
        identity=admitted.identity,
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


async def _spend(runtime: Runtime, ticket: CallTicket) -> None:
    """A ticket admits one start or call-back: its id is remembered until well after it expires."""
    remember_for = max(ticket.expires_at - time.time(), 0) + 2 * LEEWAY_SECONDS
    if not await runtime.store.use_once(f"ticket:{ticket.ticket_id}", ttl=remember_for):
        raise HTTPProblem(409, "ticket_used", "This call ticket was already used; reload the page for a new one.")


E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def phone_number(body: dict[str, Any]) -> str:
    """The visitor's number in E.164 form (spaces, dots, dashes and brackets removed), with their consent."""
    phone = body.get("phone_number")
    phone = re.sub(r"[\s().-]", "", phone) if isinstance(phone, str) else None
    if not phone or not E164.fullmatch(phone):
        raise HTTPProblem(400, "invalid_phone_number", "Enter the number in international form, e.g. +14155550123.")
    if body.get("consent") is not True:
        raise HTTPProblem(400, "consent_required", "Please agree to be called before we ring you.")
    return phone


async def limit_ring_backs(runtime: Runtime, phone: str) -> None:
    """A number is rung back only a few times an hour, whoever asks."""
    config = runtime.config
    await guard.rate_limit(
        runtime.store, f"rl:phone:{phone}", config.callback_rate_limit, config.callback_rate_window, who="this number"
    )


async def _count_visit(request: web.Request, runtime: Runtime, *, claim_slot: bool) -> Slot | None:
    """Per visitor IP and for the whole site (a flood from many addresses), counted together in one step; with
    ``claim_slot``, a concurrent-call slot is claimed in that step too (unless a limit refuses the visit)."""
    config = runtime.config
    ip = guard.client_ip(request, config.trusted_proxies)
    limits = [(f"rl:ip:{ip}", config.rate_limit), ("rl:global", config.global_rate_limit)]
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
