"""The state store interface: the few things several requests (and, with Redis, several workers) must share.

Implementations: :class:`webcall.store.memory.MemoryStore` (the default, one process). Every method is atomic with
respect to the others; times are seconds.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

_EVENT_ID = re.compile(r"([0-9a-z]{1,16})-([0-9]{1,18})")


class EventId(NamedTuple):
    """Where an event sits in its call's log, sent to browsers as ``<epoch>-<seq>``: ``seq`` counts the log's events
    from 1; ``epoch`` is made when the log is, so a log made again (the store lost its data: Redis restarted without
    persistence) numbers its events under a new epoch, and its ids never repeat ones a browser already has."""

    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> EventId | None:
        """The id a browser sent back (``Last-Event-ID``); None when it is not one."""
        found = _EVENT_ID.fullmatch(text)
        return cls(found.group(1), int(found.group(2))) if found else None

    def is_after(self, seen: EventId | None) -> bool:
        """Whether a reader that has every event up to ``seen`` lacks this one: ``seen`` is None (it has nothing),
        from another epoch (a log that no longer exists), or earlier in this one."""
        return seen is None or seen.epoch != self.epoch or self.seq > seen.seq


def new_epoch(now: float) -> str:
    """An epoch for a call's log made at ``now`` (microseconds, in hex): a log made again later gets another."""
    return f"{int(now * 1_000_000):x}"


Item = tuple[EventId, dict[str, Any]]
T = TypeVar("T")
RECLAIMED = "_reclaimed"
"""Set (True) by ``outbox_take`` on an entry taken over from another consumer. Only such an entry can have parts
already done (:meth:`Store.mark_done`), so the bus asks for :meth:`Store.done_parts` only when it is set."""


@dataclass(frozen=True, kw_only=True)
class NewCall:
    """What a call the plugin has just started keeps in the store besides its ``session.created`` event: the host
    context (for ``ttl`` seconds), the deadline at which the call is ended, and the media record (for ``media_ttl``
    seconds; see :meth:`Store.remember_media`)."""

    call_id: str
    context: dict[str, Any]
    ttl: float
    deadline_at: float
    media: dict[str, Any]
    media_ttl: float


class Mailbox(Generic[T]):
    """A bounded inbox for one reader: ``put`` never blocks (a full box drops its oldest item), ``get`` waits.

    Lighter than ``asyncio.Queue``: one of these lives for every open browser event stream.
    """

    __slots__ = ("_items", "_waiter", "closed")

    def __init__(self, size: int = 256) -> None:
        self._items: deque[T] = deque(maxlen=size)
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def put(self, item: T) -> None:
        if not self.closed:
            self._items.append(item)
            self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T | None:
        """The next item, or None once closed."""
        while not self.closed and not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return None if self.closed else self._items.popleft()


class EventFeed(ABC):
    """A live feed of one call's events (event id, event), as :meth:`Store.subscribe` opens one; close it when done."""

    async def start(self) -> None:  # noqa: B027 - nothing to do where subscribing is immediate
        """Begin receiving now (events published from here on are delivered); idempotent."""

    @abstractmethod
    async def get(self) -> Item | None:
        """The next event, or None once the subscription is closed."""

    async def __aiter__(self) -> AsyncIterator[Item]:
        await self.start()
        while (item := await self.get()) is not None:
            yield item

    @abstractmethod
    async def close(self) -> None: ...


class Store(ABC):
    @abstractmethod
    async def hit(self, key: str, limit: int, window: float) -> float | None:
        """Count one request against ``key``.

        Returns None while at most ``limit`` requests fell in the current ``window``, otherwise the seconds until
        the window frees up (for ``Retry-After``). A refused request is not counted.
        """

    @abstractmethod
    async def hit_all(self, limits: Sequence[tuple[str, int]], window: float) -> tuple[int, float] | None:
        """Count one request against every ``(key, limit)`` at once, or against none of them.

        Returns None when all allow it, otherwise ``(index of a refusing limit, seconds to wait)``."""

    async def hit_all_and_acquire(
        self, limits: Sequence[tuple[str, int]], window: float, slot_id: str, cap: int, ttl: float
    ) -> tuple[tuple[int, float] | None, bool]:
        """:meth:`hit_all`, then, when every limit allowed the request, :meth:`acquire_slot`: (what :meth:`hit_all`
        returned, whether the slot was taken). A refused request takes no slot. Stores may do both in one round trip
        (Redis: one script)."""
        refused = await self.hit_all(limits, window)
        if refused is not None:
            return refused, False
        return None, await self.acquire_slot(slot_id, cap, ttl)

    @abstractmethod
    async def uncount(self, key: str) -> None:
        """Take back one request counted against ``key`` in its current window (one that turned out to be refused
        for a reason of its own, which must not use up a limit that protects everyone)."""

    @abstractmethod
    async def acquire_slot(self, slot_id: str, cap: int, ttl: float) -> bool:
        """Take one of ``cap`` concurrent-call slots for ``ttl`` seconds (a lease); False when all are taken."""

    @abstractmethod
    async def release_slot(self, slot_id: str) -> bool:
        """Give a slot back; False when it was not held (already released or expired)."""

    @abstractmethod
    async def active_slots(self) -> int:
        """How many slots are held now."""

    @abstractmethod
    async def put_context(self, call_id: str, context: dict[str, Any], ttl: float) -> None:
        """Keep the host context of a call (JSON-compatible) for ``ttl`` seconds."""

    async def remember_call(self, call_id: str, context: dict[str, Any], ttl: float, deadline_at: float) -> None:
        """Keep a new call's context and its end deadline (stores may do both in one round trip)."""
        await self.put_context(call_id, context, ttl)
        await self.deadline_set(call_id, deadline_at)

    @abstractmethod
    async def get_context(self, call_id: str) -> dict[str, Any] | None:
        """The context stored for ``call_id``, or None once unknown or expired."""

    async def remember_media(self, call_id: str, media: dict[str, Any], ttl: float) -> None:
        """Keep where a call's media lives at DialNexa (its WHIP resource URL, access token and ETag). Server-side
        only: it is stored apart from the host context, which events carry to host code and browsers."""
        await self.put_context(f"media:{call_id}", media, ttl)

    async def media_of(self, call_id: str) -> dict[str, Any] | None:
        """What :meth:`remember_media` kept for ``call_id``; None once unknown or expired."""
        return await self.get_context(f"media:{call_id}")

    @abstractmethod
    async def use_once(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is used within ``ttl`` seconds, False on every later use (single-use ids)."""

    @abstractmethod
    async def forget_once(self, key: str) -> None:
        """Make ``key`` usable again (:meth:`use_once` answers True once more): a reservation given back."""

    # -- outbox: events waiting for the host's callbacks (at-least-once, shared by all workers) -------------------
    @abstractmethod
    async def outbox_add(
        self, entry: dict[str, Any], *, dedupe_key: str | None = None, dedupe_ttl: float = 0
    ) -> str | None:
        """Append an entry and return its id; with ``dedupe_key``, atomically do nothing (return None) when that
        key was already used within ``dedupe_ttl`` seconds. Durable as far as the store is (memory: the process)."""

    @abstractmethod
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
        """Atomically: unless ``dedupe_key`` was seen, add ``entry`` to the outbox and ``browser_event`` to the
        call's log (published to its subscribers). Returns the outbox id, or None for a duplicate. One step, so a
        failure can never leave an event deduplicated but missing from either place."""

    async def publish_new_call(
        self,
        call: NewCall,
        entry: dict[str, Any],
        *,
        dedupe_key: str,
        dedupe_ttl: float,
        browser_event: dict[str, Any],
        log_ttl: float,
    ) -> str | None:
        """Everything a newly started call writes: :meth:`remember_call` and :meth:`remember_media` for ``call``, and
        :meth:`publish_event` for its event (whose result this returns). The call's records are kept even when the
        event is a duplicate. Stores may do it all in one round trip (Redis: one script)."""
        _, _, entry_id = await asyncio.gather(
            self.remember_call(call.call_id, call.context, call.ttl, call.deadline_at),
            self.remember_media(call.call_id, call.media, call.media_ttl),
            self.publish_event(
                entry,
                dedupe_key=dedupe_key,
                dedupe_ttl=dedupe_ttl,
                call_id=call.call_id,
                browser_event=browser_event,
                log_ttl=log_ttl,
            ),
        )
        return entry_id

    @abstractmethod
    async def outbox_take(
        self, consumer: str, count: int, *, block: float, reclaim_after: float
    ) -> list[tuple[str, dict[str, Any]]]:
        """Entries for ``consumer``: new ones, and ones another consumer took over ``reclaim_after`` seconds ago
        without acknowledging them (it died). Waits up to ``block`` seconds when there are none."""

    @abstractmethod
    async def outbox_ack(self, entry_id: str) -> None:
        """The entry is fully handled; it leaves the outbox."""

    async def outbox_ack_all(self, entry_ids: Sequence[str]) -> None:
        """:meth:`outbox_ack` for several entries (stores may do it in one round trip)."""
        for entry_id in entry_ids:
            await self.outbox_ack(entry_id)

    @abstractmethod
    async def outbox_depth(self) -> int:
        """Entries not yet acknowledged."""

    @abstractmethod
    async def mark_done(self, entry_id: str, part: str, ttl: float) -> None:
        """Remember that ``part`` of an entry (one callback) succeeded, so a reclaimed entry skips it."""

    @abstractmethod
    async def done_parts(self, entry_id: str) -> set[str]:
        """The parts of an entry already done."""

    # -- dead letters ------------------------------------------------------------------------------------------
    @abstractmethod
    async def dead_add(self, letter: dict[str, Any]) -> str:
        """Keep a callback delivery that kept failing; returns its id."""

    @abstractmethod
    async def dead_list(self) -> list[tuple[str, dict[str, Any]]]:
        """Every dead letter, oldest first."""

    @abstractmethod
    async def dead_count(self) -> int:
        """How many dead letters there are, without reading them (the metrics gauge)."""

    @abstractmethod
    async def dead_take(self, letter_id: str) -> dict[str, Any] | None:
        """Remove and return one dead letter (for replay); None when unknown."""

    # -- per-call event log and fan-out to browsers -------------------------------------------------------------
    @abstractmethod
    async def events_after(self, call_id: str, seen: EventId | None) -> list[Item]:
        """Logged events of the call that a reader who has every event up to ``seen`` lacks (for ``Last-Event-ID``
        replay): all of them when ``seen`` is None or of another epoch (:meth:`EventId.is_after`)."""

    @abstractmethod
    def subscribe(self, call_id: str) -> EventFeed:
        """Live events of one call, from any worker."""

    # -- call deadlines (the plugin's maximum call length) ------------------------------------------------------
    @abstractmethod
    async def deadline_set(self, call_id: str, at: float) -> None:
        """End ``call_id`` at wall-clock time ``at`` unless cleared first."""

    @abstractmethod
    async def deadline_clear(self, call_id: str) -> None: ...

    @abstractmethod
    async def deadlines_due(self, now: float, limit: int = 50) -> list[str]:
        """Take (atomically, once across workers) the calls whose deadline has passed."""

    # -- open calls: the calls the plugin started and has not seen end, looked up at DialNexa by reconciliation ------
    @abstractmethod
    async def watch_call(self, call_id: str, check_at: float) -> None:
        """Count ``call_id`` as open, to be looked up first at wall-clock time ``check_at``; a call already open keeps
        its schedule."""

    @abstractmethod
    async def unwatch_call(self, call_id: str) -> None:
        """The call's end is known: it is no longer open."""

    @abstractmethod
    async def open_calls(self) -> list[str]:
        """Every open call."""

    @abstractmethod
    async def calls_to_check(self, due_by: float, limit: int, lease_until: float) -> list[str]:
        """Take (atomically, once across workers) up to ``limit`` open calls due to be looked up by ``due_by``,
        earliest first, and lease them until ``lease_until``: no other taker gets them before then (nor the same one,
        should it die: then they come back when the lease runs out)."""

    @abstractmethod
    async def check_again(self, call_ids: Sequence[str], at: float) -> None:
        """Look the calls up again at ``at``; those no longer open stay closed."""

    @abstractmethod
    async def generation(self) -> str:
        """An id of the store's data: the same until the store loses everything it held (Redis restarted without
        persistence), a new one from then on."""

    async def ping(self) -> None:  # noqa: B027 - optional hook, nothing to check in memory
        """Raise :class:`webcall.errors.StoreUnavailable` when the store cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is not used afterwards."""
