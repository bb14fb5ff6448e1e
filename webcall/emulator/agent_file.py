"""The agents an emulator starts with, from a JSON file: ``python -m webcall.emulator --agents FILE``.

The file holds ``{"agents": [...]}`` (as ``GET /v1/agents`` answers) or a bare list. Each agent is read in the shape
``GET /v1/agents/{id}`` answers, so an agent read from the emulator (or from DialNexa) can be saved and replayed;
what the emulator uses of it:

* ``id`` (required), ``name`` (or ``title``), ``welcome_message``, ``prompt`` (or ``prompt_text``),
  ``max_call_duration_sec`` (60 to 5400), ``webhook_id``, ``webhook_enabled``;
* ``versions``: ``version_number`` (required), ``is_published`` (default true), ``version_title``,
  ``welcome_message``, ``prompt`` (or ``prompt_text``), ``default_dynamic_variables`` (strings); an agent without
  versions gets one published version 1;
* the emulator's own ``script`` (what the agent answers, turn by turn) and ``closing``.

Anything else is ignored. A file that cannot be used raises :class:`AgentFileError` with one sentence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webcall.emulator.state import AgentVersion, EmulatedAgent


class AgentFileError(ValueError):
    """The agents file cannot be read or does not describe agents; the message says where."""


def load_agents(path: Path) -> dict[str, EmulatedAgent]:
    """The agents described by the JSON file at ``path``, by id."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise AgentFileError(f"cannot read the agents file {path}: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AgentFileError(f"the agents file {path} is not JSON: {err}") from None
    try:
        return agents_from_json(data)
    except AgentFileError as err:
        raise AgentFileError(f"the agents file {path}: {err}") from None


def agents_from_json(data: Any) -> dict[str, EmulatedAgent]:
    items = data.get("agents") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise AgentFileError('expected {"agents": [...]} or a list of agents, with at least one agent')
    agents: dict[str, EmulatedAgent] = {}
    for number, item in enumerate(items, start=1):
        agent = _agent(item, f"agent {number}")
        if agent.id in agents:
            raise AgentFileError(f"agent {number}: the id {agent.id!r} is used twice")
        agents[agent.id] = agent
    return agents


def _agent(item: Any, where: str) -> EmulatedAgent:
    if not isinstance(item, dict):
        raise AgentFileError(f"{where} is not a JSON object")
    agent_id = _text(item, "id", where, required=True)
    where = f"agent {agent_id!r}"
    duration = item.get("max_call_duration_sec", 600)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 60 <= duration <= 5400:
        raise AgentFileError(f"{where}: max_call_duration_sec must be a whole number of seconds from 60 to 5400")
    enabled = item.get("webhook_enabled", True)
    if not isinstance(enabled, bool):
        raise AgentFileError(f"{where}: webhook_enabled must be true or false")
    script = item.get("script", [])
    if not isinstance(script, list) or not all(isinstance(line, str) for line in script):
        raise AgentFileError(f"{where}: script must be a list of sentences")
    agent = EmulatedAgent(
        id=agent_id,
        name=_text(item, "name", where) or _text(item, "title", where) or agent_id,
        welcome_message=_text(item, "welcome_message", where) or "Hello! How can I help you today?",
        prompt=_text(item, "prompt", where) or _text(item, "prompt_text", where) or "",
        script=list(script),
        max_call_duration_sec=duration,
        webhook_id=_text(item, "webhook_id", where) or None,
        webhook_enabled=enabled,
    )
    if "closing" in item:
        agent.closing = _text(item, "closing", where, required=True)
    versions = item.get("versions")
    if versions is None or versions == []:
        agent.versions = [AgentVersion(version_number=1)]
        return agent
    if not isinstance(versions, list):
        raise AgentFileError(f"{where}: versions must be a list")
    agent.versions = [_version(version, where) for version in versions]
    numbers = [version.version_number for version in agent.versions]
    if len(set(numbers)) != len(numbers):
        raise AgentFileError(f"{where}: a version_number is used twice")
    return agent


def _version(item: Any, where: str) -> AgentVersion:
    if not isinstance(item, dict):
        raise AgentFileError(f"{where}: each version must be a JSON object")
    number = item.get("version_number")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise AgentFileError(f"{where}: each version needs a version_number of 1 or more")
    where = f"{where} version {number}"
    published = item.get("is_published", True)
    if not isinstance(published, bool):
        raise AgentFileError(f"{where}: is_published must be true or false")
    defaults = item.get("default_dynamic_variables") or {}
    if not isinstance(defaults, dict) or not all(isinstance(value, str) for value in defaults.values()):
        raise AgentFileError(f"{where}: default_dynamic_variables must map each variable to a string")
    return AgentVersion(
        version_number=number,
        is_published=published,
        title=_text(item, "version_title", where) or None,
        welcome_message=_text(item, "welcome_message", where) or "",
        prompt=_text(item, "prompt", where) or _text(item, "prompt_text", where) or "",
        default_dynamic_variables=dict(defaults),
    )


def _text(item: dict[str, Any], name: str, where: str, *, required: bool = False) -> str:
    value = item.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise AgentFileError(f"{where}: {name} must be {'a non-empty' if required else 'a'} string")
    return value
