"""The memory store's contract, with an injected clock."""

from __future__ import annotations

from typing import Any

from webcall.store import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_rate_window_counts_and_frees() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    assert [await store.hit("k", 3, 10) for _ in range(3)] == [None, None, None]
    wait = await store.hit("k", 3, 10)
    assert wait is not None and 9.9 < wait <= 10
    clock.now += 4
    wait = await store.hit("k", 3, 10)
    assert wait is not None and 5.9 < wait <= 6
    clock.now += 6
    assert await store.hit("k", 3, 10) is None
    assert await store.hit("other", 3, 10) is None


async def test_slots_cap_release_and_lease_expiry() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    assert await store.acquire_slot("a", 2, 30)
    assert await store.acquire_slot("b", 2, 60)
    assert not await store.acquire_slot("c", 2, 30)
    assert await store.active_slots() == 2
    assert await store.release_slot("a")
    assert not await store.release_slot("a")
    assert await store.acquire_slot("c", 2, 30)
    clock.now += 61  # leases expire: a crashed caller never leaks capacity
    assert await store.active_slots() == 0
    assert await store.acquire_slot("d", 2, 30)


async def test_context_is_copied_and_expires() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    ctx: dict[str, Any] = {"agent": "sales", "variables": {"name": "Priya"}}
    await store.put_context("call_1", ctx, ttl=5)
    ctx["variables"]["name"] = "changed"
    got = await store.get_context("call_1")
    assert got == {"agent": "sales", "variables": {"name": "Priya"}}
    clock.now += 6
    assert await store.get_context("call_1") is None


async def test_use_once() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    assert await store.use_once("jti", 10)
    assert not await store.use_once("jti", 10)
    clock.now += 11
    assert await store.use_once("jti", 10)
