"""The emulator's REST API, control routes, configuration and command line, driven over HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_aiohttp import AiohttpClient

from webcall.emulator import EmulatorConfig, EmulatorServer, create_emulator_app, default_agents
from webcall.emulator.state import AgentVersion, Call, EmulatedAgent

from ..net import free_port
from .conftest import make_config

REPO = Path(__file__).resolve().parents[2]


async def create_web_call(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/web-calls", json={"agent_id": "agent_sales", **body})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def create_phone_call(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    payload = {"agent_id": "agent_sales", "phone_number": "+14155550100", "metadata": {"name": "Bob"}, **body}
    response = await client.post("/v1/calls", json=payload)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def wait_for_status(client: httpx.AsyncClient, call_id: str, status: str, within: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        record: dict[str, Any] = (await client.get(f"/v1/calls/{call_id}")).json()
        if record["status"] == status or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.01)


def assert_error(response: httpx.Response, status: int, message: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"statusCode", "message", "error"}
    assert body["statusCode"] == status
    if message is not None:
        assert body["message"] == message or (isinstance(body["message"], list) and message in body["message"])
    return body


# -- auth -----------------------------------------------------------------------------------------------------------
PROTECTED = [
    ("POST", "/v1/web-calls"),
    ("POST", "/v1/calls"),
    ("GET", "/v1/calls"),
    ("GET", "/v1/calls/call_abc123"),
    ("POST", "/v1/calls/call_abc123/end"),
    ("GET", "/v1/agents"),
    ("GET", "/v1/agents/agent_sales"),
    ("POST", "/v1/user-webhooks"),
    ("GET", "/v1/user-webhooks"),
    ("GET", "/v1/user-webhooks/webhook_x"),
    ("PATCH", "/v1/user-webhooks/webhook_x"),
    ("DELETE", "/v1/user-webhooks/webhook_x"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_v1_route_rejects_a_missing_key(emu: EmulatorServer, method: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=emu.origin) as anonymous:
        response = await anonymous.request(method, path, json={})
    body = assert_error(response, 401, "API key is missing or invalid")
    assert body["error"] == "Unauthorized"


async def test_a_wrong_key_is_401(emu: EmulatorServer) -> None:
    async with httpx.AsyncClient(base_url=emu.origin, headers={"Authorization": "Bearer emu_key:wrong"}) as c:
        response = await c.get("/v1/agents")
    assert_error(response, 401, "API key is missing or invalid")


async def test_a_key_without_the_bearer_scheme_is_401(emu: EmulatorServer) -> None:
    async with httpx.AsyncClient(base_url=emu.origin, headers={"Authorization": emu.api_key}) as c:
        response = await c.get("/v1/agents")
    assert_error(response, 401)


async def test_any_configured_key_is_accepted() -> None:
    config = make_config(api_keys=frozenset({"k1:s1", "k2:s2"}))
    async with EmulatorServer(config) as server, httpx.AsyncClient(base_url=server.origin) as c:
        response = await c.get("/v1/agents", headers={"Authorization": "Bearer k2:s2"})
    assert response.status_code == 200


# -- web calls ------------------------------------------------------------------------------------------------------
async def test_create_web_call_answers_the_assumed_contract(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    before = datetime.now(UTC)
    body = await create_web_call(client, metadata={"name": "Ann"})
    assert set(body) == {
        "id",
        "type",
        "agent_id",
        "agent_version_number",
        "status",
        "access_token",
        "expires_at",
        "media",
    }
    assert body["id"].startswith("call_")
    assert (body["type"], body["agent_id"], body["agent_version_number"], body["status"]) == (
        "web_call",
        "agent_sales",
        1,
        "created",
    )
    assert body["access_token"]
    assert body["expires_at"].endswith("Z")
    ttl = (datetime.fromisoformat(body["expires_at"]) - before).total_seconds()
    assert 29 < ttl < 31
    assert body["media"] == {
        "transport": "webrtc-whip",
        "whip_url": f"{emu.origin}/v1/web-calls/{body['id']}/whip",
        "ice_servers": [],
    }


async def test_web_call_record_is_a_created_web_call(client: httpx.AsyncClient) -> None:
    created = await create_web_call(client, metadata={"name": "Ann"}, notes={"source": "test"})
    record = (await client.get(f"/v1/calls/{created['id']}")).json()
    assert (record["type"], record["status"], record["metadata"], record["notes"]) == (
        "web",
        "created",
        {"name": "Ann"},
        {"source": "test"},
    )


async def test_web_call_metadata_defaults_to_an_empty_object(client: httpx.AsyncClient) -> None:
    created = await create_web_call(client)
    record = (await client.get(f"/v1/calls/{created['id']}")).json()
    assert record["metadata"] == {}


async def test_whip_url_uses_the_configured_public_url() -> None:
    config = make_config(public_url="https://emu.example.test/")
    async with EmulatorServer(config) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.origin, headers=headers) as c:
            body = await create_web_call(c)
    assert body["media"]["whip_url"] == f"https://emu.example.test/v1/web-calls/{body['id']}/whip"


async def test_whip_url_defaults_to_the_request_origin(aiohttp_client: AiohttpClient) -> None:
    test_client = await aiohttp_client(create_emulator_app(make_config()))
    response = await test_client.post(
        "/v1/web-calls",
        json={"agent_id": "agent_sales"},
        headers={"Authorization": "Bearer emu_key:emu_secret", "Host": "calls.example.test:8443"},
    )
    assert response.status == 201
    body = await response.json()
    assert body["media"]["whip_url"] == f"http://calls.example.test:8443/v1/web-calls/{body['id']}/whip"


async def test_web_call_lists_every_validation_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/web-calls", json={"agent_id": 7, "foo": 1, "agent_version_number": "1"})
    body = assert_error(response, 400)
    assert body["error"] == "Bad Request"
    assert isinstance(body["message"], list)
    assert set(body["message"]) == {
        "property foo should not exist",
        "agent_id must be a string",
        "agent_version_number must be an integer number",
    }


async def test_web_call_requires_an_agent_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/web-calls", json={"metadata": {}})
    assert_error(response, 400, "agent_id should not be empty")


@pytest.mark.parametrize("field", ["metadata", "notes"])
async def test_web_call_objects_must_be_objects(client: httpx.AsyncClient, field: str) -> None:
    response = await client.post("/v1/web-calls", json={"agent_id": "agent_sales", field: ["x"]})
    assert_error(response, 400, f"{field} must be an object")


async def test_web_call_notes_hold_at_most_15_keys(client: httpx.AsyncClient) -> None:
    notes = {f"k{i}": i for i in range(16)}
    response = await client.post("/v1/web-calls", json={"agent_id": "agent_sales", "notes": notes})
    assert_error(response, 400, "notes must not have more than 15 top-level keys")


async def test_web_call_accepts_15_notes(client: httpx.AsyncClient) -> None:
    await create_web_call(client, notes={f"k{i}": i for i in range(15)})


async def test_web_call_for_an_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/web-calls", json={"agent_id": "agent_nobody"})
    assert_error(response, 404, "Agent not found")


async def test_web_call_for_an_unpublished_version_is_400() -> None:
    agents = default_agents()
    agents["agent_sales"].versions.append(AgentVersion(version_number=2, is_published=False))
    async with EmulatorServer(make_config(agents=agents)) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.origin, headers=headers) as c:
            response = await c.post("/v1/web-calls", json={"agent_id": "agent_sales", "agent_version_number": 2})
    body = assert_error(response, 400)
    assert "not a published version" in body["message"]


async def test_web_call_for_an_absent_version_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/web-calls", json={"agent_id": "agent_sales", "agent_version_number": 9})
    assert_error(response, 400)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
async def test_a_body_that_is_not_a_json_object_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post("/v1/web-calls", content=raw, headers={"Content-Type": "application/json"})
    body = assert_error(response, 400)
    assert isinstance(body["message"], str)


# -- phone calls ----------------------------------------------------------------------------------------------------
async def test_create_phone_call_answers_the_documented_shape(client: httpx.AsyncClient) -> None:
    body = await create_phone_call(client)
    assert set(body) == {"id", "to_phone_number", "agent_id", "agent_version_number"}
    assert body["id"].startswith("call_")
    assert (body["to_phone_number"], body["agent_id"], body["agent_version_number"]) == (
        "+14155550100",
        "agent_sales",
        1,
    )


@pytest.mark.parametrize(
    "number", ["14155550100", "+04155550100", "+1 415 555 0100", "+12345", "+1415555010\n", 14155550100]
)
async def test_phone_number_must_be_e164(client: httpx.AsyncClient, number: object) -> None:
    payload = {"agent_id": "agent_sales", "phone_number": number, "metadata": {}}
    response = await client.post("/v1/calls", json=payload)
    assert_error(response, 400, "phone_number must be a valid E.164 phone number")


async def test_phone_call_requires_metadata(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/calls", json={"agent_id": "agent_sales", "phone_number": "+14155550100"})
    assert_error(response, 400, "metadata must be an object")


async def test_phone_call_rejects_unknown_properties(client: httpx.AsyncClient) -> None:
    payload = {"agent_id": "agent_sales", "phone_number": "+14155550100", "metadata": {}, "retries": 2}
    response = await client.post("/v1/calls", json=payload)
    assert_error(response, 400, "property retries should not exist")


async def test_phone_call_notes_hold_at_most_15_keys(client: httpx.AsyncClient) -> None:
    payload = {"agent_id": "agent_sales", "phone_number": "+14155550100", "metadata": {}}
    response = await client.post("/v1/calls", json={**payload, "notes": {f"n{i}": i for i in range(16)}})
    assert_error(response, 400, "notes must not have more than 15 top-level keys")


async def test_phone_call_for_an_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    payload = {"agent_id": "agent_nobody", "phone_number": "+14155550100", "metadata": {}}
    response = await client.post("/v1/calls", json=payload)
    assert_error(response, 404, "Agent or phone number not found")


async def test_phone_call_runs_through_its_states() -> None:
    async with EmulatorServer(make_config(phone_ring_seconds=0.4, phone_talk_seconds=0.2)) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.origin, headers=headers) as c:
            call_id = (await create_phone_call(c))["id"]
            seen: list[str] = []
            deadline = time.monotonic() + 3
            while (not seen or seen[-1] != "completed") and time.monotonic() < deadline:
                status = (await c.get(f"/v1/calls/{call_id}")).json()["status"]
                if not seen or seen[-1] != status:
                    seen.append(status)
                await asyncio.sleep(0.01)
    assert [s for s in seen if s != "created"] == ["sent", "received", "initiated", "completed"]


async def test_completed_phone_call_records_transcript_summary_and_duration(client: httpx.AsyncClient) -> None:
    call_id = (await create_phone_call(client, metadata={"name": "Bob", "company": "Acme"}))["id"]
    record = await wait_for_status(client, call_id, "completed")
    assert record["status"] == "completed"
    assert record["end_reason"] == "agent_disconnected"
    assert record["transcript"].startswith("Agent: Hello Bob! This is Nova from DialNexa sales. How can I help Acme")
    assert [line["role"] for line in record["transcript_object"]][:2] == ["agent", "user"]
    assert "Bob spoke with Nova from Sales" in record["summary"]
    assert record["duration"] > 0
    assert record["initiated_at"] and record["ended_at"]


async def test_phone_call_tells_listeners_it_started_and_ended(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    events: list[tuple[str, str]] = []

    def listener(event_type: str, call: Call) -> None:
        events.append((event_type, call.status))

    emu.state.listen(listener)
    call_id = (await create_phone_call(client))["id"]
    await wait_for_status(client, call_id, "completed")
    assert events == [("call_initiated", "initiated"), ("call_ended", "completed")]


# -- listing and reading calls ----------------------------------------------------------------------------------
async def test_list_calls_is_a_bare_array_newest_first(client: httpx.AsyncClient) -> None:
    first = await create_web_call(client)
    second = await create_web_call(client)
    response = await client.get("/v1/calls")
    assert response.status_code == 200
    assert [c["id"] for c in response.json()] == [second["id"], first["id"]]


async def test_list_calls_can_be_sorted_oldest_first(client: httpx.AsyncClient) -> None:
    first = await create_web_call(client)
    second = await create_web_call(client)
    response = await client.get("/v1/calls", params={"created_at": "asc"})
    assert [c["id"] for c in response.json()] == [first["id"], second["id"]]


async def test_list_calls_filters_by_type(client: httpx.AsyncClient) -> None:
    web = await create_web_call(client)
    await create_phone_call(client)
    response = await client.get("/v1/calls", params={"type": "web"})
    assert [c["id"] for c in response.json()] == [web["id"]]


async def test_list_calls_filters_by_agent_and_status(client: httpx.AsyncClient) -> None:
    await create_web_call(client)
    support = await create_web_call(client, agent_id="agent_support")
    response = await client.get("/v1/calls", params={"agent_id": "agent_support,agent_nobody", "status": "created"})
    assert [c["id"] for c in response.json()] == [support["id"]]


async def test_list_calls_paginates(client: httpx.AsyncClient) -> None:
    ids = [(await create_web_call(client))["id"] for _ in range(5)]
    response = await client.get("/v1/calls", params={"page": "2", "limit": "2"})
    assert [c["id"] for c in response.json()] == [ids[2], ids[1]]


async def test_list_calls_filters_by_direction(client: httpx.AsyncClient) -> None:
    await create_web_call(client)
    phone = await create_phone_call(client)
    response = await client.get("/v1/calls", params={"call_direction": "outbound"})
    assert [c["id"] for c in response.json()] == [phone["id"]]


async def test_list_calls_filters_by_creation_dates(client: httpx.AsyncClient) -> None:
    await create_web_call(client)
    assert (await client.get("/v1/calls", params={"start_date": "2000-01-01T00:00:00Z"})).json() != []
    assert (await client.get("/v1/calls", params={"end_date": "2000-01-01T00:00:00Z"})).json() == []


async def test_list_calls_sorts_and_filters_by_duration(client: httpx.AsyncClient) -> None:
    pending = await create_web_call(client)
    phone = await create_phone_call(client)
    await wait_for_status(client, phone["id"], "completed")
    by_duration = (await client.get("/v1/calls", params={"duration": "desc"})).json()
    assert [c["id"] for c in by_duration] == [phone["id"], pending["id"]]
    longer = (await client.get("/v1/calls", params={"duration_min": "1"})).json()
    assert [c["id"] for c in longer] == [phone["id"]]


@pytest.mark.parametrize(
    ("params", "matches"),
    [
        ({"sentiment": "unknown"}, True),
        ({"sentiment": "positive"}, False),
        ({"batch_call_id": "batch_1"}, False),
        ({"latency_max": "900"}, False),
    ],
)
async def test_list_calls_filters_on_unrecorded_data(
    client: httpx.AsyncClient, params: dict[str, str], matches: bool
) -> None:
    await create_web_call(client)
    assert bool((await client.get("/v1/calls", params=params)).json()) is matches


async def test_list_calls_export_skips_pagination_and_picks_columns(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create_web_call(client)
    exported = (await client.get("/v1/calls", params={"export": "true", "limit": "2", "columns": "status"})).json()
    assert [set(c) for c in exported] == [{"id", "status"}] * 3


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"limit": "201"},
        {"limit": "0"},
        {"limit": "ten"},
        {"type": "fax"},
        {"type": "web,"},
        {"created_at": "newest"},
        {"start_date": "yesterday"},
        {"duration_min": "long"},
        {"export": "yes"},
        {"columns": "status"},
        {"colour": "red"},
    ],
)
async def test_list_calls_rejects_invalid_queries(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("/v1/calls", params=params)
    assert_error(response, 400, "Invalid query parameters")


async def test_get_unknown_call_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/calls/call_0000000000"), 404, "Call not found")


@pytest.mark.parametrize("call_id", ["abc123", "call_", "agent_sales", "call_ab-12"])
async def test_get_malformed_call_id_is_400(client: httpx.AsyncClient, call_id: str) -> None:
    assert_error(await client.get(f"/v1/calls/{call_id}"), 400, "Invalid call ID format")


# -- ending calls -------------------------------------------------------------------------------------------------
async def test_ending_a_pending_web_call_cancels_it(client: httpx.AsyncClient) -> None:
    call_id = (await create_web_call(client))["id"]
    response = await client.post(f"/v1/calls/{call_id}/end")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["end_reason"]) == ("cancelled", "agent_disconnected")


async def test_ending_a_live_phone_call_completes_it() -> None:
    async with EmulatorServer(make_config(phone_ring_seconds=0.02, phone_talk_seconds=5.0)) as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.origin, headers=headers) as c:
            call_id = (await create_phone_call(c))["id"]
            assert (await wait_for_status(c, call_id, "initiated"))["status"] == "initiated"
            response = await c.post(f"/v1/calls/{call_id}/end", json={"reason": "user_disconnected"})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["end_reason"]) == ("completed", "user_disconnected")


async def test_ending_an_ended_call_is_409(client: httpx.AsyncClient) -> None:
    call_id = (await create_web_call(client))["id"]
    await client.post(f"/v1/calls/{call_id}/end")
    assert_error(await client.post(f"/v1/calls/{call_id}/end"), 409, "Call has already ended")


async def test_ending_with_an_undocumented_reason_is_400(client: httpx.AsyncClient) -> None:
    call_id = (await create_web_call(client))["id"]
    response = await client.post(f"/v1/calls/{call_id}/end", json={"reason": "bored"})
    assert_error(response, 400)


async def test_ending_an_unknown_call_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/calls/call_0000000000/end"), 404, "Call not found")


# -- agents -------------------------------------------------------------------------------------------------------
async def test_list_agents_wraps_them_in_agents(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/agents")).json()
    assert set(body) == {"agents"}
    assert {a["id"] for a in body["agents"]} == {"agent_sales", "agent_support", "agent_collections"}


async def test_get_agent_returns_its_versions(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/agents/agent_support")).json()
    assert (body["id"], body["name"], body["current_version_number"]) == ("agent_support", "Sam from Support", 1)
    assert [v["is_published"] for v in body["versions"]] == [True]


async def test_get_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/agents/agent_nobody"), 404, "Agent not found")


# -- user webhooks ------------------------------------------------------------------------------------------------
HOOK = {"url": "https://example.test/hooks", "events": ["call.completed"], "secret": "s3cret-value"}


async def create_hook(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/v1/user-webhooks", json={**HOOK, **overrides})
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()["webhook"]
    return hook


async def test_create_webhook_never_echoes_the_secret(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/user-webhooks", json=HOOK)
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "Webhook created successfully"
    assert (body["webhook"]["url"], body["webhook"]["events"], body["webhook"]["is_active"]) == (
        HOOK["url"],
        HOOK["events"],
        True,
    )
    assert body["webhook"]["id"].startswith("webhook_")
    assert "s3cret-value" not in response.text


async def test_create_webhook_stores_the_secret(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    hook = await create_hook(client, is_active=False)
    stored = emu.state.webhooks[hook["id"]]
    assert (stored.secret, stored.is_active) == ("s3cret-value", False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "ftp://example.test/x"}, "url must be a valid URL"),
        ({"url": "not a url"}, "url must be a valid URL"),
        ({"url": "https://example.test/" + "a" * 2048}, "url must be shorter than or equal to 2048 characters"),
        ({"events": []}, "events should not be empty"),
        ({"events": "call.completed"}, "events must be an array"),
        ({"events": [1]}, "each value in events must be a non-empty string"),
        ({"secret": None}, "secret should not be empty"),
        ({"is_active": "yes"}, "is_active must be a boolean value"),
        ({"extra": 1}, "property extra should not exist"),
    ],
)
async def test_create_webhook_validates_each_field(
    client: httpx.AsyncClient, overrides: dict[str, Any], message: str
) -> None:
    response = await client.post("/v1/user-webhooks", json={**HOOK, **overrides})
    body = assert_error(response, 400, message)
    assert isinstance(body["message"], list)


async def test_list_webhooks_paginates_and_masks_secrets(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await create_hook(client, url=f"https://example.test/{i}")
    response = await client.get("/v1/user-webhooks", params={"page": 2, "limit": 2})
    body = response.json()
    assert (body["page"], body["limit"], body["total"], body["totalPages"]) == (2, 2, 3, 2)
    assert len(body["webhooks"]) == 1
    assert body["webhooks"][0]["secret"] == "********"
    assert "s3cret-value" not in response.text


async def test_list_webhooks_rejects_an_invalid_limit(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/user-webhooks", params={"limit": "0"}), 400, "Invalid query parameters")


async def test_get_webhook_by_id(client: httpx.AsyncClient) -> None:
    hook = await create_hook(client)
    body = (await client.get(f"/v1/user-webhooks/{hook['id']}")).json()
    assert (body["webhook"]["id"], body["webhook"]["url"], body["webhook"]["secret"]) == (
        hook["id"],
        HOOK["url"],
        "********",
    )


async def test_patch_webhook_changes_only_given_fields(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    hook = await create_hook(client)
    response = await client.patch(f"/v1/user-webhooks/{hook['id']}", json={"is_active": False, "secret": "new"})
    assert response.status_code == 200
    assert (response.json()["webhook"]["is_active"], response.json()["webhook"]["url"]) == (False, HOOK["url"])
    assert emu.state.webhooks[hook["id"]].secret == "new"


@pytest.mark.parametrize(
    ("patch", "message"),
    [({"url": "mailto:x@example.test"}, "url must be a valid URL"), ({"events": None}, "events should not be null")],
)
async def test_patch_webhook_validates_like_create(
    client: httpx.AsyncClient, patch: dict[str, Any], message: str
) -> None:
    hook = await create_hook(client)
    assert_error(await client.patch(f"/v1/user-webhooks/{hook['id']}", json=patch), 400, message)


async def test_delete_webhook_then_it_is_gone(client: httpx.AsyncClient) -> None:
    hook = await create_hook(client)
    response = await client.delete(f"/v1/user-webhooks/{hook['id']}")
    assert (response.status_code, response.json()) == (200, {"message": "Webhook deleted successfully"})
    assert_error(await client.get(f"/v1/user-webhooks/{hook['id']}"), 404, "Webhook not found")


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_unknown_webhook_is_404(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/v1/user-webhooks/webhook_nope", json={"is_active": True})
    assert_error(response, 404, "Webhook not found")


# -- legacy, unknown routes, CORS -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/calls"),
        ("POST", "/calls"),
        ("GET", "/calls/call_abc"),
        ("GET", "/agents/agent_sales"),
        ("DELETE", "/user-webhooks/webhook_x"),
    ],
)
async def test_legacy_unversioned_routes_are_gone(client: httpx.AsyncClient, method: str, path: str) -> None:
    body = assert_error(await client.request(method, path), 410)
    assert body["error"] == "Gone"
    assert "2026-07-31" in body["message"] and f"/v1{path}" in body["message"]


async def test_unknown_route_is_a_shaped_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404, "Cannot GET /v1/nothing-here")


async def test_wrong_method_is_a_shaped_405(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/calls")
    body = assert_error(response, 405)
    assert body["error"] == "Method Not Allowed"
    assert "POST" in response.headers["Allow"]


async def test_rest_api_sends_no_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/agents", headers={"Origin": "https://site.example.test"})
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


# -- control routes -------------------------------------------------------------------------------------------------
async def test_control_call_shows_internal_fields(client: httpx.AsyncClient) -> None:
    call_id = (await create_web_call(client))["id"]
    body = (await client.get(f"/_control/calls/{call_id}")).json()
    assert (body["id"], body["has_access_token"], body["access_token_used"], body["ended"]) == (
        call_id,
        True,
        False,
        False,
    )
    assert body["access_token_expires_at"].endswith("Z")


async def test_control_call_unknown_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/_control/calls/call_nope"), 404, "Call not found")


async def test_control_requests_logs_bodies_and_statuses(client: httpx.AsyncClient) -> None:
    call_id = (await create_web_call(client, metadata={"name": "Ann"}))["id"]
    await client.get(f"/v1/calls/{call_id}")
    log = (await client.get("/_control/requests")).json()
    assert log == [
        {
            "method": "POST",
            "route": "/v1/web-calls",
            "path": "/v1/web-calls",
            "json": {"agent_id": "agent_sales", "metadata": {"name": "Ann"}},
            "status": 201,
            "fault": None,
        },
        {
            "method": "GET",
            "route": "/v1/calls/{id}",
            "path": f"/v1/calls/{call_id}",
            "json": None,
            "status": 200,
            "fault": None,
        },
    ]


async def test_control_stats_count_requests_and_created_calls(client: httpx.AsyncClient) -> None:
    await create_web_call(client)
    await create_web_call(client)
    await create_phone_call(client)
    await client.get("/v1/calls/call_0000000000")
    stats = (await client.get("/_control/stats")).json()
    assert stats["requests"] == {"POST /v1/web-calls": 2, "POST /v1/calls": 1, "GET /v1/calls/{id}": 1}
    assert stats["calls_created"] == {"web": 2, "phone": 1}
    assert stats["faults_fired"] == 0


async def test_control_reset_forgets_calls_webhooks_and_stats(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    web = await create_web_call(client)
    await create_hook(client)
    response = await client.post("/_control/reset")
    assert response.status_code == 200
    assert (await client.get("/v1/calls")).json() == []
    assert (await client.get("/v1/user-webhooks")).json()["total"] == 0
    assert emu.state.redeem_token(web["access_token"]) is None
    stats = (await client.get("/_control/stats")).json()
    assert stats["calls_created"] == {"web": 0, "phone": 0}
    assert stats["requests"] == {"GET /v1/calls": 1, "GET /v1/user-webhooks": 1}


async def test_control_reset_ends_live_calls_first(emu: EmulatorServer, client: httpx.AsyncClient) -> None:
    ended: list[str] = []

    def listener(event_type: str, call: Call) -> None:
        if event_type == "call_ended":
            ended.append(call.id)

    emu.state.listen(listener)
    web = await create_web_call(client)
    await client.post("/_control/reset")
    assert ended == [web["id"]]


async def test_app_serves_rest_when_media_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, aiohttp_client: AiohttpClient
) -> None:
    monkeypatch.setitem(sys.modules, "webcall.emulator.media", None)  # as if the 'emulator' extra were missing
    with caplog.at_level(logging.INFO, logger="webcall.emulator"):
        app = create_emulator_app(make_config())
    assert "media is unavailable" in caplog.text
    test_client = await aiohttp_client(app)
    headers = {"Authorization": "Bearer emu_key:emu_secret"}
    created = await test_client.post("/v1/web-calls", json={"agent_id": "agent_sales"}, headers=headers)
    assert created.status == 201
    whip = await test_client.post(f"/v1/web-calls/{(await created.json())['id']}/whip", data="v=0")
    assert (whip.status, (await whip.json())["statusCode"]) == (404, 404)


# -- configuration and server -------------------------------------------------------------------------------------
def test_config_repr_hides_api_keys() -> None:
    assert "top-secret" not in repr(EmulatorConfig(api_keys=frozenset({"key:top-secret"})))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_keys": frozenset()},
        {"token_ttl": 0},
        {"phone_ring_seconds": -1},
        {"public_url": "ftp://x.example.test"},
        {"public_url": "http://x.example.test/path"},
        {"agents": {"other_id": default_agents()["agent_sales"]}},
    ],
)
def test_config_rejects_invalid_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="EmulatorConfig"):
        EmulatorConfig(**kwargs)


async def test_each_app_works_on_its_own_agents() -> None:
    agents = {"agent_x": EmulatedAgent(id="agent_x", name="X", welcome_message="Hi", versions=[AgentVersion(1)])}
    config = make_config(agents=agents)
    async with EmulatorServer(config) as one, EmulatorServer(config) as two:
        one.state.agents["agent_x"].name = "Changed"
        assert two.state.agents["agent_x"].name == "X"
    assert agents["agent_x"].name == "X"


def test_server_properties_need_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = EmulatorServer().base_url


async def test_server_reports_its_urls_and_key(emu: EmulatorServer) -> None:
    assert emu.origin.startswith("http://127.0.0.1:")
    assert emu.base_url == emu.origin + "/v1"
    assert emu.api_key == "emu_key:emu_secret"
    assert emu.config.public_url == emu.origin


# -- command line -------------------------------------------------------------------------------------------------
def test_command_line_serves_and_stops_cleanly_on_ctrl_c() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "webcall.emulator", "--port", str(free_port()), "--api-key", "cli_key:cli_secret"]
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in proc.stdout or []:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        try:
            printed: dict[str, str] = {}
            deadline = time.monotonic() + 30
            while "API key" not in printed and time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=0.5)
                except queue.Empty:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    continue
                label, sep, value = line.partition(":")
                if sep:
                    printed[label.strip()] = value.strip()
            assert printed["API key"] == "cli_key:cli_secret"
            headers = {"Authorization": f"Bearer {printed['API key']}"}
            response = httpx.get(f"{printed['base URL']}/agents", headers=headers)
            assert response.status_code == 200
            assert len(response.json()["agents"]) == 3
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            assert proc.stderr is not None
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_web_call_whose_token_expires_unused_is_cancelled() -> None:
    from webcall.emulator import EmulatorConfig, EmulatorServer

    async with EmulatorServer(EmulatorConfig(token_ttl=0.2)) as emu, httpx.AsyncClient() as http:
        auth = {"Authorization": f"Bearer {emu.api_key}"}
        created = (await http.post(f"{emu.base_url}/web-calls", json={"agent_id": "agent_sales"}, headers=auth)).json()
        for _ in range(40):
            record = (await http.get(f"{emu.base_url}/calls/{created['id']}", headers=auth)).json()
            if record["status"] != "created":
                break
            await asyncio.sleep(0.1)
    assert record["status"] == "cancelled" and record["end_reason"] == "token_expired"


@pytest.mark.parametrize("agent_id", sorted(default_agents()))
async def test_seeded_agents_never_speak_a_placeholder(client: httpx.AsyncClient, agent_id: str) -> None:
    """A call with no variables at all: each seeded agent fills its placeholders from its version's defaults, and the
    summary speaks of "the caller", not of a default name."""
    agent = (await client.get(f"/v1/agents/{agent_id}")).json()
    version = agent["versions"][0]
    assert version["default_dynamic_variables"], "the seeded agents publish their defaults"
    call_id = (await create_phone_call(client, agent_id=agent_id, metadata={}))["id"]
    record = await wait_for_status(client, call_id, "completed")
    assert "{{" not in record["transcript"] and "}}" not in record["transcript"], record["transcript"]
    greeting = record["transcript"].splitlines()[0]
    assert greeting.startswith("Agent: ") and " there" in greeting, greeting
    assert record["summary"].startswith("The caller spoke with "), record["summary"]
