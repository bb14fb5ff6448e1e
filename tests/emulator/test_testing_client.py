"""``webcall.emulator.testing.EmulatorControl``, the typed client of the control routes, against a running emulator."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import pytest

from webcall.emulator import EmulatorServer, testing
from webcall.emulator.testing import EmulatorControl, EmulatorControlError, eventually

CREATE = {"agent_id": "agent_sales", "metadata": {"name": "Ann"}}


async def test_a_fault_is_listed_fires_and_is_counted(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    fault_id = await control.add_fault(route="POST /v1/web-calls", kind="status", status=503, count=2)
    listed = await control.faults()
    assert [(f["id"], f["route"], f["kind"], f["status"], f["fired"]) for f in listed] == [
        (fault_id, "POST /v1/web-calls", "status", 503, 0)
    ]

    codes = [(await client.post("/v1/web-calls", json=CREATE)).status_code for _ in range(3)]

    assert codes == [503, 503, 201]
    assert await control.faults() == []
    assert await control.request_count("POST /v1/web-calls") == 3
    stats = await control.stats()
    assert (stats["faults_fired"], stats["calls_created"]["web"]) == (2, 1)


async def test_faults_are_removed_one_by_one_or_all_at_once(control: EmulatorControl) -> None:
    first = await control.add_fault(route="GET /v1/agents", kind="latency", delay=0.01, count=0)
    await control.add_fault(route="*", kind="reset", probability=0.5)
    await control.remove_fault(first)
    assert [f["kind"] for f in await control.faults()] == ["reset"]
    assert await control.clear_faults() == 1
    with pytest.raises(EmulatorControlError) as raised:
        await control.remove_fault(first)
    assert (raised.value.status, raised.value.message) == (404, "Fault not found")


async def test_a_fault_the_emulator_refuses_raises_with_its_reasons(control: EmulatorControl) -> None:
    with pytest.raises(EmulatorControlError) as raised:
        await control.add_fault(route="GET /v1/nowhere", kind="status")
    error = raised.value
    assert (error.method, error.path, error.status) == ("POST", "/_control/faults", 400)
    assert "matches no emulator route" in error.message
    assert "status is required for a status fault" in error.message
    assert str(error).startswith("POST /_control/faults -> 400: ")


async def test_call_record_shows_what_only_the_emulator_knows(
    client: httpx.AsyncClient, control: EmulatorControl
) -> None:
    created = (await client.post("/v1/web-calls", json=CREATE)).json()

    record = await control.call(created["id"])

    assert (record["id"], record["type"], record["status"], record["metadata"]) == (
        created["id"],
        "web",
        "created",
        {"name": "Ann"},
    )
    assert (record["has_access_token"], record["access_token_used"], record["ended"]) == (True, False, False)
    assert [(r["method"], r["route"]) for r in await control.requests("POST /v1/web-calls")] == [
        ("POST", "/v1/web-calls")
    ]


async def test_unknown_call_and_media_are_404(control: EmulatorControl) -> None:
    for read in (control.call, control.media):
        with pytest.raises(EmulatorControlError) as raised:
            await read("call_unknown")
        assert raised.value.status == 404


async def test_wait_for_returns_the_record_once_the_condition_holds(
    client: httpx.AsyncClient, control: EmulatorControl
) -> None:
    created = (await client.post("/v1/calls", json={**CREATE, "phone_number": "+14155550100"})).json()

    record = await control.wait_for(lambda: control.call(created["id"]), lambda call: call["ended"], within=5)

    assert (record["id"], record["status"]) == (created["id"], "completed")


async def test_wait_for_treats_404_as_not_yet_and_names_what_it_waited_for(control: EmulatorControl) -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"media of call_unknown still false after 0\.3 s"):
        await control.wait_for(
            lambda: control.media("call_unknown"),
            lambda media: media["connected"],
            within=0.3,
            what="media of call_unknown",
        )
    assert 0.3 <= time.monotonic() - started < 2


async def test_wait_for_passes_other_errors_through(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    created = (await client.post("/v1/web-calls", json=CREATE)).json()
    with pytest.raises(EmulatorControlError) as raised:  # only a live call can be transferred
        await control.wait_for(lambda: control.transfer(created["id"]), lambda call: True, within=1)
    assert raised.value.status == 409


async def test_webhook_faults_and_synthetic_calls_reach_a_webhook(
    client: httpx.AsyncClient, control: EmulatorControl
) -> None:
    webhook = {"url": "http://127.0.0.1:9/hook", "events": ["call.completed"], "secret": "whsec_testing_client_0123"}
    assert (await client.post("/v1/user-webhooks", json=webhook)).status_code == 201
    await control.add_webhook_fault(kind="drop", count=0)

    emitted = await control.emit(count=2, call_type="web")

    assert (len(emitted["call_ids"]), emitted["events"], emitted["deliveries"]) == (2, 4, 4)

    async def settled() -> bool:
        return await control.pending_deliveries() == 0

    await eventually(settled, 5, what="the deliveries settled")
    delivered = await control.deliveries(call_id=emitted["call_ids"][0])
    assert [(d["event_type"], d["fault"]) for d in delivered] == [("call_initiated", "drop"), ("call_ended", "drop")]
    assert await control.clear_webhook_faults() == 1


async def test_reset_forgets_calls_and_faults(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    created = (await client.post("/v1/web-calls", json=CREATE)).json()
    await control.add_fault(route="*", kind="reset", count=0)

    await control.reset()

    assert await control.faults() == []
    assert await control.requests() == []
    with pytest.raises(EmulatorControlError):
        await control.call(created["id"])


async def test_a_shared_session_is_left_open(emu: EmulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with EmulatorControl(emu.origin, session=session) as control:
            assert (await control.stats())["faults_fired"] == 0
        assert not session.closed


def test_the_client_needs_nothing_beyond_the_runtime_dependencies() -> None:
    """Host suites install the plugin, not its test extra: the client speaks HTTP with aiohttp alone."""
    tree = ast.parse(Path(testing.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    third_party = {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"aiohttp", "webcall"}
    assert {name for name in imported if name.startswith("webcall")} <= {
        "webcall.emulator.stats",
        "webcall.emulator.webhooks",
    }
