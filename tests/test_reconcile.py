"""Reconciliation and failed starts, in process against the emulator: a call's outcome reaches the host and the
browser when its webhook does not, at DialNexa's pace, exactly once; a start that fails after DialNexa created the
call hangs it up and frees its slot, whichever step failed.

The plugin's own reconciler runs in the background at its real pace (first look-up 10 s after a start); these tests
drive a second :class:`Reconciler` over the same call desk step by step, with a clock that says how much later it is.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from webcall.calls import Caller, Slot
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl, eventually
from webcall.errors import StoreUnavailable
from webcall.events import CallEvent
from webcall.reconcile import CHECK_SECONDS, OpenCalls, Reconciler
from webcall.runtime import Runtime
from webcall.store import MemoryStore
from webcall.store.redis import RedisStore

from .conftest import Client, MakeHost, mint, runtime
from .hosting import AGENTS, ORIGIN
from .offers import OFFER
from .redis_server import RedisServer
from .test_relay import read_events
from .test_webhooks import NEW

WHIP = "POST /v1/web-calls/{call_id}/whip"
CREATE = "POST /v1/web-calls"
END = "POST /v1/calls/{id}/end"
LIST = "GET /v1/calls"
GET = "GET /v1/calls/{id}"


class Host:
    """A host app with the plugin, its webhook registered at the emulator, and what its callbacks received."""

    def __init__(self, client: Client, runtime: Runtime, emulator: EmulatorServer) -> None:
        self.client = client
        self.runtime = runtime
        self.emulator = emulator
        self.control = emulator.control
        self.events: list[CallEvent] = []

    async def start_call(self) -> dict[str, Any]:
        response = await mint(self.client)
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    def reconciler(self, later: float = 0.0) -> Reconciler:
        """A reconciler over the plugin's call desk whose clock runs ``later`` seconds ahead."""
        return Reconciler(self.runtime.desk, clock=lambda: time.time() + later)

    def ended(self, call_id: str) -> list[CallEvent]:
        return [e for e in self.events if e.call_id == call_id and e.type == "call.ended"]


async def host_for(make_host: MakeHost, emulator: EmulatorServer, **options: Any) -> Host:
    client, handle = await make_host(webhook_secrets=(NEW,), **options)
    await handle.ensure_webhook(str(client.make_url("/webcall/webhooks")))
    host = Host(client, runtime(handle), emulator)
    handle.on_call_event.append(host.events.append)
    return host


async def end_at_dialnexa(emulator: EmulatorServer, call_id: str) -> None:
    """The call ends at DialNexa (the agent hangs up), not through the plugin."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {emulator.api_key}"}) as http:
        response = await http.post(f"{emulator.base_url}/calls/{call_id}/end", json={"reason": "agent_disconnected"})
        assert response.status_code == 200, response.text


async def ended_without_webhook(host: Host, call_id: str) -> None:
    """End the call at DialNexa with its call_ended delivery dropped, and wait until DialNexa gave it up."""
    await host.control.add_webhook_fault(kind="drop")
    await end_at_dialnexa(host.emulator, call_id)

    async def dropped() -> bool:
        return any(d["fault"] == "drop" for d in await host.control.deliveries(call_id=call_id))

    await eventually(dropped)


# -- a lost webhook ---------------------------------------------------------------------------------------------------
async def test_a_dropped_call_ended_webhook_is_reconciled_for_the_host_and_the_browser(
    make_host: MakeHost, emulator: EmulatorServer
) -> None:
    host = await host_for(make_host, emulator)
    session = await host.start_call()
    call_id = session["call_id"]
    stream = await host.client.get(session["events_url"], params={"token": session["token"]})
    await ended_without_webhook(host, call_id)
    await host.runtime.bus.drain()
    assert host.ended(call_id) == [] and await host.runtime.store.active_slots() == 1

    await host.reconciler(later=CHECK_SECONDS + 1).step()
    await host.runtime.bus.drain()
    [ended] = host.ended(call_id)
    record = emulator.state.call_json(emulator.state.calls[call_id])
    assert ended.source == "reconciled" and ended.id == f"{call_id}:call.ended"
    assert ended.call["status"] == record["status"] == "cancelled"  # ended before its media connected
    assert ended.call["end_reason"] == "agent_disconnected" and ended.call["summary"] == record["summary"]
    assert ended.agent == "sales"  # the host context stored at the start
    browser = await asyncio.wait_for(read_events(stream), 5)
    assert [name for _, name, _ in browser] == ["session.created", "call.ended"]
    assert browser[-1][2]["call"]["summary"] == record["summary"]
    assert await host.runtime.store.active_slots() == 0 and await host.runtime.store.open_calls() == []


async def test_a_late_webhook_after_the_reconciled_event_is_a_duplicate(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    host = await host_for(make_host, emulator)
    call_id = (await host.start_call())["call_id"]
    await control.add_webhook_fault(kind="delay", delay=1.0)
    await end_at_dialnexa(emulator, call_id)
    await host.reconciler(later=CHECK_SECONDS + 1).step()  # before the delayed webhook arrives

    async def answered() -> bool:
        return any(d["status"] == 200 for d in await control.deliveries(call_id=call_id))

    await eventually(answered)
    [delivery] = [d for d in await control.deliveries(call_id=call_id) if d["status"] == 200]
    assert '"duplicate":true' in (delivery["response"] or "")
    await host.runtime.bus.drain()
    assert [e.source for e in host.ended(call_id)] == ["reconciled"]


async def test_a_call_whose_webhook_came_is_not_looked_up(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    host = await host_for(make_host, emulator)
    call_id = (await host.start_call())["call_id"]
    await end_at_dialnexa(emulator, call_id)

    async def delivered() -> bool:
        return any(d["status"] == 200 for d in await control.deliveries(call_id=call_id))

    await eventually(delivered)
    await host.reconciler(later=CHECK_SECONDS + 1).step()
    await host.runtime.bus.drain()
    assert [e.source for e in host.ended(call_id)] == ["dialnexa"]
    assert await control.requests(LIST) == [] and await control.requests(GET) == []


# -- DialNexa's pace ------------------------------------------------------------------------------------------------
async def test_open_calls_are_looked_up_after_the_grace_together_and_at_most_once_an_interval(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = await host_for(make_host, emulator)
    clock = [time.time()]
    reconciler = Reconciler(host.runtime.desk, clock=lambda: clock[0])
    await reconciler.step()  # start-up: nothing is open yet
    call_ids = {(await host.start_call())["call_id"] for _ in range(3)}
    asked: list[set[str]] = []
    dialnexa = host.runtime.client
    list_calls = dialnexa.list_calls

    async def listing(**query: Any) -> Any:
        asked.append(set(query["call_id"].split(",")))
        return await list_calls(**query)

    monkeypatch.setattr(dialnexa, "list_calls", listing)
    now = time.time()
    for clock[0] in (now, now + CHECK_SECONDS - 1):
        await reconciler.step()
    assert asked == [], "looked up within the grace"
    for clock[0] in (now + CHECK_SECONDS + 1, now + CHECK_SECONDS + 2, now + 2 * CHECK_SECONDS + 0.5):
        await reconciler.step()
    assert asked == [call_ids], "one request for the three calls, then none within the interval"
    clock[0] = now + 2 * CHECK_SECONDS + 1.1
    await reconciler.step()
    assert asked == [call_ids, call_ids]
    assert len(await control.requests(LIST)) == 2 and await control.requests(GET) == []


async def test_two_workers_never_look_up_one_call_at_once(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    host = await host_for(make_host, emulator)
    call_id = (await host.start_call())["call_id"]
    await ended_without_webhook(host, call_id)
    await control.add_fault(route=LIST, kind="latency", delay=0.5)  # the first worker is still asking
    workers = [host.reconciler(later=CHECK_SECONDS + 1) for _ in range(2)]
    await asyncio.gather(*(worker.step() for worker in workers))
    await host.runtime.bus.drain()
    assert len(await control.requests(LIST)) == 1 and len(host.ended(call_id)) == 1


async def test_a_call_dialnexa_does_not_know_is_asked_for_alone_then_closed(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    host = await host_for(make_host, emulator)
    await host.runtime.desk.open_calls.add("call_00000000000000")
    await host.reconciler(later=CHECK_SECONDS + 1).step()
    assert [r["path"] for r in await control.requests(GET)] == ["/v1/calls/call_00000000000000"]
    assert await host.runtime.store.open_calls() == []
    await host.runtime.bus.drain()
    assert host.events == []  # nothing is guessed


async def test_a_failed_listing_leaves_the_calls_open_for_the_next_round(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    host = await host_for(make_host, emulator)
    call_id = (await host.start_call())["call_id"]
    await ended_without_webhook(host, call_id)
    await control.add_fault(route=LIST, kind="status", status=500)  # one look-up: a 500 is not retried
    later = [CHECK_SECONDS + 1]
    reconciler = Reconciler(host.runtime.desk, clock=lambda: time.time() + later[0])
    await reconciler.step()
    await host.runtime.bus.drain()
    assert host.ended(call_id) == [] and await host.runtime.store.open_calls() == [call_id]
    assert len(await control.requests(LIST)) == 1 and await control.requests(GET) == []  # no fallback
    later[0] += CHECK_SECONDS + 0.1
    await reconciler.step()
    await host.runtime.bus.drain()
    assert [e.source for e in host.ended(call_id)] == ["reconciled"]


# -- after a store outage, and after a store lost its data -----------------------------------------------------------
async def test_right_after_a_store_outage_every_open_call_is_looked_up(
    make_host: MakeHost, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = await host_for(make_host, emulator)
    later = [0.0]
    reconciler = Reconciler(host.runtime.desk, clock=lambda: time.time() + later[0])
    await reconciler.step()  # start-up: nothing is open yet
    call_id = (await host.start_call())["call_id"]
    await ended_without_webhook(host, call_id)
    later[0] = 1.5  # the call started over a second ago, and is not due before its tenth
    await reconciler.step()
    await host.runtime.bus.drain()
    assert host.ended(call_id) == []
    store = host.runtime.store

    async def unreachable() -> str:
        raise StoreUnavailable("Redis is unreachable: ConnectionError")

    with monkeypatch.context() as outage:
        outage.setattr(store, "generation", unreachable)
        await reconciler.step()
    await reconciler.step()  # the store answers again
    await host.runtime.bus.drain()
    assert [e.source for e in host.ended(call_id)] == ["reconciled"]


async def test_a_store_that_lost_its_data_gets_the_open_calls_back(
    make_host: MakeHost, emulator: EmulatorServer, redis: RedisServer
) -> None:
    host = await host_for(make_host, emulator, store=redis.url)
    session = await host.start_call()
    call_id = session["call_id"]
    reconciler = host.reconciler()
    await reconciler.step()  # knows the store and its open calls
    redis.stop()
    redis.start()  # without persistence: empty
    await reconciler.step()
    store = host.runtime.store
    assert await store.open_calls() == [call_id]
    assert (await store.get_context(call_id) or {}).get("agent") == "sales" and await store.media_of(call_id)
    await ended_without_webhook(host, call_id)
    await host.reconciler(later=CHECK_SECONDS + 1).step()
    await host.runtime.bus.drain()
    [ended] = host.ended(call_id)
    assert ended.source == "reconciled" and ended.agent == "sales"


async def test_a_redis_subscriber_misses_nothing_published_while_it_reconnects(redis: RedisServer) -> None:
    store = RedisStore(redis.url)
    subscription = store.subscribe("call_r")
    try:
        await subscription.start()
        redis.stop()
        await asyncio.sleep(0.3)
        redis.start()
        published = False
        while not published:  # the first moment the store answers again, before pub/sub has resubscribed
            try:
                await store.publish_event(
                    {}, dedupe_key="r", dedupe_ttl=60, call_id="call_r", browser_event={"type": "x"}, log_ttl=60
                )
                published = True
            except StoreUnavailable:
                await asyncio.sleep(0.01)
        event_id, event = await asyncio.wait_for(subscription.get(), 5) or (None, None)
        assert event == {"type": "x"} and event_id is not None and event_id.seq == 1
    finally:
        await subscription.close()
        await store.close()


# -- a start that fails after DialNexa created the call --------------------------------------------------------------
async def hung_up(control: EmulatorControl) -> list[str]:
    """The calls the plugin hung up at DialNexa."""
    return [r["path"].split("/")[3] for r in await control.requests(END)]


async def test_a_start_whose_store_write_fails_hangs_the_call_up_and_frees_its_slot(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = await host_for(make_host, emulator)
    store = host.runtime.store

    async def store_down(*args: Any, **kwargs: Any) -> str | None:
        raise StoreUnavailable("Redis is unreachable: ConnectionError")

    monkeypatch.setattr(store, "publish_new_call", store_down)
    response = await mint(host.client)
    assert response.status == 503
    [call_id] = emulator.state.calls
    assert await hung_up(control) == [call_id] and emulator.state.calls[call_id].ended
    assert await store.active_slots() == 0


async def test_a_slot_that_could_not_be_freed_is_freed_when_the_store_answers(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = await host_for(make_host, emulator)
    store = host.runtime.store

    async def store_down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("Redis is unreachable: ConnectionError")

    with monkeypatch.context() as outage:
        outage.setattr(store, "publish_new_call", store_down)
        outage.setattr(store, "release_slot", store_down)
        assert (await mint(host.client)).status == 503
    assert await store.active_slots() == 1 and len(await hung_up(control)) == 1
    await host.reconciler().step()
    assert await store.active_slots() == 0


async def test_a_start_whose_media_is_refused_hangs_the_call_up_and_frees_its_slot(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    host = await host_for(make_host, emulator)
    await control.add_fault(route=WHIP, kind="status", status=500)
    response = await mint(host.client)
    assert response.status == 502
    [call_id] = emulator.state.calls
    assert await hung_up(control) == [call_id] and await host.runtime.store.active_slots() == 0


@pytest.mark.parametrize("route", [CREATE, WHIP], ids=["while-creating", "while-connecting"])
async def test_a_visitor_who_leaves_during_the_start_leaves_no_call_and_no_slot(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl, route: str
) -> None:
    host = await host_for(make_host, emulator)
    await control.add_fault(route=route, kind="latency", delay=1.0)
    leaving = asyncio.create_task(mint(host.client))

    async def waiting_on_dialnexa() -> bool:
        return bool(await control.requests(route))

    await eventually(waiting_on_dialnexa)
    await asyncio.sleep(0.2)
    leaving.cancel()  # the visitor closes the page: the connection goes, the request is cancelled
    await asyncio.gather(leaving, return_exceptions=True)

    async def cleaned_up() -> bool:
        return len(emulator.state.calls) == 1 and await hung_up(control) == list(emulator.state.calls)

    await eventually(cleaned_up)
    assert await host.runtime.store.active_slots() == 0


async def test_a_start_cancelled_twice_still_hangs_the_call_up_and_frees_its_slot(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    """A request cancelled again while its call is being hung up (a server shutting down cancels its handlers
    too) does not stop the hang-up half-way."""
    host = await host_for(make_host, emulator)
    desk, store = host.runtime.desk, host.runtime.store
    caller = Caller(alias="sales", agent=AGENTS["sales"], variables={}, origin=ORIGIN, identity=None)
    assert await store.acquire_slot("slot_1", 10, 600)
    session = await desk.create_call(caller, Slot("slot_1", taken=True))
    await control.add_fault(route=WHIP, kind="latency", delay=1.0)
    await control.add_fault(route=END, kind="latency", delay=0.5)
    starting = asyncio.create_task(desk.connect(caller, session, OFFER, "slot_1"))

    async def sent(route: str) -> bool:
        return bool(await control.requests(route))

    await eventually(lambda: sent(WHIP))
    starting.cancel()
    await eventually(lambda: sent(END))
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)

    async def slot_freed() -> bool:
        return await store.active_slots() == 0

    await eventually(slot_freed)
    assert emulator.state.calls[session.id].ended and await hung_up(control) == [session.id]


def test_no_call_is_looked_up_more_than_once_a_second() -> None:
    with pytest.raises(ValueError, match="once every 1 s"):
        OpenCalls(MemoryStore(), interval=0.5)
