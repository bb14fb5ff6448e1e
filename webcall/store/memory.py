"""In-process store: the default for a single worker. State is lost when the process exits."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from .base import Store

_SWEEP_EVERY = 1024


class MemoryStore(Store):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._slots: dict[str, float] = {}
        self._contexts: dict[str, tuple[float, dict[str, Any]]] = {}
        self._once: dict[str, float] = {}
        self._ops = 0

    def _tick(self) -> float:
        now = self._clock()
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        self._slots = {k: v for k, v in self._slots.items() if v > now}
        self._contexts = {k: v for k, v in self._contexts.items() if v[0] > now}
        self._once = {k: v for k, v in self._once.items() if v > now}

    async def hit(self, key: str, limit: int, window: float) -> float | None:
        now = self._tick()
        ends, count = self._windows.get(key, (0.0, 0))
        if ends <= now:
            ends, count = now + window, 0
        if count >= limit:
            return max(ends - now, 0.001)
        self._windows[key] = (ends, count + 1)
        return None

    async def acquire_slot(self, slot_id: str, cap: int, ttl: float) -> bool:
        now = self._tick()
        self._slots = {k: v for k, v in self._slots.items() if v > now}
        if slot_id not in self._slots and len(self._slots) >= cap:
            return False
        self._slots[slot_id] = now + ttl
        return True

    async def release_slot(self, slot_id: str) -> bool:
        now = self._tick()
        expires = self._slots.pop(slot_id, None)
        return expires is not None and expires > now

    async def active_slots(self) -> int:
        now = self._tick()
        return sum(1 for v in self._slots.values() if v > now)

    async def put_context(self, call_id: str, context: dict[str, Any], ttl: float) -> None:
        self._contexts[call_id] = (self._tick() + ttl, copy.deepcopy(context))

    async def get_context(self, call_id: str) -> dict[str, Any] | None:
        now = self._tick()
        entry = self._contexts.get(call_id)
        if entry is None or entry[0] <= now:
            return None
        return copy.deepcopy(entry[1])

    async def use_once(self, key: str, ttl: float) -> bool:
        now = self._tick()
        expires = self._once.get(key)
        if expires is not None and expires > now:
            return False
        self._once[key] = now + ttl
        return True
