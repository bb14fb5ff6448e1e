"""One contract, two stores: the memory store and the Redis store behave alike, the Redis store on each shape of Redis
(real processes): one server, a three-master Redis Cluster, and a primary with a replica watched by Sentinel."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from webcall.store import MemoryStore, Store
from webcall.store.base import EventId, Item, NewCall
from webcall.store.redis import RedisStore

from .redis_server import RedisClusterNodes, RedisSentinelGroup, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(Path(tmp_path_factory.mktemp("redis-cluster")))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelGroup]:
    group = RedisSentinelGroup(Path(tmp_path_factory.mktemp("redis-sentinel")))
    group.start()
    yield group
    group.stop()


REDIS_SHAPES = {"redis": "redis_server", "redis-cluster": "redis_cluster", "redis-sentinel": "redis_sentinel"}
"""Each Redis the store runs on, and the fixture that starts it."""


@pytest.fixture(params=["memory", *REDIS_SHAPES])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        made: Store = MemoryStore()
    else:
        redis = request.getfixturevalue(REDIS_SHAPES[request.param])
        made = RedisStore(redis.url, prefix=f"t{secrets.token_hex(4)}:")
    yield made
    await made.close()


async def test_rate_limit(store: Store) -> None:
    assert [await store.hit("ip", 2, 0.3) for _ in range(2)] == [None, None]
    wait = await store.hit("ip", 2, 0.3)
    assert wait is not None and 0 < wait <= 0.3
    await asyncio.sleep(0.35)
    assert await store.hit("ip", 2, 0.3) is None


async def test_slots(store: Store) -> None:
    assert await store.acquire_slot("a", 2, 0.3)
    assert await store.acquire_slot("b", 2, 10)
    assert not await store.acquire_slot("c", 2, 10)
    assert await store.active_slots() == 2
    await asyncio.sleep(0.35)
    assert await store.active_slots() == 1  # "a" expired: a dead worker leaks nothing
    assert await store.acquire_slot("c", 2, 10)
    assert await store.release_slot("b") and not await store.release_slot("b")


async def test_context_and_once(store: Store) -> None:
    await store.put_context("call_1", {"agent": "sales", "n": [1, 2]}, ttl=10)
    assert await store.get_context("call_1") == {"agent": "sales", "n": [1, 2]}
    assert await store.get_context("call_2") is None
    assert await store.use_once("jti", 10) and not await store.use_once("jti", 10)
    await store.forget_once("jti")  # a reservation given back
    assert await store.use_once("jti", 10) and not await store.use_once("jti", 10)
    await store.forget_once("never-used")


async def test_uncount_takes_back_one_request_and_never_goes_below_zero(store: Store) -> None:
    assert await store.hit("k", 2, 10) is None and await store.hit("k", 2, 10) is None
    assert await store.hit("k", 2, 10) is not None
    await store.uncount("k")
    assert await store.hit("k", 2, 10) is None
    assert await store.hit("k", 2, 10) is not None
    await store.uncount("nothing-counted")
    await store.uncount("nothing-counted")
    assert await store.hit("nothing-counted", 1, 10) is None
    assert await store.hit("nothing-counted", 1, 10) is not None


async def test_outbox_dedupe_take_ack(store: Store) -> None:
    first = await store.outbox_add({"n": 1}, dedupe_key="k1", dedupe_ttl=60)
    assert first is not None
    assert await store.outbox_add({"n": 1}, dedupe_key="k1", dedupe_ttl=60) is None
    assert await store.outbox_add({"n": 2}) is not None
    taken = await store.outbox_take("w1", 10, block=0.1, reclaim_after=60)
    assert [e for _, e in taken] == [{"n": 1}, {"n": 2}]
    assert await store.outbox_take("w2", 10, block=0.05, reclaim_after=60) == []
    await store.outbox_ack(taken[0][0])
    assert await store.outbox_depth() == 1


async def test_outbox_reclaims_from_a_dead_consumer(store: Store) -> None:
    entry = await store.outbox_add({"n": 1})
    assert entry is not None
    assert len(await store.outbox_take("dead", 10, block=0.05, reclaim_after=0.2)) == 1
    await store.mark_done(entry, "callback_a", ttl=60)
    await asyncio.sleep(0.25)
    again = await store.outbox_take("alive", 10, block=0.05, reclaim_after=0.2)
    assert [i for i, _ in again] == [entry]
    assert await store.done_parts(entry) == {"callback_a"}


async def test_outbox_take_wakes_up_on_add(store: Store) -> None:
    waiter = asyncio.create_task(store.outbox_take("w", 10, block=2, reclaim_after=60))
    await asyncio.sleep(0.1)
    await store.outbox_add({"late": True})
    taken = await asyncio.wait_for(waiter, 3)
    assert [e for _, e in taken] == [{"late": True}]


async def test_dead_letters(store: Store) -> None:
    a = await store.dead_add({"callback": "a"})
    b = await store.dead_add({"callback": "b"})
    assert [i for i, _ in await store.dead_list()] == [a, b]
    assert await store.dead_count() == 2
    assert await store.dead_take(a) == {"callback": "a"}
    assert await store.dead_take(a) is None
    assert await store.dead_count() == 1


async def publish(store: Store, call_id: str, kind: str) -> str | None:
    return await store.publish_event(
        {"event": kind},
        dedupe_key=f"{call_id}:{kind}",
        dedupe_ttl=60,
        call_id=call_id,
        browser_event={"type": kind},
        log_ttl=60,
    )


def numbered(items: list[Item]) -> list[tuple[int, dict[str, Any]]]:
    """The events with their sequence numbers, once it is checked that they are of one epoch."""
    assert len({event_id.epoch for event_id, _ in items}) <= 1, items
    return [(event_id.seq, event) for event_id, event in items]


async def test_event_log_and_subscription(store: Store) -> None:
    await publish(store, "call_1", "x")
    subscription = store.subscribe("call_1")
    await subscription.start()
    await publish(store, "call_1", "y")
    await publish(store, "call_other", "z")
    iterator = subscription.__aiter__()
    live = await asyncio.wait_for(iterator.__anext__(), 2)
    logged = await store.events_after("call_1", None)
    assert numbered(logged) == [(1, {"type": "x"}), (2, {"type": "y"})] and live == logged[1]
    first = logged[0][0]
    assert await store.events_after("call_1", first) == [live]
    assert await publish(store, "call_1", "y") is None  # a duplicate is neither logged nor published
    assert await store.events_after("call_1", first) == [live]
    assert await store.events_after("call_1", EventId("0", 1)) == logged  # another epoch's id: the whole log
    await subscription.close()


async def test_a_moved_deadline_fires_once_at_its_new_time(store: Store) -> None:
    await store.deadline_set("a", 100.0)
    await store.deadline_set("a", 250.0)  # moved later
    await store.deadline_set("b", 300.0)
    await store.deadline_set("b", 120.0)  # moved earlier
    assert await store.deadlines_due(200.0) == ["b"]
    assert await store.deadlines_due(260.0) == ["a"]
    assert await store.deadlines_due(1000.0) == []


async def test_deadlines_come_earliest_first_within_the_limit(store: Store) -> None:
    for n in range(5):
        await store.deadline_set(f"call_{n}", 100.0 - n)
    assert await store.deadlines_due(200.0, limit=2) == ["call_4", "call_3"]
    assert await store.deadlines_due(200.0) == ["call_2", "call_1", "call_0"]


async def test_deadlines_are_taken_once(store: Store) -> None:
    await store.deadline_set("a", 100.0)
    await store.deadline_set("b", 200.0)
    await store.deadline_set("c", 300.0)
    await store.deadline_clear("c")
    assert await store.deadlines_due(150.0) == ["a"]
    assert await store.deadlines_due(150.0) == []
    assert await store.deadlines_due(1000.0) == ["b"]


async def test_publish_event_is_one_deduplicated_step(store: Store) -> None:
    subscription = store.subscribe("call_9")
    await subscription.start()

    async def publish() -> str | None:
        return await store.publish_event(
            {"n": 1},
            dedupe_key="evt:1",
            dedupe_ttl=60,
            call_id="call_9",
            browser_event={"type": "call.ended"},
            log_ttl=60,
        )

    first, again = await publish(), await publish()
    assert first is not None and again is None
    assert await store.outbox_depth() == 1
    logged = await store.events_after("call_9", None)
    assert numbered(logged) == [(1, {"type": "call.ended"})]
    assert await asyncio.wait_for(subscription.get(), 2) == logged[0]
    await subscription.close()


async def test_hit_all_counts_every_limit_or_none(store: Store) -> None:
    limits = [("a", 2), ("global", 3)]
    assert await store.hit_all(limits, 10) is None
    assert await store.hit_all(limits, 10) is None
    refused = await store.hit_all(limits, 10)
    assert refused is not None and refused[0] == 0 and 0 < refused[1] <= 10
    assert await store.hit_all([("b", 2), ("global", 3)], 10) is None  # "a" refused, so "global" was not counted
    refused = await store.hit_all([("c", 2), ("global", 3)], 10)
    assert refused is not None and refused[0] == 1


async def test_hit_all_and_acquire_counts_the_visit_then_claims_a_slot_unless_a_limit_refuses(store: Store) -> None:
    limits = [("ip", 3), ("global", 10)]
    assert await store.hit_all_and_acquire(limits, 10, "s1", 2, 0.3) == (None, True)
    assert await store.hit_all_and_acquire(limits, 10, "s2", 2, 10) == (None, True)
    assert await store.hit_all_and_acquire(limits, 10, "s3", 2, 10) == (None, False)  # counted; both lines busy
    assert await store.active_slots() == 2
    refused, taken = await store.hit_all_and_acquire(limits, 10, "s4", 2, 10)  # the fourth visit from "ip"
    assert refused is not None and refused[0] == 0 and 0 < refused[1] <= 10 and not taken
    assert await store.hit_all([("other", 3), ("global", 10)], 10) is None
    refused, _ = await store.hit_all_and_acquire([("other", 3), ("global", 4)], 10, "s5", 2, 10)
    assert refused is not None and refused[0] == 1, "four visits counted site-wide: the refused one was not"
    await asyncio.sleep(0.35)  # "s1" expires, as a lease does
    assert await store.hit_all_and_acquire([("late", 1)], 10, "s6", 2, 10) == (None, True)
    assert await store.release_slot("s6") and await store.release_slot("s2")
    assert await store.active_slots() == 0


async def test_remember_call(store: Store) -> None:
    await store.remember_call("call_r", {"agent": "sales"}, ttl=10, deadline_at=50.0)
    assert await store.get_context("call_r") == {"agent": "sales"}
    assert await store.deadlines_due(100.0) == ["call_r"]


MEDIA = {"resource_url": "https://media.example/r/1", "access_token": "t", "etag": '"1"'}


def new_call(call_id: str, deadline_at: float = 50.0) -> NewCall:
    context = {"agent": "sales", "slot_id": "s1"}
    return NewCall(call_id=call_id, context=context, ttl=10, deadline_at=deadline_at, media=MEDIA, media_ttl=10)


async def publish_new(store: Store, call: NewCall) -> str | None:
    return await store.publish_new_call(
        call,
        {"event": "session.created"},
        dedupe_key=f"{call.call_id}:session.created",
        dedupe_ttl=60,
        browser_event={"type": "session.created"},
        log_ttl=60,
    )


async def test_publish_new_call_keeps_the_call_and_queues_its_event(store: Store) -> None:
    subscription = store.subscribe("call_n")
    await subscription.start()
    assert await publish_new(store, new_call("call_n")) is not None
    assert await store.get_context("call_n") == {"agent": "sales", "slot_id": "s1"}
    assert await store.media_of("call_n") == MEDIA
    assert await store.deadlines_due(100.0) == ["call_n"]
    assert [e for _, e in await store.outbox_take("w", 10, block=0.1, reclaim_after=60)] == [
        {"event": "session.created"}
    ]
    logged = await store.events_after("call_n", None)
    assert numbered(logged) == [(1, {"type": "session.created"})]
    assert await asyncio.wait_for(subscription.get(), 2) == logged[0]
    await subscription.close()


async def test_publish_new_call_keeps_the_call_even_when_its_event_is_a_duplicate(store: Store) -> None:
    assert await publish_new(store, new_call("call_d", deadline_at=50.0)) is not None
    assert await publish_new(store, new_call("call_d", deadline_at=70.0)) is None
    assert await store.outbox_depth() == 1
    assert numbered(await store.events_after("call_d", None)) == [(1, {"type": "session.created"})]
    assert await store.deadlines_due(60.0) == []  # the second call's deadline replaced the first
    assert await store.deadlines_due(100.0) == ["call_d"]
    assert await store.get_context("call_d") is not None and await store.media_of("call_d") is not None


async def test_outbox_ack_all_acknowledges_several_entries_at_once(store: Store) -> None:
    ids = [await store.outbox_add({"n": n}) for n in range(4)]
    assert None not in ids
    taken = await store.outbox_take("w", 10, block=0.1, reclaim_after=0.2)
    assert [i for i, _ in taken] == ids
    for entry_id, _ in taken:
        await store.mark_done(entry_id, "callback_a", ttl=60)
    await store.outbox_ack_all([taken[0][0], taken[2][0], taken[3][0]])
    await store.outbox_ack_all([])
    assert await store.outbox_depth() == 1
    assert [await store.done_parts(i) for i, _ in taken] == [set(), {"callback_a"}, set(), set()]
    await asyncio.sleep(0.25)  # only the entry left unacknowledged is ever handed out again
    assert [i for i, _ in await store.outbox_take("w2", 10, block=0.05, reclaim_after=0.2)] == [taken[1][0]]


async def test_a_log_made_again_numbers_its_events_under_a_new_epoch(store: Store) -> None:
    """A call's log that expired (or that a store lost) starts again at 1, under ids no reader has seen."""
    await store.publish_event(
        {}, dedupe_key="e:1", dedupe_ttl=60, call_id="call_e", browser_event={"type": "a"}, log_ttl=0.2
    )
    [(old, _)] = await store.events_after("call_e", None)
    await asyncio.sleep(0.3)
    await store.publish_event(
        {}, dedupe_key="e:2", dedupe_ttl=60, call_id="call_e", browser_event={"type": "b"}, log_ttl=60
    )
    [(new, event)] = await store.events_after("call_e", old)
    assert event == {"type": "b"} and new.seq == old.seq == 1 and new.epoch != old.epoch
    assert new.is_after(old) and str(new) != str(old) and EventId.parse(str(new)) == new


async def test_open_calls_are_taken_when_due_earliest_first_and_leased(store: Store) -> None:
    await store.watch_call("a", 100.0)
    await store.watch_call("b", 50.0)
    await store.watch_call("c", 300.0)
    await store.watch_call("a", 10.0)  # already open: it keeps its schedule
    assert sorted(await store.open_calls()) == ["a", "b", "c"]
    assert await store.calls_to_check(200.0, 10, lease_until=500.0) == ["b", "a"]
    assert await store.calls_to_check(200.0, 10, lease_until=500.0) == []  # leased to the first taker
    assert await store.calls_to_check(400.0, 10, lease_until=900.0) == ["c"]
    assert await store.calls_to_check(600.0, 1, lease_until=900.0) == ["a"]  # a lease that ran out; one at most
    assert await store.calls_to_check(600.0, 10, lease_until=900.0) == ["b"]


async def test_open_calls_are_looked_up_again_unless_closed(store: Store) -> None:
    await store.watch_call("a", 100.0)
    await store.watch_call("b", 100.0)
    assert await store.calls_to_check(100.0, 10, lease_until=1000.0) == ["a", "b"]
    await store.unwatch_call("b")
    await store.check_again(["a", "b"], 150.0)
    await store.check_again([], 150.0)
    assert await store.open_calls() == ["a"]
    assert await store.calls_to_check(200.0, 10, lease_until=1000.0) == ["a"]
    await store.unwatch_call("a")
    await store.unwatch_call("never-open")
    assert await store.open_calls() == []


async def test_the_generation_stays_while_the_store_keeps_its_data(store: Store) -> None:
    first = await store.generation()
    assert first and await store.generation() == first
