"""Prometheus metrics: off by default, and when on, they count what operators need."""

from __future__ import annotations

from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.webhooks import signature

from .conftest import MakeHost, runtime
from .hosting import ORIGIN
from .offers import OFFER

SECRET = "metrics-webhook-secret-0123"


async def test_metrics_are_off_by_default(make_host: MakeHost) -> None:
    client, _ = await make_host()
    response = await client.get("/webcall/metrics")
    assert response.status == 404 and (await response.json())["code"] == "not_found"


async def test_metrics_count_sessions_refusals_upstream_webhooks(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, handle = await make_host(metrics=True, webhook_secrets=(SECRET,))
    h = {"Origin": ORIGIN}
    session = await (await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=h)).json()
    await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "nobody"}, headers=h)
    await client.post(
        "/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers={"Origin": "https://evil.example"}
    )
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=503, count=1)
    await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=h)
    stream = await client.get(f"{session['events_url']}?token={session['token']}", headers=h)
    await stream.content.readline()
    assert "webcall_sse_streams_open 1.0" in await (await client.get("/webcall/metrics")).text()
    body = b'{"event_type": "call_ended", "payload": {"call": {"id": "%s"}}}' % session["call_id"].encode()
    for headers in ({"x-nexa-signature": signature(body, SECRET)},) * 2 + ({"x-nexa-signature": "sha256=00"},):
        await client.post("/webcall/webhooks", data=body, headers=headers)
    text = await (await client.get("/webcall/metrics")).text()
    stream.close()
    assert 'webcall_sessions_minted_total{agent="sales"} 1.0' in text
    assert 'webcall_requests_refused_total{code="unknown_agent",route="POST /webcall/sessions"} 1.0' in text
    assert 'webcall_requests_refused_total{code="origin_not_allowed",route="POST /webcall/sessions"} 1.0' in text
    assert 'webcall_requests_refused_total{code="upstream_busy",route="POST /webcall/sessions"} 1.0' in text
    assert 'webcall_upstream_seconds_count{outcome="201",route="POST /web-calls"} 1.0' in text
    assert 'webcall_upstream_seconds_count{outcome="503",route="POST /web-calls"} 1.0' in text
    assert 'webcall_upstream_seconds_count{outcome="200",route="GET /agents/{id}"} 2.0' in text
    assert 'webcall_webhooks_total{result="accepted"} 1.0' in text
    assert 'webcall_webhooks_total{result="duplicate"} 1.0' in text
    assert 'webcall_webhooks_total{result="rejected"} 1.0' in text
    assert runtime(handle).metrics.enabled


async def test_the_outbox_gauges_say_what_the_store_holds_when_scraped(make_host: MakeHost) -> None:
    client, handle = await make_host(metrics=True, callback_attempts=1)

    def broken(event: object) -> None:
        raise RuntimeError("the host's database is down")

    handle.on_call_event.append(broken)
    before = await (await client.get("/webcall/metrics")).text()
    response = await client.post(
        "/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers={"Origin": ORIGIN}
    )
    assert response.status == 201
    await runtime(handle).bus.drain()
    after = await (await client.get("/webcall/metrics")).text()
    assert "webcall_dead_letters 0.0" in before and "webcall_outbox_depth 0.0" in before
    assert "webcall_dead_letters 1.0" in after and "webcall_outbox_depth 0.0" in after
