"""The emulator against DialNexa's published JSON Schemas (copied into ``tests/emulator/schemas``; see its README).

Documented request examples must be accepted, responses must validate against the matching response schemas, and
every error body against ``error-response.schema.json``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from webcall.emulator import EmulatorConfig, EmulatorServer, default_agents
from webcall.emulator.state import AgentVersion, EmulatedAgent
from webcall.emulator.webhooks import undocumented

SCHEMAS = Path(__file__).resolve().parent / "schemas"


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


def check(schema_name: str, instance: Any) -> None:
    schema = load(schema_name)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    assert not problems, f"{schema_name}: {problems}"


def examples(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The documented request bodies: every ``x-openapi-examples`` entry plus one body built from the properties'
    own ``examples``."""
    bodies = [dict(body) for body in schema.get("x-openapi-examples", {}).values()]
    from_properties = {
        name: prop["examples"][0] for name, prop in schema.get("properties", {}).items() if prop.get("examples")
    }
    if from_properties:
        bodies.append(from_properties)
    return bodies


def agents_for_examples() -> dict[str, EmulatedAgent]:
    """The default agents plus one agent per ``agent_id`` the request examples name (versions 1 and 2, published)."""
    agents = default_agents()
    for body in examples(load("post-v1-calls.request.schema.json")):
        agent_id = body.get("agent_id")
        if isinstance(agent_id, str) and agent_id not in agents:
            versions = [AgentVersion(version_number=n) for n in (1, 2)]
            agents[agent_id] = EmulatedAgent(id=agent_id, name="Example Agent", welcome_message="Hello {{name}}")
            agents[agent_id].versions = versions
    return agents


@pytest.fixture
async def emu() -> AsyncIterator[EmulatorServer]:
    config = EmulatorConfig(agents=agents_for_examples(), phone_ring_seconds=0.01, phone_talk_seconds=0.02)
    async with EmulatorServer(config) as server:
        yield server


async def phone_call(client: httpx.AsyncClient) -> httpx.Response:
    payload = {"agent_id": "agent_sales", "phone_number": "+14155550100", "metadata": {"name": "Bob"}}
    return await client.post("/v1/calls", json=payload)


async def webhook(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(
        "/v1/user-webhooks", json={"url": "https://example.test/h", "events": ["call.completed"], "secret": "s"}
    )


async def settled_phone_call(client: httpx.AsyncClient) -> dict[str, Any]:
    call_id = (await phone_call(client)).json()["id"]
    for _ in range(300):
        record: dict[str, Any] = (await client.get(f"/v1/calls/{call_id}")).json()
        if record["status"] == "completed":
            return record
        await asyncio.sleep(0.01)
    raise AssertionError(f"call {call_id} did not complete")


# -- requests -------------------------------------------------------------------------------------------------------
async def test_call_request_examples_are_accepted(client: httpx.AsyncClient) -> None:
    bodies = examples(load("post-v1-calls.request.schema.json"))
    assert bodies
    for body in bodies:
        check("post-v1-calls.request.schema.json", body)
        response = await client.post("/v1/calls", json=body)
        assert response.status_code == 201, (body, response.text)


def expected_webhook_status(body: dict[str, Any], accepted: int) -> int:
    """The schema's field-level ``events`` examples (``order.paid``…) are generic placeholders, not DialNexa
    subscription names: the emulator refuses those (400) and accepts the documented call names."""
    events = body.get("events")
    return 400 if events is not None and undocumented(events) else accepted


async def test_webhook_request_examples_are_accepted(client: httpx.AsyncClient) -> None:
    bodies = examples(load("post-v1-user-webhooks.request.schema.json"))
    assert any(expected_webhook_status(body, 201) == 201 for body in bodies)
    for body in bodies:
        check("post-v1-user-webhooks.request.schema.json", body)
        response = await client.post("/v1/user-webhooks", json=body)
        assert response.status_code == expected_webhook_status(body, 201), (body, response.text)


async def test_webhook_update_examples_are_accepted(client: httpx.AsyncClient) -> None:
    hook_id = (await webhook(client)).json()["webhook"]["id"]
    bodies = examples(load("patch-v1-user-webhooks-id.request.schema.json"))
    assert any(expected_webhook_status(body, 200) == 200 for body in bodies)
    for body in bodies:
        check("patch-v1-user-webhooks-id.request.schema.json", body)
        response = await client.patch(f"/v1/user-webhooks/{hook_id}", json=body)
        assert response.status_code == expected_webhook_status(body, 200), (body, response.text)


@pytest.mark.parametrize("name", ["type", "call_direction", "created_at"])
async def test_documented_call_query_values_are_accepted(client: httpx.AsyncClient, name: str) -> None:
    schema = load("get-v1-calls.query.schema.json")
    for value in schema["properties"][name]["enum"]:
        response = await client.get("/v1/calls", params={name: value, "page": "1", "limit": "200"})
        assert response.status_code == 200, (name, value, response.text)


def sample_query_value(name: str, prop: dict[str, Any]) -> str:
    if prop.get("enum"):
        return str(prop["enum"][0])
    if prop.get("type") == "number":
        return "1"
    if prop.get("type") == "boolean":
        return "true"
    if name.endswith("_date"):
        return "2026-01-01T00:00:00Z"
    if name in ("page", "limit"):
        return "1"
    return str(prop.get("examples", ["x"])[0])


async def test_every_documented_call_query_parameter_is_understood(client: httpx.AsyncClient) -> None:
    properties = load("get-v1-calls.query.schema.json")["properties"]
    assert properties
    for name, prop in properties.items():
        params = {name: sample_query_value(name, prop)}
        if name == "columns":
            params["export"] = "true"  # columns apply to exports only
        response = await client.get("/v1/calls", params=params)
        assert response.status_code == 200, (params, response.text)


async def test_documented_webhook_query_examples_are_accepted(client: httpx.AsyncClient) -> None:
    properties = load("get-v1-user-webhooks.query.schema.json")["properties"]
    params = {name: str(prop["examples"][0]) for name, prop in properties.items()}
    assert (await client.get("/v1/user-webhooks", params=params)).status_code == 200


# -- responses ------------------------------------------------------------------------------------------------------
async def test_create_call_response_validates(client: httpx.AsyncClient) -> None:
    response = await phone_call(client)
    assert response.status_code == 201
    check("post-v1-calls.response-201.schema.json", response.json())


async def test_call_record_validates_and_carries_the_documented_fields(client: httpx.AsyncClient) -> None:
    record = await settled_phone_call(client)
    check("get-v1-calls-id.response-200.schema.json", record)
    documented = load("get-v1-calls-id.response-200.schema.json")["x-openapi-examples"]["success"]
    assert set(documented) <= set(record)


async def test_web_call_record_validates(client: httpx.AsyncClient) -> None:
    call_id = (await client.post("/v1/web-calls", json={"agent_id": "agent_sales"})).json()["id"]
    check("get-v1-calls-id.response-200.schema.json", (await client.get(f"/v1/calls/{call_id}")).json())


async def test_call_list_validates_and_carries_the_documented_fields(client: httpx.AsyncClient) -> None:
    await settled_phone_call(client)
    await client.post("/v1/web-calls", json={"agent_id": "agent_support"})
    listing = (await client.get("/v1/calls")).json()
    assert len(listing) == 2
    check("get-v1-calls.response-200.schema.json", listing)
    documented = load("get-v1-calls.response-200.schema.json")["x-openapi-examples"]["success"][0]
    assert all(set(documented) <= set(item) for item in listing)


async def test_agent_responses_validate(client: httpx.AsyncClient) -> None:
    agents = (await client.get("/v1/agents")).json()["agents"]
    assert agents
    for agent in agents:
        check("get-v1-agents-id.response-200.schema.json", agent)
        check("get-v1-agents-id.response-200.schema.json", (await client.get(f"/v1/agents/{agent['id']}")).json())


async def test_agent_response_carries_the_documented_fields(client: httpx.AsyncClient) -> None:
    agent = (await client.get("/v1/agents/agent_sales")).json()
    documented = load("get-v1-agents-id.response-200.schema.json")["x-openapi-examples"]["success"]
    assert set(documented) <= set(agent)
    assert set(documented["current_version"]) <= set(agent["current_version"])


async def test_create_webhook_response_validates(client: httpx.AsyncClient) -> None:
    body = (await webhook(client)).json()
    check("post-v1-user-webhooks.response-201.schema.json", body)
    documented = load("post-v1-user-webhooks.response-201.schema.json")["x-openapi-examples"]["success"]
    assert set(documented) <= set(body["webhook"])


async def test_webhook_list_response_validates(client: httpx.AsyncClient) -> None:
    await webhook(client)
    body = (await client.get("/v1/user-webhooks")).json()
    check("get-v1-user-webhooks.response-200.schema.json", body)
    documented = load("get-v1-user-webhooks.response-200.schema.json")["x-openapi-examples"]["success"]
    assert set(documented) <= set(body)
    assert set(documented["webhooks"][0]) <= set(body["webhooks"][0])


async def test_webhook_get_response_validates(client: httpx.AsyncClient) -> None:
    hook_id = (await webhook(client)).json()["webhook"]["id"]
    body = (await client.get(f"/v1/user-webhooks/{hook_id}")).json()
    check("get-v1-user-webhooks-id.response-200.schema.json", body)
    documented = load("get-v1-user-webhooks-id.response-200.schema.json")["x-openapi-examples"]["success"]
    assert set(documented) <= set(body["webhook"])


# -- errors ---------------------------------------------------------------------------------------------------------
BAD_CALL = {"agent_id": "agent_sales", "phone_number": "12345", "metadata": {}}
UNKNOWN_AGENT_CALL = {"agent_id": "agent_nobody", "phone_number": "+14155550100", "metadata": {}}
BAD_HOOK = {"url": "not-a-url", "events": ["call.completed"], "secret": "s"}

# Documented example → how to provoke it: (method, path, json body, query, authenticated).
PROVOKE: dict[str, tuple[str, str, Any, dict[str, str] | None, bool]] = {
    "POST /v1/calls 400": ("POST", "/v1/calls", BAD_CALL, None, True),
    "POST /v1/calls 401": ("POST", "/v1/calls", BAD_CALL, None, False),
    "POST /v1/calls 404": ("POST", "/v1/calls", UNKNOWN_AGENT_CALL, None, True),
    "GET /v1/calls 400": ("GET", "/v1/calls", None, {"limit": "500"}, True),
    "GET /v1/calls 401": ("GET", "/v1/calls", None, None, False),
    "GET /v1/calls/{id} 400": ("GET", "/v1/calls/not-a-call", None, None, True),
    "GET /v1/calls/{id} 401": ("GET", "/v1/calls/call_abc123", None, None, False),
    "GET /v1/calls/{id} 404": ("GET", "/v1/calls/call_abc123", None, None, True),
    "GET /v1/agents/{id} 401": ("GET", "/v1/agents/agent_sales", None, None, False),
    "GET /v1/agents/{id} 404": ("GET", "/v1/agents/agent_nobody", None, None, True),
    "POST /v1/user-webhooks 400": ("POST", "/v1/user-webhooks", BAD_HOOK, None, True),
    "POST /v1/user-webhooks 401": ("POST", "/v1/user-webhooks", BAD_HOOK, None, False),
    "GET /v1/user-webhooks 401": ("GET", "/v1/user-webhooks", None, None, False),
}


@pytest.mark.parametrize("key", sorted(PROVOKE))
async def test_documented_error_examples_are_reproduced(emu: EmulatorServer, key: str) -> None:
    documented = load("error-response.schema.json")["x-openapi-examples"][key]
    method, path, body, query, authenticated = PROVOKE[key]
    headers = {"Authorization": f"Bearer {emu.api_key}"} if authenticated else {}
    async with httpx.AsyncClient(base_url=emu.origin, headers=headers) as c:
        response = await c.request(method, path, json=body, params=query)
    got = response.json()
    check("error-response.schema.json", got)
    assert (response.status_code, got["statusCode"], got["error"]) == (
        documented["statusCode"],
        documented["statusCode"],
        documented["error"],
    )
    message = got["message"]
    assert message == documented["message"] or (isinstance(message, list) and documented["message"] in message)


async def test_documented_server_side_errors_can_be_injected(client: httpx.AsyncClient) -> None:
    documented = load("error-response.schema.json")["x-openapi-examples"]
    concrete = {"{id}": "call_abc123"}
    injected = [key for key in documented if key not in PROVOKE]
    assert injected
    for key in injected:
        route, _, status = key.rpartition(" ")
        method, _, path = route.partition(" ")
        await client.post("/_control/faults", json={"route": route, "kind": "status", "status": int(status)})
        for placeholder, value in concrete.items():
            path = path.replace(placeholder, value)
        response = await client.request(method, path, json={})
        got = response.json()
        check("error-response.schema.json", got)
        assert (response.status_code, got["error"]) == (int(status), documented[key]["error"]), key


ERRORS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("GET", "/v1/agents", None, {}),  # 401
    ("POST", "/v1/web-calls", {"agent_id": 1, "x": 2}, {"Authorization": "Bearer emu_key:emu_secret"}),  # 400 list
    ("POST", "/v1/web-calls", "not json", {"Authorization": "Bearer emu_key:emu_secret"}),  # 400 string
    ("GET", "/v1/nowhere", None, {}),  # 404 route
    ("DELETE", "/v1/agents", None, {}),  # 405
    ("GET", "/calls", None, {}),  # 410
    ("GET", "/v1/user-webhooks/webhook_nope", None, {"Authorization": "Bearer emu_key:emu_secret"}),  # 404
    ("POST", "/_control/faults", {"kind": "?"}, {}),  # 400 on a control route
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), ERRORS)
async def test_error_bodies_validate(
    emu: EmulatorServer, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=emu.origin, headers=headers) as c:
        if isinstance(body, str):
            response = await c.request(method, path, content=body, headers={"Content-Type": "application/json"})
        else:
            response = await c.request(method, path, json=body)
    assert response.status_code >= 400
    check("error-response.schema.json", response.json())


async def test_conflict_body_validates(client: httpx.AsyncClient) -> None:
    call_id = (await client.post("/v1/web-calls", json={"agent_id": "agent_sales"})).json()["id"]
    await client.post(f"/v1/calls/{call_id}/end")
    response = await client.post(f"/v1/calls/{call_id}/end")
    assert response.status_code == 409
    check("error-response.schema.json", response.json())


async def test_injected_rate_limit_body_validates(client: httpx.AsyncClient) -> None:
    await client.post("/_control/faults", json={"route": "*", "kind": "status", "status": 429, "retry_after": 2})
    response = await client.get("/v1/agents")
    assert response.status_code == 429
    check("error-response.schema.json", response.json())
