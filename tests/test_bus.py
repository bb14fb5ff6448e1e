"""Host callbacks run from the outbox: isolated, timed out, retried, dead-lettered, replayable, at least once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from webcall.bus import CallbackList, EventBus
from webcall.errors import StoreUnavailable
from webcall.events import CallEvent
from webcall.store import MemoryStore


def event(call_id: str, kind: str = "call.ended") -> CallEvent:
    return CallEvent(
        id=f"{call_id}:{kind}",
        type=kind,
        call_id=call_id,
        time="2026-11-24T00:00:00Z",
        call={"id": call_id},
        context={"agent": "sales"},
    )


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def make_bus(callbacks: CallbackList, **kw: float) -> EventBus:
    bus = EventBus(
        MemoryStore(),
        callbacks,
        sleep=no_sleep,
        callback_timeout=kw.get("timeout", 1.0),
        attempts=int(kw.get("attempts", 3)),
        backoff=0.01,
    )
    bus.start()
    return bus


async def test_failing_callback_does_not_stop_the_others_and_is_retried() -> None:
    callbacks = CallbackList()
    good: list[str] = []
    calls = {"flaky": 0}

    def broken(e: CallEvent) -> None:
        raise RuntimeError("always")

    async def flaky(e: CallEvent) -> None:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("transient")

    callbacks.append(broken)
    callbacks.append(flaky)
    callbacks.append(lambda e: good.append(e.call_id))
    bus = make_bus(callbacks, attempts=3)
    try:
        assert await bus.publish(event("call_1"))
        await bus.drain()
        assert good == ["call_1"] and calls["flaky"] == 3
        letters = await bus.dead_letters()
        assert [(d.callback.rsplit(".", 1)[-1], d.attempts) for d in letters] == [("broken", 3)]
        assert "RuntimeError: always" in letters[0].error and letters[0].event.call_id == "call_1"
    finally:
        await bus.stop()


async def test_timeout_counts_as_failure() -> None:
    callbacks = CallbackList()

    async def slow(e: CallEvent) -> None:
        await asyncio.sleep(5)

    callbacks.append(slow)
    bus = make_bus(callbacks, attempts=2, timeout=0.05)
    try:
        await bus.publish(event("call_1"))
        await bus.drain()
        (letter,) = await bus.dead_letters()
        assert "timed out" in letter.error
    finally:
        await bus.stop()


async def test_replay_delivers_to_the_failed_callback_only() -> None:
    callbacks = CallbackList()
    healthy: list[str] = []
    state = {"fail": True, "seen": 0}

    def sometimes(e: CallEvent) -> None:
        state["seen"] += 1
        if state["fail"]:
            raise RuntimeError("down")

    callbacks.append(sometimes)
    callbacks.append(lambda e: healthy.append(e.id))
    bus = make_bus(callbacks, attempts=2)
    try:
        await bus.publish(event("call_1"))
        await bus.drain()
        (letter,) = await bus.dead_letters()
        state["fail"] = False
        assert await bus.replay(letter.id)
        assert not await bus.replay(letter.id)
        await bus.drain()
        assert state["seen"] == 3 and healthy == ["call_1:call.ended"]
        assert await bus.dead_letters() == []
    finally:
        await bus.stop()


async def test_duplicates_are_dropped_and_filters_apply() -> None:
    callbacks = CallbackList()
    ended: list[str] = []
    everything: list[str] = []
    callbacks.on("call.ended")(lambda e: ended.append(e.call_id))
    callbacks.on()(lambda e: everything.append(e.type))
    bus = make_bus(callbacks)
    try:
        assert await bus.publish(event("call_1"))
        assert not await bus.publish(event("call_1"))
        assert await bus.publish(event("call_1", "call.started"))
        await bus.drain()
        assert ended == ["call_1"] and sorted(everything) == ["call.ended", "call.started"]
    finally:
        await bus.stop()


async def test_entry_of_a_dead_worker_is_reclaimed_without_repeating_done_callbacks() -> None:
    store = MemoryStore()
    done: list[str] = []
    callbacks = CallbackList()
    callbacks.append(lambda e: done.append("a"))
    callbacks.append(lambda e: done.append("b"))
    entry_id = await store.outbox_add({"event": event("call_1").to_json()})
    assert entry_id is not None
    # A first worker took the entry, ran callback "a", then died before finishing.
    taken = await store.outbox_take("dead-worker", 10, block=0, reclaim_after=60)
    assert [i for i, _ in taken] == [entry_id]
    first = next(iter(callbacks.for_event(event("call_1"))))[0]
    await store.mark_done(entry_id, first, ttl=60)
    bus = EventBus(store, callbacks, sleep=no_sleep)
    bus.reclaim_after = 0.05
    bus.start()
    try:
        await asyncio.sleep(0.1)
        await bus.drain()
        assert done == ["b"]
    finally:
        await bus.stop()


async def test_a_finished_part_is_recorded_while_another_is_still_running() -> None:
    """With several callbacks, each one that succeeds is marked done at once, so a worker that dies while another is
    still retrying leaves an entry whose finished parts are not run again."""
    store = MemoryStore()
    release = asyncio.Event()
    callbacks = CallbackList()

    def quick(e: CallEvent) -> None: ...

    async def slow(e: CallEvent) -> None:
        await release.wait()

    callbacks.append(quick)
    callbacks.append(slow)
    (quick_name, _), _ = callbacks.for_event(event("call_1"))
    bus = EventBus(store, callbacks, sleep=no_sleep, callback_timeout=5.0)
    bus.start()
    try:
        assert await bus.publish(event("call_1"))
        [(entry_id, _)] = await asyncio.wait_for(_pending_entry(store), 2)
        for _ in range(200):
            if await store.done_parts(entry_id):
                break
            await asyncio.sleep(0.01)
        assert await store.done_parts(entry_id) == {quick_name}
        release.set()
        await bus.drain()
    finally:
        await bus.stop()


async def _pending_entry(store: MemoryStore) -> list[tuple[str, dict[str, object]]]:
    """The entry the bus is working on, as another worker would see it once it is abandoned (reclaim_after=0)."""
    while True:
        taken = await store.outbox_take("observer", 1, block=0.01, reclaim_after=0)
        if taken:
            return taken


async def test_an_entry_with_one_callback_writes_no_done_mark() -> None:
    """One part has nothing to protect from a retry: its success is the acknowledgement, one store write fewer."""
    store = MemoryStore()
    marks: list[str] = []
    original = store.mark_done

    async def recording(entry_id: str, part: str, ttl: float) -> None:
        marks.append(part)
        await original(entry_id, part, ttl)

    store.mark_done = recording  # type: ignore[method-assign]
    callbacks = CallbackList()
    seen: list[str] = []
    callbacks.append(lambda e: seen.append(e.call_id))
    bus = EventBus(store, callbacks, sleep=no_sleep)
    bus.start()
    try:
        assert await bus.publish(event("call_1"))
        await bus.drain()
        assert seen == ["call_1"] and marks == []
    finally:
        await bus.stop()


def test_callback_names_are_unique() -> None:
    callbacks = CallbackList()

    def handler(e: CallEvent) -> None: ...

    callbacks.append(handler)
    callbacks.append(handler)
    names = [n for n, _ in callbacks.for_event(event("c"))]
    assert len(set(names)) == 2 and len(callbacks) == 2


class GatedAcks(MemoryStore):
    """A memory store whose acknowledgements are recorded, and held until ``release`` is set; the first ones fail
    while ``failures`` lasts."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.batches: list[list[str]] = []
        self.failures = failures

    async def outbox_ack_all(self, entry_ids: Sequence[str]) -> None:
        self.batches.append(list(entry_ids))
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("Redis is unreachable: ConnectionError")
        await super().outbox_ack_all(entry_ids)


async def test_entries_delivered_while_an_acknowledgement_is_on_its_way_are_acknowledged_together() -> None:
    store = GatedAcks()
    seen: list[str] = []
    all_seen = asyncio.Event()

    def record(e: CallEvent) -> None:
        seen.append(e.call_id)
        if len(seen) == 4:
            all_seen.set()

    callbacks = CallbackList()
    callbacks.append(record)
    bus = EventBus(store, callbacks, sleep=no_sleep)
    for n in range(4):
        assert await bus.publish(event(f"call_{n}"))
    bus.start()
    try:
        await asyncio.wait_for(all_seen.wait(), 2)
        await asyncio.sleep(0.01)  # each delivery has gone on to its acknowledgement
        assert len(store.batches) == 1  # the first acknowledgement is held; the three others wait for it
        store.release.set()
        await bus.drain()
        assert [len(batch) for batch in store.batches] == [1, 3]
        assert len({entry_id for batch in store.batches for entry_id in batch}) == 4
    finally:
        await bus.stop()


async def test_entries_whose_acknowledgement_failed_are_delivered_again() -> None:
    store = GatedAcks(failures=2)
    store.release.set()
    seen: list[str] = []
    callbacks = CallbackList()
    callbacks.append(lambda e: seen.append(e.call_id))
    bus = EventBus(store, callbacks, sleep=no_sleep)
    bus.reclaim_after = 0.05
    for n in range(3):
        assert await bus.publish(event(f"call_{n}"))
    bus.start()
    try:
        await asyncio.sleep(0.1)
        await bus.drain()
        assert sorted(set(seen)) == ["call_0", "call_1", "call_2"] and len(seen) > 3
        assert await store.outbox_depth() == 0
    finally:
        await bus.stop()


class CountedTakes(MemoryStore):
    """Records how many entries each non-empty take of the outbox returned."""

    def __init__(self) -> None:
        super().__init__()
        self.takes: list[int] = []

    async def outbox_take(
        self, consumer: str, count: int, *, block: float, reclaim_after: float
    ) -> list[tuple[str, dict[str, object]]]:
        taken = await super().outbox_take(consumer, count, block=block, reclaim_after=reclaim_after)
        if taken:
            self.takes.append(len(taken))
        return taken


async def test_an_idle_dispatcher_delivers_at_once_and_a_busy_one_takes_what_arrived_meanwhile_together() -> None:
    store = CountedTakes()
    delivered: list[str] = []
    first = asyncio.Event()

    def record(e: CallEvent) -> None:
        delivered.append(e.call_id)
        first.set()

    callbacks = CallbackList()
    callbacks.append(record)
    bus = EventBus(store, callbacks, sleep=no_sleep, gather_seconds=2.0)
    bus.start()
    try:
        await asyncio.sleep(0.05)  # the dispatcher waits on an empty outbox
        assert await bus.publish(event("call_0"))
        await asyncio.wait_for(first.wait(), 1.0)  # well before the gathering pause would have ended
        for n in range(1, 6):  # one at a time, each while the dispatcher gathers
            assert await bus.publish(event(f"call_{n}"))
            await asyncio.sleep(0.01)
        await bus.drain()
        assert delivered == [f"call_{n}" for n in range(6)]
        assert store.takes == [1, 5]
    finally:
        await bus.stop()


class SwallowsCancellation(MemoryStore):
    """A store client that, like redis-py reconnecting to a Redis that is down, swallows a cancellation once."""

    def __init__(self) -> None:
        super().__init__()
        self.swallowed = 0

    async def outbox_take(
        self, consumer: str, count: int, *, block: float, reclaim_after: float
    ) -> list[tuple[str, dict[str, object]]]:
        try:
            return await super().outbox_take(consumer, count, block=block, reclaim_after=reclaim_after)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
            raise StoreUnavailable("Redis is unreachable: ConnectionError") from None


async def test_the_dispatcher_stops_even_when_the_store_swallows_its_cancellation() -> None:
    store = SwallowsCancellation()
    bus = EventBus(store, CallbackList(), sleep=no_sleep)
    bus.start()
    await asyncio.sleep(0.05)  # the dispatcher waits on the empty outbox
    await asyncio.wait_for(bus.stop(), 3.0)
    assert store.swallowed == 1
