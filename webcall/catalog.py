"""The agents a site offers, as DialNexa knows them: checked once at startup, consulted on every mint.

What a check of an agent can find is worded here once (:func:`lookup_failure`, :func:`unpublished`,
:func:`webhook_binding`), for the start-up log and for ``python -m webcall doctor`` alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from .config import Agent
from .dialnexa import AgentInfo, DialNexaClient
from .errors import ConfigError, DialNexaAuthError, DialNexaError, DialNexaNotFound

log = logging.getLogger("webcall")

OK, WARNING, FAILED = "ok", "warning", "failed"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check of an agent (:data:`OK`, :data:`WARNING` or :data:`FAILED`), what was found and, unless
    it is OK, the fix."""

    outcome: str
    detail: str
    fix: str = ""

    def sentence(self, subject: str) -> str:
        """One line for a log or an error: ``agent 'sales': <detail>; fix: <fix>``."""
        return f"{subject}: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")


def lookup_failure(agent: Agent, err: DialNexaError) -> Finding:
    """Why DialNexa did not give the agent's details."""
    if isinstance(err, DialNexaNotFound):
        return Finding(FAILED, f"{agent.id} does not exist", "copy the agent id from DialNexa's dashboard")
    if isinstance(err, DialNexaAuthError):
        return Finding(
            FAILED,
            f"DialNexa denied access to {agent.id} ({err.status_code}: {err.message})",
            "use an agent of the key's workspace, or a key of the agent's workspace",
        )
    return Finding(FAILED, f"could not look {agent.id} up: {err}", "try again; check the network")


def unpublished(agent: Agent, info: AgentInfo) -> Finding:
    """Why the agent has no version a call can use, and the fix that applies to this configuration: publish the one
    it names, or name another."""
    published = sorted(v.version_number for v in info.versions if v.is_published)
    drafts = sorted(v.version_number for v in info.versions if not v.is_published)

    def publish(number: int) -> str:
        return f'PATCH /v1/agents/{agent.id} with {{"version_number": {number}, "is_published": true}}'

    if agent.version is None:
        which = f"its only version, {drafts[0]}, is" if len(drafts) == 1 else f"versions {_numbers(drafts)} are"
        return Finding(
            FAILED,
            f"{agent.id} has no published version ({which} a draft)",
            f"publish one in DialNexa's dashboard (or {publish(drafts[-1])})",
        )
    latest = (
        f"drop @{agent.version} (Agent(version=None)) to use the latest published, version {published[-1]}"
        if published
        else ""
    )
    if agent.version in drafts:
        fix = f"publish it in DialNexa's dashboard (or {publish(agent.version)})"
        fix = f"{fix}, or {latest}" if latest else fix
        return Finding(FAILED, f"{agent.id} version {agent.version} is a draft", fix)
    known = f"its versions are {_numbers(sorted(published + drafts))}"
    return Finding(
        FAILED, f"{agent.id} has no version {agent.version} ({known})", latest or "publish a version and name it"
    )


def _numbers(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def webhook_binding(info: AgentInfo, hook_id: str, version: int | None) -> Finding:
    """Whether the agent sends its call events to the plugin's webhook ``hook_id``: DialNexa sends an agent's events
    only when its webhook setting is on, to the webhook it is bound to (set on the agent's ``version``)."""
    dashboard = f"in DialNexa's dashboard, turn on Enable Webhook for {info.id} and choose {hook_id}"
    published = info.version(version)
    number = published.version_number if published else 1
    by_api = (
        f'{dashboard} (or PATCH /v1/agents/{info.id} with {{"version_number": {number}, "webhook_id": '
        f'"{hook_id}", "update_deployment": true}})'
    )
    binding = info.webhook_binding(hook_id)
    if binding == "off":
        return Finding(FAILED, "turned off: its calls send no events", dashboard)
    if binding == "unbound":
        return Finding(WARNING, "bound to no webhook: its events may not reach the plugin", by_api)
    if binding == "elsewhere":
        return Finding(FAILED, f"bound to {info.webhook_id}, not the plugin's {hook_id}", by_api)
    return Finding(OK, f"bound to {hook_id}")


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
        """Look every agent up at DialNexa; log what each uses, and what is wrong (fatal when ``strict``; an agent
        DialNexa could not be asked about is a warning)."""
        problems: list[str] = []
        for alias, agent in self.agents.items():
            try:
                info = await client.get_agent(agent.id)
            except DialNexaError as err:
                failure = lookup_failure(agent, err)
                if isinstance(err, DialNexaNotFound):
                    problems.append(failure.sentence(f"agent {alias!r}"))
                else:
                    log.warning("webcall: %s (at startup)", failure.sentence(f"agent {alias!r}"))
                continue
            if info.versions and info.version(agent.version) is None:
                problems.append(unpublished(agent, info).sentence(f"agent {alias!r}"))
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
        """Whether each agent checked at startup sends its call events to the plugin's subscription
        (:func:`webhook_binding`). Logs one line per agent with the fix; returns the problems (fatal when
        ``strict``; an agent bound to no webhook is a warning)."""
        problems: list[str] = []
        for alias, info in self._info.items():
            finding = webhook_binding(info, subscription_id, self.agents[alias].version)
            line = finding.sentence(f"agent {alias!r} webhook")
            if finding.outcome == FAILED:
                problems.append(line)
            elif finding.outcome == WARNING:
                log.warning("webcall: %s", line)
            else:
                log.info("webcall: %s", line)
        for problem in problems:
            log.error("webcall: %s", problem)
        if problems and strict:
            raise ConfigError("; ".join(problems) + ". (strict_agents is on.)")
        return problems
