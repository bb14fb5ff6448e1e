"""Fault injection through ``/_control/faults``: latency, status, timeout, reset, counts and stats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from webcall.emulator import EmulatorServer
from webcall.emulator.testing import EmulatorControl

CREATE = {"agent_id": "agent_sales", "metadata": {"name": "Ann"}}


async def timed(client: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(path)
    return response, time.monotonic() - started


# -- latency --------------------------------------------------------------------------------------------------------
async def test_latency_delays_then_handles_the_request(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="latency", delay=0.25)
    response, elapsed = await timed(client, "/v1/agents")
    assert response.status_code == 200
    assert len(response.json()["agents"]) == 3
    assert elapsed >= 0.25


async def test_latency_leaves_other_routes_alone(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="latency", delay=0.5, count=0)
    _, elapsed = await timed(client, "/v1/agents/agent_sales")
    assert elapsed < 0.4


async def test_permanent_latency_applies_to_every_request(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="latency", delay=0.1, count=0)
    for _ in range(3):
        _, elapsed = await timed(client, "/v1/agents")
        assert elapsed >= 0.1
    faults = (await client.get("/_control/faults")).json()["faults"]
    assert [(f["kind"], f["count"], f["fired"]) for f in faults] == [("latency", 0, 3)]


async def test_latency_and_status_faults_combine(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="latency", delay=0.2, count=0)
    await control.add_fault(route="GET /v1/agents", kind="status", status=503)
    response, elapsed = await timed(client, "/v1/agents")
    assert (response.status_code, elapsed >= 0.2) == (503, True)


# -- status ---------------------------------------------------------------------------------------------------------
async def test_status_fault_answers_a_dialnexa_error_with_retry_after(
    client: httpx.AsyncClient, control: EmulatorControl
) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=429, retry_after=1.5)
    response = await client.post("/v1/web-calls", json=CREATE)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1.5"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    body = response.json()
    assert (body["statusCode"], body["error"]) == (429, "Too Many Requests")
    assert isinstance(body["message"], str)


async def test_status_fault_without_retry_after_sends_none(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="status", status=502, message="Upstream carrier failed")
    response = await client.get("/v1/agents")
    assert response.status_code == 502
    assert "Retry-After" not in response.headers
    assert response.json() == {"statusCode": 502, "message": "Upstream carrier failed", "error": "Bad Gateway"}


async def test_status_fault_creates_no_call(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=500)
    assert (await client.post("/v1/web-calls", json=CREATE)).status_code == 500
    assert (await client.get("/v1/calls")).json() == []
    assert (await control.stats())["calls_created"] == {"web": 0, "phone": 0}


async def test_status_fault_fires_before_auth(emu: EmulatorServer, control: EmulatorControl) -> None:
    async with httpx.AsyncClient(base_url=emu.origin) as anonymous:
        await control.add_fault(route="GET /v1/agents", kind="status", status=503)
        assert (await anonymous.get("/v1/agents")).status_code == 503


# -- timeout --------------------------------------------------------------------------------------------------------
async def test_timeout_makes_the_client_time_out(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="POST /v1/calls", kind="timeout", delay=0.4)
    payload = {"agent_id": "agent_sales", "phone_number": "+14155550100", "metadata": {}}
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/calls", json=payload, timeout=0.1)
    assert (await control.stats())["timed_out"] == 1


async def test_timed_out_request_is_never_processed(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="timeout", delay=0.2)
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/v1/web-calls", json=CREATE, timeout=0.05)
    await asyncio.sleep(0.3)  # past the fault's delay: the emulator has answered by now, without handling
    assert (await client.get("/v1/calls")).json() == []
    log = (await client.get("/_control/requests")).json()
    assert [(e["route"], e["fault"], e["status"]) for e in log if e["route"] == "/v1/web-calls"] == [
        ("/v1/web-calls", "timeout", 504)
    ]


async def test_timeout_answers_504_to_a_patient_client(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="timeout", delay=0.05)
    response = await client.get("/v1/agents")
    assert response.status_code == 504
    assert response.json()["error"] == "Gateway Timeout"


async def test_stop_does_not_wait_for_a_pending_timeout() -> None:
    server = EmulatorServer()
    await server.start()
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with (
        httpx.AsyncClient(base_url=server.origin, headers=headers) as c,
        EmulatorControl(server.origin) as control,
    ):
        await control.add_fault(route="GET /v1/agents", kind="timeout")  # the default delay is 60 s
        pending = asyncio.create_task(c.get("/v1/agents", timeout=30))
        for _ in range(300):
            if (await control.stats())["timed_out"]:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 1.5
        response = await pending
    assert response.status_code == 504


# -- reset ----------------------------------------------------------------------------------------------------------
async def test_reset_drops_the_connection_without_a_response(
    client: httpx.AsyncClient, control: EmulatorControl
) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="reset")
    with pytest.raises(httpx.TransportError):
        await client.post("/v1/web-calls", json=CREATE)


async def test_reset_request_is_never_processed(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="reset")
    with pytest.raises(httpx.TransportError):
        await client.post("/v1/web-calls", json=CREATE)
    assert (await client.get("/v1/calls")).json() == []
    current = await control.stats()
    assert (current["resets"], current["calls_created"]["web"]) == (1, 0)


async def test_reset_request_is_logged_with_its_body(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="reset")
    with pytest.raises(httpx.TransportError):
        await client.post("/v1/web-calls", json=CREATE)
    log = (await client.get("/_control/requests")).json()
    assert log[-1] == {
        "method": "POST",
        "route": "/v1/web-calls",
        "path": "/v1/web-calls",
        "json": CREATE,
        "status": None,
        "fault": "reset",
    }


async def test_server_keeps_serving_after_a_reset(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="reset")
    with pytest.raises(httpx.TransportError):
        await client.get("/v1/agents")
    assert (await client.get("/v1/agents")).status_code == 200


# -- matching and counts ------------------------------------------------------------------------------------------
async def test_a_fault_fires_count_times_then_disappears(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="status", status=500, count=2)
    codes = [(await client.get("/v1/agents")).status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    assert (await client.get("/_control/faults")).json() == {"faults": []}


async def test_count_zero_fires_until_cleared(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="status", status=503, count=0)
    codes = [(await client.get("/v1/agents")).status_code for _ in range(4)]
    cleared = (await client.delete("/_control/faults")).json()
    assert (codes, cleared) == ([503] * 4, {"cleared": 1})
    assert (await client.get("/v1/agents")).status_code == 200


async def test_one_fault_can_be_removed_by_id(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    fault_id = await control.add_fault(route="GET /v1/agents", kind="status", status=503, count=0)
    assert (await client.delete(f"/_control/faults/{fault_id}")).status_code == 200
    assert (await client.get("/v1/agents")).status_code == 200
    assert (await client.delete(f"/_control/faults/{fault_id}")).status_code == 404


async def test_route_matches_the_canonical_path_and_method(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/calls/{id}", kind="status", status=500, count=0)
    assert (await client.get("/v1/calls/call_0000000000")).status_code == 500
    assert (await client.get("/v1/calls")).status_code == 200
    assert (await client.post("/v1/calls/call_0000000000/end")).status_code == 404


async def test_star_matches_every_api_route_but_not_control(
    client: httpx.AsyncClient, control: EmulatorControl
) -> None:
    await control.add_fault(route="*", kind="status", status=503, count=0)
    assert (await client.get("/v1/agents")).status_code == 503
    assert (await client.post("/v1/web-calls", json=CREATE)).status_code == 503
    assert (await client.get("/_control/stats")).status_code == 200


async def test_probability_zero_never_fires(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="status", status=500, probability=0.0)
    codes = {(await client.get("/v1/agents")).status_code for _ in range(5)}
    assert codes == {200}


async def test_earlier_fault_answers_first(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="status", status=502)
    await control.add_fault(route="GET /v1/agents", kind="status", status=503)
    codes = [(await client.get("/v1/agents")).status_code for _ in range(3)]
    assert codes == [502, 503, 200]


async def test_control_reset_clears_faults(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/agents", kind="status", status=503, count=0)
    await client.post("/_control/reset")
    assert (await client.get("/v1/agents")).status_code == 200


# -- stats ----------------------------------------------------------------------------------------------------------
async def test_stats_count_requests_and_fired_faults(client: httpx.AsyncClient, control: EmulatorControl) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=429, count=1)
    await control.add_fault(route="GET /v1/agents", kind="latency", delay=0.01, count=0)
    await client.post("/v1/web-calls", json=CREATE)
    await client.post("/v1/web-calls", json=CREATE)
    await client.get("/v1/agents")
    current = await control.stats()
    assert current["requests"] == {"POST /v1/web-calls": 2, "GET /v1/agents": 1}
    assert (current["faults_fired"], current["calls_created"]["web"]) == (2, 1)


# -- validation of the control body -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"route": "GET /v1/agents", "kind": "explode"}, "kind must be one of the following values"),
        ({"route": "GET /v1/nowhere", "kind": "reset"}, "matches no emulator route"),
        ({"route": "GET /_control/stats", "kind": "reset"}, "matches no emulator route"),
        ({"route": "GET /v1/agents", "kind": "status"}, "status is required for a status fault"),
        ({"route": "GET /v1/agents", "kind": "status", "status": 200}, "status must not be less than 400"),
        ({"route": "GET /v1/agents", "kind": "latency"}, "delay is required for a latency fault"),
        ({"route": "GET /v1/agents", "kind": "reset", "count": -1}, "count must not be less than 0"),
        ({"route": "GET /v1/agents", "kind": "reset", "probability": 2}, "probability must not be greater than 1"),
        ({"route": "GET /v1/agents", "kind": "reset", "when": "now"}, "property when should not exist"),
    ],
)
async def test_invalid_faults_are_400(client: httpx.AsyncClient, fault: dict[str, Any], message: str) -> None:
    response = await client.post("/_control/faults", json=fault)
    assert response.status_code == 400
    assert any(message in m for m in response.json()["message"])
