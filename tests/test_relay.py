"""Browser events over SSE, server-side hang-up, the maximum call length, and phone call-backs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

import webcall
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.events import CallEvent
from webcall.webhooks import signature

from .conftest import ORIGIN_HEADERS, MakeHost, runtime
from .hosting import ORIGIN, host_config
from .offers import OFFER
from .redis_server import RedisServer
from .test_webhooks import NEW, delivery, post


async def mint(client: Any) -> dict[str, Any]:
    response = await client.post(
        "/webcall/sessions",
        json={"offer": OFFER, "agent": "sales", "variables": {"name": "Priya"}},
        headers=ORIGIN_HEADERS,
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def read_events(response: Any, until: str = "call.ended") -> list[tuple[str, str, dict[str, Any]]]:
    """(id, event type, data) of each SSE event until ``until`` or the end of the stream."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in fields:
                data = json.loads(fields["data"])
                events.append((fields.get("id", ""), data["type"], data))
                if data["type"] == until:
                    break
            fields = {}
            continue
        key, _, value = line.partition(":")
        fields[key] = value[1:] if value.startswith(" ") else value
    return events


async def test_sse_streams_the_call_and_replays_after_reconnect(make_host: MakeHost) -> None:
    client, _ = await make_host(webhook_secrets=(NEW,))
    session = await mint(client)
    url = f"{session['events_url']}?token={session['token']}"
    stream = await client.get(url, headers=ORIGIN_HEADERS)
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.headers["Access-Control-Allow-Origin"] == ORIGIN
    await post(client, delivery(session["call_id"], "call_initiated", status="initiated"))
    await post(client, delivery(session["call_id"], "call_ended", summary="All good", metadata={"secret": "x"}))
    events = await asyncio.wait_for(read_events(stream), 5)
    epoch = events[0][0].partition("-")[0]  # ids are <epoch>-<sequence number in the call's log>
    assert [(i, name) for i, name, _ in events] == [
        (f"{epoch}-1", "session.created"),
        (f"{epoch}-2", "call.started"),
        (f"{epoch}-3", "call.ended"),
    ]
    ended = events[-1][2]
    assert ended["call"]["summary"] == "All good" and "metadata" not in ended["call"]
    assert "context" not in ended  # the host's private context never reaches the browser
    stream.close()
    replay = await client.get(url, headers={**ORIGIN_HEADERS, "Last-Event-ID": f"{epoch}-1"})
    again = await asyncio.wait_for(read_events(replay), 5)
    assert [i for i, _, _ in again] == [f"{epoch}-2", f"{epoch}-3"]


async def test_sse_requires_this_calls_token(make_host: MakeHost) -> None:
    client, handle = await make_host()
    a, b = await mint(client), await mint(client)
    for url in (a["events_url"], f"{a['events_url']}?token={b['token']}", f"{a['events_url']}?token=junk"):
        response = await client.get(url, headers=ORIGIN_HEADERS)
        assert response.status == 401 and (await response.json())["code"] == "unauthorized"
    end_token, _ = runtime(handle).tokens.issue(a["call_id"], "webcall:other", ttl=60)
    assert (await client.get(f"{a['events_url']}?token={end_token}")).status == 401


async def test_streams_close_cleanly_on_shutdown(emulator: EmulatorServer) -> None:
    """At shutdown the plugin ends every open event stream itself: the browser sees the stream end properly (it
    reconnects to another worker), and the server does not wait out its shutdown timeout for the handlers."""
    host = web.Application()
    handle = webcall.setup(host, host_config(emulator))
    shutdown_timeout = 10.0
    runner = web.AppRunner(host, shutdown_timeout=shutdown_timeout)  # a production runner, as web.run_app uses
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with httpx.AsyncClient(base_url=base, timeout=shutdown_timeout * 2) as http:
        body = {"agent": "sales", "offer": OFFER}
        session = (await http.post("/webcall/sessions", json=body, headers=ORIGIN_HEADERS)).json()
        async with http.stream("GET", session["events_url"], params={"token": session["token"]}) as stream:
            chunks = stream.aiter_raw()
            first = await anext(chunks)
            assert len(runtime(handle).streams) == 1
            loop = asyncio.get_running_loop()
            started = loop.time()
            cleanup = asyncio.create_task(runner.cleanup())
            rest = b"".join([chunk async for chunk in chunks])  # ends without a protocol error: a proper end
            await cleanup
            took = loop.time() - started
    assert b"session.created" in first + rest
    assert len(runtime(handle).streams) == 0
    assert took < shutdown_timeout / 2, f"shutdown waited {took:.1f} s for an open event stream"


async def test_host_end_call(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, handle = await make_host()
    session = await mint(client)
    record = await handle.end_call(session["call_id"])
    assert record is not None and emulator.state.calls[session["call_id"]].ended
    assert await runtime(handle).store.active_slots() == 0


async def test_maximum_call_length_is_enforced_by_the_plugin(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(max_call_seconds=1)
    session = await mint(client)
    assert session["max_call_seconds"] == 1
    for _ in range(40):
        if emulator.state.calls[session["call_id"]].ended:
            break
        await asyncio.sleep(0.1)
    assert emulator.state.calls[session["call_id"]].ended
    assert await control.request_count("POST /v1/calls/{id}/end") == 1


# -- call me back ---------------------------------------------------------------------------------------------------
CALLBACK_COUNTRIES = ("US",)
"""Call-backs are off until a site names the countries they may ring."""


async def callback(client: Any, **body: Any) -> Any:
    payload = {"agent": "sales", "phone_number": "+14155550123", "consent": True, **body}
    return await client.post("/webcall/callbacks", json=payload, headers=ORIGIN_HEADERS)


async def test_callback_places_a_phone_call(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, handle = await make_host(callback_countries=CALLBACK_COUNTRIES)
    got: list[CallEvent] = []
    handle.on_call_event.on("callback.requested")(got.append)
    response = await callback(client, phone_number="+1 (415) 555-0123", variables={"name": "Priya"})
    assert response.status == 202, await response.text()
    body = await response.json()
    call = emulator.state.calls[body["callback_id"]]
    assert call.type == "phone" and call.to_number == "+14155550123" and call.metadata == {"name": "Priya"}
    await runtime(handle).bus.drain()
    assert got and got[0].context is not None and got[0].context["phone_number"] == "+14155550123"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"phone_number": "0415 555"}, 400, "invalid_phone_number"),
        ({"phone_number": 14155550123}, 400, "invalid_phone_number"),
        ({"consent": False}, 400, "consent_required"),
        ({"consent": "yes"}, 400, "consent_required"),
        ({"agent": "nobody"}, 404, "unknown_agent"),
    ],
)
async def test_callback_validation(
    make_host: MakeHost, emulator: EmulatorServer, body: dict[str, Any], status: int, code: str
) -> None:
    client, _ = await make_host(callback_countries=CALLBACK_COUNTRIES)
    response = await callback(client, **body)
    assert response.status == status and (await response.json())["code"] == code
    assert emulator.state.calls == {}


async def test_callback_rate_limited_per_number(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host(callback_countries=CALLBACK_COUNTRIES, callback_rate_limit=2, rate_limit=100)
    assert (await callback(client)).status == 202
    assert (await callback(client)).status == 202
    limited = await callback(client)
    assert limited.status == 429 and "number" in (await limited.json())["message"]
    assert (await callback(client, phone_number="+14155550199")).status == 202
    assert len(emulator.state.calls) == 3


async def test_callback_ambiguous_timeout_is_reconciled_not_retried(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=CALLBACK_COUNTRIES, upstream_timeout=0.3)
    await control.add_fault(route="POST /v1/calls", kind="latency", delay=0.6, count=1)
    response = await callback(client)
    assert response.status == 202, await response.text()
    body = await response.json()
    assert list(emulator.state.calls) == [body["callback_id"]]
    assert await control.request_count("POST /v1/calls") == 1


async def test_callback_upstream_refusal(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=CALLBACK_COUNTRIES)
    await control.add_fault(route="POST /v1/calls", kind="status", status=402, count=1)
    response = await callback(client)
    assert response.status == 502 and (await response.json())["code"] == "upstream_rejected"


async def test_idle_stream_is_pinged(make_host: MakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("webcall.sse.PING_SECONDS", 0.05)
    client, _ = await make_host()
    session = await mint(client)
    stream = await client.get(f"{session['events_url']}?token={session['token']}", headers=ORIGIN_HEADERS)
    lines: list[bytes] = []
    while b": ping\n" not in lines:
        lines.append(await asyncio.wait_for(stream.content.readline(), 2))
    assert lines[0] == b"retry: 3000\n"
    stream.close()


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory"
        return
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def test_failed_delivery_is_retried_by_the_same_worker(make_host: MakeHost, store_url: str) -> None:
    client, handle = await make_host(webhook_secrets=(NEW,), outbox_reclaim_seconds=0.3, store=store_url)
    got: list[CallEvent] = []
    handle.on_call_event.append(got.append)
    store = runtime(handle).store
    original = store.done_parts
    failures = [RuntimeError("store hiccup")]

    async def flaky(entry_id: str) -> Any:
        if failures:
            raise failures.pop()
        return await original(entry_id)

    store.done_parts = flaky  # type: ignore[method-assign]
    body = json.dumps({"event_type": "call_ended", "payload": {"call": {"id": "call_reclaim"}}}).encode()
    headers = {"Content-Type": "application/json", "x-nexa-signature": signature(body, NEW)}
    assert (await client.post("/webcall/webhooks", data=body, headers=headers)).status == 200
    for _ in range(60):  # "it will be retried": within a few reclaim periods
        if got:
            break
        await asyncio.sleep(0.05)
    assert [e.type for e in got] == ["call.ended"]
