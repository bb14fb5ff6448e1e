"""The deadline task: calls past their maximum length are ended once, in batches, through store outages; the
end-to-end hang-up at the maximum call length is in ``test_relay.py``."""

from __future__ import annotations

import asyncio

from webcall.deadlines import CallDeadlines
from webcall.errors import StoreUnavailable
from webcall.store import MemoryStore


class Ended:
    """The calls an ``end_call`` was asked to end, in order; fails for the ids in ``failing``."""

    def __init__(self, *failing: str) -> None:
        self.ids: list[str] = []
        self.failing = set(failing)

    async def __call__(self, call_id: str) -> None:
        self.ids.append(call_id)
        if call_id in self.failing:
            raise RuntimeError("DialNexa said no")


async def test_only_calls_past_their_deadline_are_ended_and_each_once() -> None:
    store = MemoryStore()
    await store.deadline_set("due", 100.0)
    await store.deadline_set("later", 200.0)
    await store.deadline_set("cleared", 50.0)
    await store.deadline_clear("cleared")
    ended = Ended()
    deadlines = CallDeadlines(store, ended, clock=lambda: 150.0)
    assert await deadlines.end_due_calls() == 1
    assert await deadlines.end_due_calls() == 0
    assert ended.ids == ["due"]


async def test_a_call_that_fails_to_end_does_not_stop_the_others() -> None:
    store = MemoryStore()
    for number in range(3):
        await store.deadline_set(f"call_{number}", float(number))
    ended = Ended("call_0")
    assert await CallDeadlines(store, ended, clock=lambda: 10.0).end_due_calls() == 3
    assert ended.ids == ["call_0", "call_1", "call_2"]


async def test_a_full_batch_is_followed_by_another_look_at_once() -> None:
    store = MemoryStore()
    for number in range(5):
        await store.deadline_set(f"call_{number}", float(number))
    pauses: list[float] = []
    ended = Ended()
    looked = asyncio.Event()

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(ended.ids) == 5:
            looked.set()
        await asyncio.sleep(0)

    deadlines = CallDeadlines(store, ended, batch=2, every=0.5, clock=lambda: 10.0, sleep=sleep)
    deadlines.start()
    try:
        await asyncio.wait_for(looked.wait(), 2)
    finally:
        await deadlines.stop()
    assert ended.ids == [f"call_{number}" for number in range(5)]
    assert pauses[:3] == [0, 0, 0.5]  # two full batches, then the last call and a normal pause


class UnreachableStore(MemoryStore):
    """A store whose deadline look-up fails until ``reachable`` is set."""

    reachable = False

    async def deadlines_due(self, now: float, limit: int = 50) -> list[str]:
        if not self.reachable:
            raise StoreUnavailable("Connection refused")
        return await super().deadlines_due(now, limit)


async def test_the_task_outlives_a_store_outage() -> None:
    store = UnreachableStore()
    await store.deadline_set("call_1", 1.0)
    ended = Ended()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        store.reachable = True
        await asyncio.sleep(0)

    deadlines = CallDeadlines(store, ended, clock=lambda: 10.0, sleep=sleep)
    deadlines.start()
    try:
        for _ in range(100):
            if ended.ids:
                break
            await asyncio.sleep(0)
    finally:
        await deadlines.stop()
    assert ended.ids == ["call_1"]
    assert pauses[0] == 1.0  # the store failed: a longer pause before the next look
