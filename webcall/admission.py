"""Who may start a call, with which agent and variables: the checks before any billable work, in order.

Origin allowlist, per-IP and site-wide rate limits, the JSON body, the host's ``authorize`` hook with the
per-identity limit, the ``bot_check`` hook, the agent alias, then the ``{{variables}}``: visitor values the host
allows, overridden by the host's own. A call-back also needs a valid phone number, consent, and its number's limit.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import guard
from .calls import Caller
from .config import Agent
from .errors import HTTPProblem
from .runtime import Runtime

log = logging.getLogger("webcall")


@dataclass(frozen=True)
class Admitted:
    """A request that passed the checks every billable route shares."""

    origin: str
    body: dict[str, Any]
    identity: str | None


async def admit(request: web.Request, runtime: Runtime) -> Admitted:
    config = runtime.config
    origin = guard.check_origin(request, config)
    await _count_visit(request, runtime)
    body = await guard.read_json(request, config.max_body_bytes)
    identity = await _authorize(request, runtime, body)
    return Admitted(origin=origin, body=body, identity=identity)


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
    """Who calls which agent, with the call's ``{{variables}}``."""
    host_values: dict[str, Any] = {}
    if runtime.config.variables is not None:
        host_values = dict(await run_hook("variables", runtime.config.variables, request, alias, agent) or {})
    visitor_values = guard.visitor_variables(
        admitted.body.get("variables"), agent.visitor_variables, host_values, runtime.config.max_visitor_value_length
    )
    return Caller(
        alias=alias,
        agent=agent,
        variables={**agent.defaults, **visitor_values, **host_values},
        origin=admitted.origin,
        identity=admitted.identity,
    )


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


async def _count_visit(request: web.Request, runtime: Runtime) -> None:
    """Per visitor IP and for the whole site (a flood from many addresses), counted together in one step."""
    config = runtime.config
    ip = guard.client_ip(request, config.trusted_proxies)
    limits = [(f"rl:ip:{ip}", config.rate_limit), ("rl:global", config.global_rate_limit)]
    refused = await runtime.store.hit_all(limits, config.rate_limit_window)
    if refused is not None:
        which, wait = refused
        raise guard.rate_limited(("this address", "everyone right now")[which], wait)


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
        await guard.rate_limit(
            runtime.store,
            f"rl:id:{identity}",
            config.identity_rate_limit,
            config.rate_limit_window,
            who="this account",
        )
    if config.bot_check is not None:
        token = body.get("bot_token")
        passed = await run_hook("bot_check", config.bot_check, request, token if isinstance(token, str) else None)
        if passed is not True:
            raise HTTPProblem(403, "bot_check_failed", "The anti-robot check did not pass; reload the page and retry.")
    return identity


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
