"""The emulator's webhook sender: signed deliveries, subscriptions, DialNexa's retries, delivery faults, emit and
transfer control routes — delivered over real HTTP to a small receiver app on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from webcall.emulator import EmulatorConfig, EmulatorServer
from webcall.emulator.keys import WEBHOOKS_KEY
from webcall.emulator.testing import EmulatorControl
from webcall.emulator.webhooks import CALL_SUBSCRIPTIONS, subscribed
from webcall.errors import WebhookSignatureError
from webcall.webhooks import verify

SECRET = "receiver-secret-0123456789"
HANG = -1  # a receiver script step: answer only after the sender's timeout


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def event_type(self) -> str:
        return str(self.json["event_type"])

    @property
    def call(self) -> dict[str, Any]:
        call: dict[str, Any] = self.json["payload"]["call"]
        return call


@dataclass
class Receiver:
    """One webhook endpoint: records every POST, answers from ``script`` (then 200), 401 on a bad signature."""

    script: list[int] = field(default_factory=list)
    check_signature: bool = False
    hits: list[Hit] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hits.append(Hit(dict(request.headers), body))
        if self.check_signature:
            try:
                verify(body, request.headers, [SECRET])
            except WebhookSignatureError:
                return web.json_response({"code": "invalid_signature"}, status=401)
        status = self.script.pop(0) if self.script else 200
        if status == HANG:
            # Answer well after the sender gave up on this attempt (or when the test ends).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 1.6)
            status = 200
        return web.json_response({"received": True}, status=status)

    def types(self) -> list[str]:
        """The event types received, sorted (deliveries of different events run concurrently)."""
        return sorted(h.event_type for h in self.hits)

    def one(self, event_type: str) -> Hit:
        (hit,) = (h for h in self.hits if h.event_type == event_type)
        return hit


@dataclass
class Site:
    server: TestServer
    receivers: dict[str, Receiver]

    def url(self, name: str) -> str:
        return str(self.server.make_url(f"/{name}"))


@pytest.fixture
async def site(aiohttp_server: AiohttpServer) -> AsyncIterator[Site]:
    receivers = {name: Receiver() for name in ("a", "b", "c", "d", "e", "f")}
    app = web.Application()
    for name, receiver in receivers.items():
        app.router.add_post(f"/{name}", receiver.handle)
    server = await aiohttp_server(app)
    yield Site(server, receivers)
    for receiver in receivers.values():
        receiver.release.set()


MakeEmu = Callable[..., Awaitable[EmulatorServer]]


@pytest.fixture
async def make_emu() -> AsyncIterator[MakeEmu]:
    servers: list[EmulatorServer] = []

    async def make(**overrides: Any) -> EmulatorServer:
        options: dict[str, Any] = {"phone_ring_seconds": 0.02, "phone_talk_seconds": 0.04, "webhook_backoff": 0.01}
        options.update(overrides)
        server = EmulatorServer(EmulatorConfig(**options))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def emu(make_emu: MakeEmu) -> EmulatorServer:
    return await make_emu()


@pytest.fixture
async def client(emu: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api(emu) as c:
        yield c


def api(emu: EmulatorServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=emu.origin, headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=5.0)


async def register(
    client: httpx.AsyncClient, url: str, events: list[str] | None = None, *, is_active: bool = True
) -> str:
    body = {"url": url, "events": events or list(CALL_SUBSCRIPTIONS), "secret": SECRET, "is_active": is_active}
    response = await client.post("/v1/user-webhooks", json=body)
    assert response.status_code == 201, response.text
    hook_id: str = response.json()["webhook"]["id"]
    return hook_id


async def drain(emu: EmulatorServer) -> None:
    await emu.app[WEBHOOKS_KEY].drain(within=5.0)


# -- signature and envelope -----------------------------------------------------------------------------------------
async def test_deliveries_are_signed_over_the_exact_raw_body(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    await control.emit()
    await drain(emu)
    hits = site.receivers["a"].hits
    assert len(hits) == 2
    for hit in hits:
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["x-nexa-signature"].startswith("sha256=")
        assert verify(hit.body, hit.headers, [SECRET]) == 0
        with pytest.raises(WebhookSignatureError):
            verify(hit.body + b" ", hit.headers, [SECRET])
        with pytest.raises(WebhookSignatureError):
            verify(hit.body, hit.headers, ["another-secret-0123456789"])
    assert all(r["signed_ok"] for r in await control.deliveries())


async def test_envelope_carries_the_call_as_it_was_at_each_event(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    (call_id,) = (await control.emit(metadata={"name": "Priya", "crm": "CRM-7"}))["call_ids"]
    await drain(emu)
    assert len(site.receivers["a"].hits) == 2
    started, ended = site.receivers["a"].one("call_initiated"), site.receivers["a"].one("call_ended")
    assert set(started.json) == {"event_type", "payload"} and set(started.json["payload"]) == {"call"}
    assert (started.event_type, started.call["id"], started.call["status"]) == ("call_initiated", call_id, "initiated")
    assert started.call["end_reason"] is None and started.call["type"] == "phone_call"
    assert ended.event_type == "call_ended"
    call = ended.call
    assert call["id"] == call_id and call["status"] == "completed" and call["end_reason"] == "agent_disconnected"
    assert isinstance(call["duration"], float) and call["duration"] >= 0
    assert "Priya" in call["transcript"] and call["summary"]
    assert call["metadata"] == {"name": "Priya", "crm": "CRM-7"}
    assert call == emu.state.webhook_call_json(emu.state.calls[call_id])


# -- subscriptions --------------------------------------------------------------------------------------------------
ALL = {"call_initiated", "call_ended", "transfer_completed"}
ONGOING = {"call_initiated", "transfer_completed"}


@pytest.mark.parametrize(
    ("events", "status", "expected"),
    [
        (sorted(CALL_SUBSCRIPTIONS), "completed", ALL),
        (["call.completed"], "completed", ALL),
        (["call.completed"], "failed", ONGOING),
        (["call.failed"], "completed", ONGOING),
        (["call.failed"], "failed", ALL),
        (["call.failed"], "cancelled", ALL),
        (["call.no_answer"], "busy", ALL),
        (["call.no_answer"], "did_not_pick", ALL),
        (["call.completed"], "no_answer", ONGOING),
        (["campaign.completed", "campaign.paused"], "completed", set()),
        (["workflow.lead.completed"], "completed", set()),
    ],
)
def test_subscription_names(events: list[str], status: str, expected: set[str]) -> None:
    assert {t for t in sorted(ALL) if subscribed(events, t, status)} == expected


@pytest.mark.parametrize(
    "events",
    [["call_ended"], ["*"], ["call.started"], ["Call.Completed"], ["call.completed", "order.paid"]],
)
async def test_undocumented_subscription_names_are_refused(client: httpx.AsyncClient, events: list[str]) -> None:
    body = {"url": "https://example.test/hooks", "events": events, "secret": SECRET}
    created = await client.post("/v1/user-webhooks", json=body)
    assert created.status_code == 400, created.text
    error = created.json()
    assert error["statusCode"] == 400 and "documented webhook events" in str(error["message"])
    assert (await client.get("/v1/user-webhooks")).json()["total"] == 0
    hook = await register(client, "https://example.test/hooks", ["call.completed"])
    patched = await client.patch(f"/v1/user-webhooks/{hook}", json={"events": events})
    assert patched.status_code == 400, patched.text
    kept = (await client.get(f"/v1/user-webhooks/{hook}")).json()
    assert kept.get("events", kept.get("webhook", {}).get("events")) == ["call.completed"]


async def test_only_active_matching_subscriptions_receive(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"), ["call.completed"])
    await register(client, site.url("b"), ["call.failed"])
    await register(client, site.url("c"))
    await register(client, site.url("d"), is_active=False)
    await register(client, site.url("e"), ["campaign.completed"])
    paused = await register(client, site.url("f"), ["call.completed"])
    assert (await client.patch(f"/v1/user-webhooks/{paused}", json={"is_active": False})).status_code == 200
    result = await control.emit()  # a call that starts and completes
    assert result["deliveries"] == 5
    await drain(emu)
    got = {name: r.types() for name, r in site.receivers.items()}
    assert got == {
        "a": ["call_ended", "call_initiated"],
        "b": ["call_initiated"],  # it completed: not a failure
        "c": ["call_ended", "call_initiated"],
        "d": [],
        "e": [],
        "f": [],
    }


# -- retries --------------------------------------------------------------------------------------------------------
async def test_non_2xx_is_retried_until_accepted(
    emu: EmulatorServer,
    client: httpx.AsyncClient,
    site: Site,
    caplog: pytest.LogCaptureFixture,
    control: EmulatorControl,
) -> None:
    caplog.set_level(logging.INFO, logger="webcall.emulator")
    hook = await register(client, site.url("a"))
    site.receivers["a"].script = [500, 500, 200]
    (call_id,) = (await control.emit(event_type="call_initiated"))["call_ids"]
    await drain(emu)
    assert len(site.receivers["a"].hits) == 3
    records = await control.deliveries()
    assert [(r["attempt"], r["status"], r["webhook_id"], r["call_id"]) for r in records] == [
        (1, 500, hook, call_id),
        (2, 500, hook, call_id),
        (3, 200, hook, call_id),
    ]
    assert len({h.body for h in site.receivers["a"].hits}) == 1  # every attempt sends the same bytes
    retried = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage() and "failed" in r.getMessage()]
    assert len(retried) == 2 and all(call_id in line for line in retried)


async def test_no_retry_when_webhook_retries_is_zero(make_emu: MakeEmu, site: Site) -> None:
    emu = await make_emu(webhook_retries=0)
    async with api(emu) as client:
        await register(client, site.url("a"))
        site.receivers["a"].script = [500]
        await emu.control.emit(event_type="call_initiated")
        await drain(emu)
        assert [r["status"] for r in await emu.control.deliveries()] == [500]
    assert len(site.receivers["a"].hits) == 1


async def test_gives_up_after_three_retries_on_any_non_2xx(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    site.receivers["a"].script = [302, 404, 503, 500, 200]
    await control.emit(event_type="call_initiated")
    await drain(emu)
    assert [(r["attempt"], r["status"]) for r in await control.deliveries()] == [(1, 302), (2, 404), (3, 503), (4, 500)]
    assert len(site.receivers["a"].hits) == 4


async def test_timeout_is_retried(make_emu: MakeEmu, site: Site) -> None:
    emu = await make_emu(webhook_timeout=1)
    async with api(emu) as client:
        await register(client, site.url("a"))
        site.receivers["a"].script = [HANG, 200]
        await emu.control.emit(event_type="call_initiated")
        await drain(emu)
        records = await emu.control.deliveries()
    assert [(r["attempt"], r["status"]) for r in records] == [(1, None), (2, 200)]
    assert records[0]["error"] == "timed out after 1 s"


async def test_connection_errors_are_retried(
    emu: EmulatorServer, client: httpx.AsyncClient, control: EmulatorControl
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await register(client, f"http://127.0.0.1:{port}/hooks")
    await control.emit(event_type="call_initiated")
    await drain(emu)
    records = await control.deliveries()
    assert [r["attempt"] for r in records] == [1, 2, 3, 4]
    assert all(r["status"] is None and "Connect" in (r["error"] or "") for r in records)


def test_config_bounds() -> None:
    for bad in ({"webhook_retries": 4}, {"webhook_retries": -1}, {"webhook_timeout": 0.5}, {"webhook_timeout": 61}):
        with pytest.raises(ValueError, match="webhook_"):
            EmulatorConfig(**bad)
    config = EmulatorConfig()
    assert (config.webhook_retries, config.webhook_timeout) == (3, 10.0)


# -- faults ---------------------------------------------------------------------------------------------------------
async def test_duplicate_sends_identical_bytes_twice(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    await control.add_webhook_fault(kind="duplicate")
    await control.emit()
    await drain(emu)
    hits = site.receivers["a"].hits
    first, second = (h for h in hits if h.event_type == "call_initiated")
    assert (first.body, first.headers["x-nexa-signature"]) == (second.body, second.headers["x-nexa-signature"])
    assert len(hits) == 3  # count 1: only the first delivery was doubled
    records = sorted(await control.deliveries(), key=lambda r: (r["delivery_id"], r["copy"]))
    assert [(r["event_type"], r["attempt"], r["copy"], r["fault"], r["status"]) for r in records] == [
        ("call_initiated", 1, 1, "duplicate", 200),
        ("call_initiated", 1, 2, "duplicate", 200),
        ("call_ended", 1, 1, None, 200),
    ]


async def test_drop_never_sends_and_is_not_retried(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    await control.add_webhook_fault(kind="drop")
    await control.emit()
    await drain(emu)
    assert site.receivers["a"].types() == ["call_ended"]
    records = sorted(await control.deliveries(), key=lambda r: str(r["delivery_id"]))
    assert [(r["event_type"], r["status"], r["fault"]) for r in records] == [
        ("call_initiated", None, "drop"),
        ("call_ended", 200, None),
    ]


async def test_bad_signature_is_refused_then_retried_correctly_signed(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    receiver = site.receivers["a"]
    receiver.check_signature = True
    await register(client, site.url("a"))
    await control.add_webhook_fault(kind="bad_signature")
    await control.emit(event_type="call_initiated")
    await drain(emu)
    bad, good = receiver.hits
    assert bad.body == good.body
    with pytest.raises(WebhookSignatureError):
        verify(bad.body, bad.headers, [SECRET])
    assert verify(good.body, good.headers, [SECRET]) == 0
    records = await control.deliveries()
    assert [(r["attempt"], r["status"], r["fault"], r["signed_ok"]) for r in records] == [
        (1, 401, "bad_signature", False),
        (2, 200, None, True),
    ]


async def test_delay_waits_before_sending_without_blocking_the_api(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    await control.add_webhook_fault(kind="delay", delay=0.4)
    started = time.monotonic()
    await control.emit(event_type="call_initiated")
    answered = time.monotonic() - started
    await drain(emu)
    delivered = time.monotonic() - started
    assert answered < 0.3 and delivered >= 0.4
    assert [(r["fault"], r["status"]) for r in await control.deliveries()] == [("delay", 200)]


async def test_seeded_probabilistic_faults_are_reproducible(make_emu: MakeEmu, site: Site) -> None:
    async def doubled(seed: int) -> list[str]:
        emu = await make_emu()
        async with api(emu) as client:
            await register(client, site.url("a"))
            await emu.control.add_webhook_fault(kind="duplicate", probability=0.5, count=0, seed=seed)
            await emu.control.emit(count=20)
            await drain(emu)
            records = await emu.control.deliveries()
        return sorted(r["delivery_id"] for r in records if r["copy"] == 2)

    first, again, other = await doubled(7), await doubled(7), await doubled(8)
    assert first == again
    assert 5 <= len(first) <= 35
    assert first != other


async def test_count_zero_lasts_until_cleared(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    fault_id = await control.add_webhook_fault(kind="drop", count=0)
    listed = (await client.get("/_control/webhook-faults")).json()["faults"]
    assert [(f["id"], f["kind"], f["count"], f["probability"]) for f in listed] == [(fault_id, "drop", 0, 1.0)]
    await control.emit(count=3)
    await drain(emu)
    assert site.receivers["a"].hits == []
    assert (await client.delete("/_control/webhook-faults")).json() == {"cleared": 1}
    await control.emit()
    await drain(emu)
    assert len(site.receivers["a"].hits) == 2


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "explode"}, "kind must be one of the following values: drop, delay, bad_signature, duplicate"),
        ({"kind": "drop", "probability": 1.5}, "probability must not be greater than 1"),
        ({"kind": "delay"}, "delay is required for a delay fault"),
        ({"kind": "drop", "count": -1}, "count must not be less than 0"),
        ({"kind": "drop", "route": "*"}, "property route should not exist"),
    ],
)
async def test_webhook_fault_validation(client: httpx.AsyncClient, fault: dict[str, Any], message: str) -> None:
    response = await client.post("/_control/webhook-faults", json=fault)
    assert response.status_code == 400
    assert response.json()["message"] == [message]


# -- control routes -------------------------------------------------------------------------------------------------
async def test_transfer_route_emits_transfer_completed_for_a_live_call(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"), ["call.completed"])
    (call_id,) = (await control.emit(event_type="call_initiated"))["call_ids"]
    response = await client.post(f"/_control/calls/{call_id}/transfer")
    assert response.status_code == 200 and response.json()["status"] == "initiated"
    await drain(emu)
    (hit,) = [h for h in site.receivers["a"].hits if h.event_type == "transfer_completed"]
    assert (hit.event_type, hit.call["id"], hit.call["status"]) == ("transfer_completed", call_id, "initiated")
    assert (await client.post(f"/v1/calls/{call_id}/end")).status_code == 200
    refused = await client.post(f"/_control/calls/{call_id}/transfer")
    assert refused.status_code == 409 and "completed" in refused.json()["message"]
    assert (await client.post("/_control/calls/call_nope/transfer")).status_code == 404


async def test_phone_calls_emit_initiated_then_ended(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    body = {"agent_id": "agent_sales", "phone_number": "+14155550100", "metadata": {"name": "Bob"}}
    response = await client.post("/v1/calls", json=body)
    assert response.status_code == 201
    call_id = response.json()["id"]
    for _ in range(100):
        if emu.state.calls[call_id].ended:
            break
        await asyncio.sleep(0.02)
    await drain(emu)
    receiver = site.receivers["a"]
    assert receiver.types() == ["call_ended", "call_initiated"]
    assert {h.call["id"] for h in receiver.hits} == {call_id}
    ended = receiver.one("call_ended").call
    assert ended["to_number"] == "+14155550100" and "Bob" in ended["transcript"]
    scheduled = sorted(await control.deliveries(), key=lambda r: str(r["delivery_id"]))
    assert [r["event_type"] for r in scheduled] == ["call_initiated", "call_ended"]


async def test_emit_runs_each_call_up_to_the_event_type(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    result = await control.emit(count=3, event_type="transfer_completed", agent_id="agent_support", call_type="web")
    assert len(result["call_ids"]) == 3 and result["events"] == result["deliveries"] == 9
    await drain(emu)
    hits = site.receivers["a"].hits
    records = sorted(await control.deliveries(), key=lambda r: str(r["delivery_id"]))
    for call_id in result["call_ids"]:
        mine = [h for h in hits if h.call["id"] == call_id]
        assert all(h.call["agent_id"] == "agent_support" and h.call["type"] == "web_call" for h in mine)
        in_order = [r["event_type"] for r in records if r["call_id"] == call_id]
        assert in_order == ["call_initiated", "transfer_completed", "call_ended"]
        assert sorted(h.event_type for h in mine) == sorted(in_order)
    live = await control.emit(count=2, event_type="call_initiated")
    assert all(emu.state.calls[c].status == "initiated" for c in live["call_ids"])


@pytest.mark.parametrize(
    ("body", "status"),
    [({"count": 0}, 400), ({"count": 10_001}, 400), ({"event_type": "call.ended"}, 400), ({"agent_id": "x"}, 404)],
)
async def test_emit_validation(client: httpx.AsyncClient, body: dict[str, Any], status: int) -> None:
    assert (await client.post("/_control/emit", json=body)).status_code == status


async def test_delivery_log_filters_and_reset(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    await register(client, site.url("a"))
    first, second = (await control.emit(count=2))["call_ids"]
    await drain(emu)
    await control.add_webhook_fault(kind="drop", count=0)
    assert {r["call_id"] for r in await control.deliveries(call_id=second)} == {second}
    assert sorted(r["call_id"] for r in await control.deliveries(event_type="call_ended")) == sorted([first, second])
    assert (await client.post("/_control/reset")).status_code == 200
    assert await control.deliveries() == []
    assert (await client.get("/_control/webhook-faults")).json()["faults"] == []
    assert (await client.get("/_control/deliveries/pending")).json() == {"pending": 0}


async def test_shutdown_cancels_deliveries_waiting_to_retry(make_emu: MakeEmu, site: Site) -> None:
    emu = await make_emu(webhook_backoff=30)
    async with api(emu) as client:
        await register(client, site.url("a"))
        site.receivers["a"].script = [500]
        await emu.control.emit(event_type="call_initiated")
        for _ in range(100):
            if site.receivers["a"].hits:
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/_control/deliveries/pending")).json() == {"pending": 1}
    sender = emu.app[WEBHOOKS_KEY]
    started = time.monotonic()
    await emu.stop()
    assert time.monotonic() - started < 2 and sender.pending == 0
    assert len(site.receivers["a"].hits) == 1


async def test_an_agents_binding_decides_where_its_events_go(
    emu: EmulatorServer, client: httpx.AsyncClient, site: Site, control: EmulatorControl
) -> None:
    first = await register(client, site.url("a"))
    await register(client, site.url("b"))
    sales = emu.state.agents["agent_sales"]
    sales.webhook_id = first  # bound to one subscription: only that one hears of its calls
    await control.emit(agent_id="agent_sales")
    await drain(emu)
    assert (site.receivers["a"].types(), site.receivers["b"].types()) == (["call_ended", "call_initiated"], [])
    agent = (await client.get("/v1/agents/agent_sales")).json()
    assert (agent["webhook_id"], agent["webhook_enabled"]) == (first, True)

    sales.webhook_enabled = False  # "Enable Webhook" off: nothing at all
    assert (await control.emit(agent_id="agent_sales"))["deliveries"] == 0
    await drain(emu)
    assert len(site.receivers["a"].hits) == 2 and site.receivers["b"].hits == []
