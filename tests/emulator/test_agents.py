"""The emulator's agents: ``PATCH /v1/agents/{id}`` (DialNexa's updateAgent) and ``--agents FILE``, over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from webcall.emulator import EmulatorServer
from webcall.emulator.agent_file import AgentFileError, agents_from_json, load_agents
from webcall.emulator.state import EmulatorState, default_agents

from ..service import clean_environment, running_service

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def valid(schema_name: str, instance: Any) -> None:
    schema = json.loads((SCHEMAS / schema_name).read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    assert not problems, f"{schema_name}: {problems}"


async def update(client: httpx.AsyncClient, agent_id: str, **body: Any) -> httpx.Response:
    valid("patch-v1-agents-id.request.schema.json", body)
    return await client.patch(f"/v1/agents/{agent_id}", json=body)


def error_message(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"statusCode", "message", "error"} and body["statusCode"] == status
    return body["message"]


async def test_a_draft_is_edited_then_published(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    sales = emu.state.agents["agent_sales"]
    sales.versions[0].is_published = False
    response = await update(
        client,
        "agent_sales",
        version_number=1,
        welcome_message="Hi {{name}}, this is {{agent_name}}.",
        prompt_text="You are Nova. Greet {{name}}.",
        default_dynamic_variables={"name": "friend"},
        version_title="Friendlier",
    )
    assert response.status_code == 200, response.text
    agent = response.json()
    valid("get-v1-agents-id.response-200.schema.json", agent)
    (version,) = agent["versions"]
    assert version["is_published"] is False and version["version_title"] == "Friendlier"
    assert version["welcome_message"] == "Hi {{name}}, this is {{agent_name}}."
    assert version["default_dynamic_variables"] == {"name": "friend"}
    published = await update(client, "agent_sales", version_number=1, is_published=True)
    assert published.status_code == 200 and published.json()["versions"][0]["is_published"] is True
    assert (await client.get("/v1/agents/agent_sales")).json() == published.json()


async def test_a_published_version_takes_only_publishing_unless_the_deployment_is_updated(
    client: httpx.AsyncClient,
) -> None:
    refused = await update(client, "agent_sales", version_number=1, welcome_message="Hello.")
    assert error_message(refused, 400) == (
        "Version 1 is published and cannot be updated (welcome_message); set update_deployment to true to change it"
    )
    assert (await update(client, "agent_sales", version_number=1, is_published=True)).status_code == 200
    unpublish = await update(client, "agent_sales", version_number=1, is_published=False, update_deployment=True)
    assert error_message(unpublish, 400) == "Version 1 is published; a published version cannot be unpublished"
    changed = await update(client, "agent_sales", version_number=1, welcome_message="Hello.", update_deployment=True)
    assert changed.status_code == 200 and changed.json()["versions"][0]["welcome_message"] == "Hello."


async def test_an_agent_is_bound_to_a_webhook_of_the_account(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    hook = await client.post(
        "/v1/user-webhooks",
        json={"url": "https://old.example/hooks", "events": ["call.completed"], "secret": "an-older-integration"},
    )
    hook_id = hook.json()["webhook"]["id"]
    bound = await update(client, "agent_sales", version_number=1, webhook_id=hook_id, update_deployment=True)
    assert bound.status_code == 200 and bound.json()["webhook_id"] == hook_id
    assert emu.state.agents["agent_sales"].webhook_id == hook_id
    unknown = await update(client, "agent_sales", version_number=1, webhook_id="webhook_nope", update_deployment=True)
    assert error_message(unknown, 400) == ["webhook_id webhook_nope is not a webhook of this organization"]
    off = await update(client, "agent_sales", version_number=1, webhook_enabled=False, update_deployment=True)
    assert off.json()["webhook_enabled"] is False
    unbound = await update(client, "agent_sales", version_number=1, webhook_id="", update_deployment=True)
    assert unbound.json()["webhook_id"] is None


async def test_what_updateagent_refuses(client: httpx.AsyncClient) -> None:
    assert error_message(await client.patch("/v1/agents/agent_nope", json={"version_number": 1}), 404) == (
        "Agent not found"
    )
    missing = await client.patch("/v1/agents/agent_sales", json={"version_number": 9, "is_published": True})
    assert error_message(missing, 404) == "Version 9 of agent agent_sales not found"
    no_version = await client.patch("/v1/agents/agent_sales", json={"is_published": True})
    assert "version_number should not be empty" in error_message(no_version, 400)
    unmodelled = await client.patch("/v1/agents/agent_sales", json={"version_number": 1, "voice_id": "v"})
    assert error_message(unmodelled, 400) == ["property voice_id should not exist"]
    not_strings = await client.patch(
        "/v1/agents/agent_sales", json={"version_number": 1, "default_dynamic_variables": {"age": 3}}
    )
    assert error_message(not_strings, 400) == ["each value in default_dynamic_variables must be a string"]
    anonymous = await client.patch("/v1/agents/agent_sales", json={"version_number": 1}, headers={"Authorization": ""})
    assert anonymous.status_code == 401


def test_an_agent_read_from_the_api_can_be_saved_and_replayed() -> None:
    """``--agents`` reads the shape ``GET /v1/agents`` answers: what the emulator serves, it can start with."""

    def served(state: EmulatorState) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in state.agent_json(agent).items() if k not in ("created_at", "updated_at")}
            for agent in state.agents.values()
        ]

    original = EmulatorState(api_keys={"k"}, agents=default_agents())
    saved = json.dumps({"agents": served(original)})
    assert served(EmulatorState(api_keys={"k"}, agents=agents_from_json(json.loads(saved)))) == served(original)


@pytest.mark.parametrize(
    ("content", "sentence"),
    [
        ("{", "is not JSON"),
        ('{"agents": []}', 'expected {"agents": [...]} or a list of agents, with at least one agent'),
        ('[{"name": "x"}]', "agent 1: id must be a non-empty string"),
        ('[{"id": "a", "versions": [{"version_number": 0}]}]', "agent 'a': each version needs a version_number"),
        ('[{"id": "a"}, {"id": "a"}]', "agent 2: the id 'a' is used twice"),
        ('[{"id": "a", "versions": [{"version_number": 1, "default_dynamic_variables": {"n": 1}}]}]', "map each"),
    ],
)
def test_an_agents_file_that_cannot_be_used_is_named_in_one_sentence(
    tmp_path: Path, content: str, sentence: str
) -> None:
    path = tmp_path / "agents.json"
    path.write_text(content)
    with pytest.raises(AgentFileError, match=sentence.replace("[", r"\[").replace("]", r"\]").replace("{", r"\{")):
        load_agents(path)


BROKEN_ACCOUNT = {
    "agents": [
        {"id": "agent_sales", "name": "Nova", "welcome_message": "Hi {{name}}", "max_call_duration_sec": 300},
        {
            "id": "agent_support",
            "name": "Sam",
            "welcome_message": "Hello.",
            "versions": [{"version_number": 1, "is_published": False}],
        },
    ]
}


def test_the_command_line_starts_with_the_agents_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text(json.dumps(BROKEN_ACCOUNT))
    command = [sys.executable, "-m", "webcall.emulator", "--port", "{port}", "--agents", str(path)]
    with running_service(command, tmp_path, env=clean_environment(), ready_path="/_control/requests") as emulator:
        assert "agents:   agent_sales, agent_support" in emulator.wait_for_output("agents:")
        headers = {"Authorization": "Bearer emu_key:emu_secret"}
        listed = httpx.get(f"{emulator.url}/v1/agents", headers=headers).json()["agents"]
        assert [(a["id"], a["versions"][0]["is_published"]) for a in listed] == [
            ("agent_sales", True),
            ("agent_support", False),
        ]
        assert listed[0]["max_call_duration_sec"] == 300
        assert emulator.stop() == 0


def test_the_command_line_refuses_an_agents_file_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text('{"agents": [{"id": "agent_a", "max_call_duration_sec": 10}]}')
    done = subprocess.run(
        [sys.executable, "-m", "webcall.emulator", "--port", "0", "--agents", str(path)],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"error: the agents file {path}: agent 'agent_a': max_call_duration_sec must be a whole number of seconds "
        "from 60 to 5400"
    )
