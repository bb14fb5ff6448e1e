"""The agents a site offers, as DialNexa knows them: checked once at startup, consulted on every mint."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .config import Agent
from .dialnexa import AgentInfo, DialNexaClient
from .errors import ConfigError, DialNexaError, DialNexaNotFound

log = logging.getLogger("webcall")


def placeholders(names: frozenset[str] | set[str]) -> str:
    """``{{a}}, {{b}}`` for log lines."""
    return ", ".join(f"{{{{{name}}}}}" for name in sorted(names))


def describe_placeholders(info: AgentInfo, agent: Agent) -> str:
    """Which ``{{placeholders}}`` the agent's welcome message and prompt use, and which of them nothing fills unless
    the call brings a value (neither the agent's version at DialNexa nor ``Agent(defaults=...)`` gives one)."""
    used = info.placeholders(agent.version)
    if not used:
        return "no variables"
    unfilled = info.required_variables(agent.version) - set(agent.defaults)
    if not unfilled:
        return f"{placeholders(used)}, each with a default"
    return f"{placeholders(used)}; without a default: {placeholders(unfilled)} (from the variables hook or the visitor)"


class AgentCatalog:
    """The aliases a visitor may call, with what DialNexa says of each agent (versions, variables, call length)."""

    def __init__(self, agents: Mapping[str, Agent]) -> None:
        self.agents: dict[str, Agent] = dict(agents)
        self._info: dict[str, AgentInfo] = {}

    def get(self, alias: str) -> Agent | None:
        return self.agents.get(alias)

    def __contains__(self, alias: object) -> bool:
        return alias in self.agents

    def aliases(self) -> list[str]:
        return list(self.agents)

    def required_variables(self, alias: str) -> frozenset[str]:
        """The ``{{variables}}`` the agent's messages use (empty when the agent could not be checked)."""
        info = self._info.get(alias)
        return info.required_variables(self.agents[alias].version) if info is not None else frozenset()

    def max_call_seconds(self, alias: str, site_limit: int) -> int:
        """The site's maximum call length, shortened to the agent's own where DialNexa sets one."""
        info = self._info.get(alias)
        if info is not None and info.max_call_duration_sec:
            return min(site_limit, info.max_call_duration_sec)
        return site_limit

    async def check(self, client: DialNexaClient, *, strict: bool) -> None:
        """Look every agent up at DialNexa; log what each uses, and what is wrong (fatal when ``strict``)."""
        problems: list[str] = []
        for alias, agent in self.agents.items():
            try:
                info = await client.get_agent(agent.id)
            except DialNexaNotFound:
                problems.append(f"agent {alias!r} ({agent.id}) does not exist at DialNexa")
                continue
            except DialNexaError as err:
                log.warning("webcall: could not check agent %r (%s) at startup: %s", alias, agent.id, err)
                continue
            if info.versions and info.version(agent.version) is None:
                which = f"version {agent.version}" if agent.version else "version"
                problems.append(f"agent {alias!r} ({agent.id}) has no published {which}")
                continue
            self._info[alias] = info
            log.info(
                "webcall: agent %r is %s%s; its messages use %s",
                alias,
                agent.id,
                f" v{agent.version}" if agent.version else "",
                describe_placeholders(info, agent),
            )
        for problem in problems:
            log.error("webcall: %s", problem)
        if problems and strict:
            raise ConfigError("; ".join(problems) + ". Fix the agents in the configuration (strict_agents is on).")

    def check_bindings(self, subscription_id: str, *, strict: bool) -> list[str]:
        """Whether each agent checked at startup sends its call events to the plugin's subscription. Logs one line per
        agent with the fix; returns the problems (fatal when ``strict``). DialNexa sends an agent's events only when
        its webhook setting is on, to the webhook it is bound to."""
        problems: list[str] = []
        for alias, info in self._info.items():
            binding = info.webhook_binding(subscription_id)
            if binding == "off":
                problems.append(
                    f'agent {alias!r} ({info.id}) has its webhook turned off: turn on "Enable Webhook" for it in '
                    f"DialNexa's dashboard and choose the webhook {subscription_id}"
                )
            elif binding == "elsewhere":
                problems.append(
                    f"agent {alias!r} ({info.id}) sends its events to webhook {info.webhook_id}, not the plugin's "
                    f"{subscription_id}: choose {subscription_id} as the agent's webhook in DialNexa's dashboard"
                )
            elif binding == "unbound":
                log.warning(
                    "webcall: agent %r (%s) is bound to no webhook; if DialNexa sends it no events, choose the webhook "
                    "%s for it in DialNexa's dashboard",
                    alias,
                    info.id,
                    subscription_id,
                )
            else:
                log.info("webcall: agent %r sends its events to the plugin's webhook %s", alias, subscription_id)
        for problem in problems:
            log.error("webcall: %s", problem)
        if problems and strict:
            raise ConfigError("; ".join(problems) + ". (strict_agents is on.)")
        return problems
