"""In-process store: the default for a single worker. State is lost when the process exits."""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .base import RECLAIMED, EventFeed, EventId, Item, Mailbox, Store, new_epoch

_SWEEP_EVERY = 1024


class _MemoryEventFeed(EventFeed):
    def __init__(self, subscribers: dict[str, set[Mailbox[Item]]], call_id: str) -> None:
        self._subscribers = subscribers
        self._call_id = call_id
        self._box: Mailbox[Item] = Mailbox()
        subscribers.setdefault(call_id, set()).add(self._box)

    async def get(self) -> Item | None:
        return await self._box.get()

    async def close(self) -> None:
        self._box.close()
        boxes = self._subscribers.get(self._call_id)
        if boxes is not None:
            boxes.discard(self._box)
            if not boxes:
                del self._subscribers[self._call_id]


class MemoryStore(Store):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}
        self._slots: dict[str, float] = {}
        self._slot_heap: list[tuple[float, str]] = []  # (expiry, slot id); stale entries are skipped
        self._contexts: dict[str, tuple[float, dict[str, Any]]] = {}
        self._once: dict[str, float] = {}
        self._ops = 0
        self._ids = itertools.count(1)
        self._outbox: dict[str, dict[str, Any]] = {}
        self._fresh: deque[str] = deque()
        self._taken: dict[str, tuple[str, float]] = {}
        self._wakeup = asyncio.Event()
        self._done: dict[str, set[str]] = {}
        self._dead: dict[str, dict[str, Any]] = {}
        self._logs: dict[str, tuple[float, str, list[Item]]] = {}  # call id -> (expiry, epoch, events)
        self._subscribers: dict[str, set[Mailbox[Item]]] = {}
        self._deadlines: dict[str, float] = {}  # call id -> when it must end
        self._deadline_queue: list[tuple[float, str]] = []  # a heap; entries whose deadline changed are skipped
        self._open: dict[str, float] = {}  # open call id -> when to look it up at DialNexa next
        self._generation = secrets.token_hex(8)

    def _tick(self) -> float:
        now = self._clock()
        self._ops += 1
        if self._ops % _SWEEP_EVERY == 0:
            self._sweep(now)
        return now

    def _sweep(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        self._expire_slots(now)
        self._contexts = {k: v for k, v in self._contexts.items() if v[0] > now}
        self._once = {k: v for k, v in self._once.items() if v > now}
        self._logs = {k: v for k, v in self._logs.items() if v[0] > now}

    async def hit(self, key: str, limit: int, window: float) -> float | None:
        now = self._tick()
        ends, count = self._windows.get(key, (0.0, 0))
        if ends <= now:
            ends, count = now + window, 0
        if count >= limit:
            return max(ends - now, 0.001)
        self._windows[key] = (ends, count + 1)
        return None

    async def hit_all(self, limits: Sequence[tuple[str, int]], window: float) -> tuple[int, float] | None:
        now = self._tick()
        current = []
        for index, (key, limit) in enumerate(limits):
            ends, count = self._windows.get(key, (0.0, 0))
            if ends <= now:
                ends, count = now + window, 0
            if count >= limit:
                return index, max(ends - now, 0.001)
            current.append((key, ends, count))
        for key, ends, count in current:
            self._windows[key] = (ends, count + 1)
        return None

    async def uncount(self, key: str) -> None:
        now = self._tick()
        ends, count = self._windows.get(key, (0.0, 0))
        if ends > now and count > 0:
            self._windows[key] = (ends, count - 1)

    async def acquire_slot(self, slot_id: str, cap: int, ttl: float) -> bool:
        now = self._tick()
        self._expire_slots(now)
        if slot_id not in self._slots and len(self._slots) >= cap:
            return False
        self._slots[slot_id] = now + ttl
        heapq.heappush(self._slot_heap, (now + ttl, slot_id))
        return True

    async def release_slot(self, slot_id: str) -> bool:
        now = self._tick()
        expires = self._slots.pop(slot_id, None)
        return expires is not None and expires > now

    async def active_slots(self) -> int:
        self._expire_slots(self._tick())
        return len(self._slots)

    def _expire_slots(self, now: float) -> None:
        """Drop expired leases in O(expired log n), not by scanning every slot."""
        heap = self._slot_heap
        while heap and heap[0][0] <= now:
            expires, slot_id = heapq.heappop(heap)
            if self._slots.get(slot_id) == expires:
                del self._slots[slot_id]
        if len(heap) > 2 * len(self._slots) + 64:  # released slots leave stale entries behind
            self._slot_heap = [(v, k) for k, v in self._slots.items()]
            heapq.heapify(self._slot_heap)

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

    async def forget_once(self, key: str) -> None:
        self._tick()
        self._once.pop(key, None)

    # -- outbox ----------------------------------------------------------------------------------------------------
    async def outbox_add(
        self, entry: dict[str, Any], *, dedupe_key: str | None = None, dedupe_ttl: float = 0
    ) -> str | None:
        if dedupe_key is not None and not await self.use_once(dedupe_key, dedupe_ttl):
            return None
        entry_id = f"{int(time.time() * 1000)}-{next(self._ids)}"
        self._outbox[entry_id] = copy.deepcopy(entry)
        self._fresh.append(entry_id)
        self._wakeup.set()
        return entry_id

    async def publish_event(
        self,
        entry: dict[str, Any],
        *,
        dedupe_key: str,
        dedupe_ttl: float,
        call_id: str,
        browser_event: dict[str, Any],
        log_ttl: float,
    ) -> str | None:
        # Copy before marking anything, so a body that cannot be stored leaves no trace (nothing deduplicated).
        entry, browser_event = copy.deepcopy(entry), copy.deepcopy(browser_event)
        entry_id = await self.outbox_add(entry, dedupe_key=dedupe_key, dedupe_ttl=dedupe_ttl)
        if entry_id is not None:
            self._log_event(call_id, browser_event, log_ttl)
        return entry_id

    async def outbox_take(
        self, consumer: str, count: int, *, block: float, reclaim_after: float
    ) -> list[tuple[str, dict[str, Any]]]:
        deadline = self._clock() + block
        while True:
            now = self._tick()
            chosen: list[str] = []
            for entry_id, (_owner, taken_at) in list(self._taken.items()):
                if len(chosen) >= count:
                    break
                if now - taken_at >= reclaim_after:  # its consumer died or gave up: like XAUTOCLAIM
                    chosen.append(entry_id)
            reclaimed = set(chosen)
            while self._fresh and len(chosen) < count:
                chosen.append(self._fresh.popleft())
            if chosen:
                taken = []
                for entry_id in chosen:
                    self._taken[entry_id] = (consumer, now)
                    if entry_id in self._outbox:
                        entry = copy.deepcopy(self._outbox[entry_id])
                        if entry_id in reclaimed:
                            entry[RECLAIMED] = True
                        taken.append((entry_id, entry))
                return taken
            remaining = deadline - self._clock()
            if remaining <= 0:
                return []
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except TimeoutError:
                return []

    async def outbox_ack(self, entry_id: str) -> None:
        self._outbox.pop(entry_id, None)
        self._taken.pop(entry_id, None)
        self._done.pop(entry_id, None)

    async def outbox_depth(self) -> int:
        return len(self._outbox)

    async def mark_done(self, entry_id: str, part: str, ttl: float) -> None:
        self._done.setdefault(entry_id, set()).add(part)

    async def done_parts(self, entry_id: str) -> set[str]:
        return set(self._done.get(entry_id, set()))

    # -- dead letters ----------------------------------------------------------------------------------------------
    async def dead_add(self, letter: dict[str, Any]) -> str:
        letter_id = f"dl-{int(time.time() * 1000)}-{next(self._ids)}"
        self._dead[letter_id] = copy.deepcopy(letter)
        return letter_id

    async def dead_list(self) -> list[tuple[str, dict[str, Any]]]:
        return [(k, copy.deepcopy(v)) for k, v in self._dead.items()]

    async def dead_count(self) -> int:
        return len(self._dead)

    async def dead_take(self, letter_id: str) -> dict[str, Any] | None:
        return self._dead.pop(letter_id, None)

    # -- event log and fan-out -------------------------------------------------------------------------------------
    def _log_event(self, call_id: str, event: dict[str, Any], ttl: float) -> EventId:
        """Append to the call's log (a new log, with a new epoch, when it has none or it expired) and hand it to the
        call's subscribers; part of :meth:`publish_event`."""
        now = self._tick()
        expires, epoch, entries = self._logs.get(call_id, (0.0, "", []))
        if expires <= now:
            epoch, entries = new_epoch(time.time()), []
        event_id = EventId(epoch, len(entries) + 1)
        entries.append((event_id, copy.deepcopy(event)))
        self._logs[call_id] = (now + ttl, epoch, entries)
        for box in list(self._subscribers.get(call_id, ())):
            box.put((event_id, copy.deepcopy(event)))  # a stalled reader loses its oldest event; never blocks
        return event_id

    async def events_after(self, call_id: str, seen: EventId | None) -> list[Item]:
        now = self._tick()
        expires, _, entries = self._logs.get(call_id, (0.0, "", []))
        if expires <= now:
            return []
        return [(event_id, copy.deepcopy(e)) for event_id, e in entries if event_id.is_after(seen)]

    def subscribe(self, call_id: str) -> EventFeed:
        return _MemoryEventFeed(self._subscribers, call_id)

    # -- deadlines -------------------------------------------------------------------------------------------------
    async def deadline_set(self, call_id: str, at: float) -> None:
        self._deadlines[call_id] = at
        heapq.heappush(self._deadline_queue, (at, call_id))

    async def deadline_clear(self, call_id: str) -> None:
        self._deadlines.pop(call_id, None)

    async def deadlines_due(self, now: float, limit: int = 50) -> list[str]:
        """Earliest first, without scanning every live call: the heap holds each deadline ever set, and one that was
        cleared or moved since is dropped when it comes up."""
        due: list[str] = []
        queue = self._deadline_queue
        while queue and queue[0][0] <= now and len(due) < limit:
            at, call_id = heapq.heappop(queue)
            if self._deadlines.get(call_id) == at:
                del self._deadlines[call_id]
                due.append(call_id)
        return due

    # -- open calls ------------------------------------------------------------------------------------------------
    async def watch_call(self, call_id: str, check_at: float) -> None:
        self._open.setdefault(call_id, check_at)

    async def unwatch_call(self, call_id: str) -> None:
        self._open.pop(call_id, None)

    async def open_calls(self) -> list[str]:
        return list(self._open)

    async def calls_to_check(self, due_by: float, limit: int, lease_until: float) -> list[str]:
        due = heapq.nsmallest(limit, ((at, call_id) for call_id, at in self._open.items() if at <= due_by))
        for _, call_id in due:
            self._open[call_id] = lease_until
        return [call_id for _, call_id in due]

    async def check_again(self, call_ids: Sequence[str], at: float) -> None:
        for call_id in call_ids:
            if call_id in self._open:
                self._open[call_id] = at

    async def generation(self) -> str:
        return self._generation
