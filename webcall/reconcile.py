"""Reconciliation: no call's outcome depends on one webhook.

DialNexa says a call ended with one webhook, retried a few times within seconds. A delivery that meets the store
down (Redis restarting or unreachable: the plugin answers 503) or that DialNexa loses would leave the host without
the call's outcome, the browser's event stream open and a concurrent-call slot taken. So the plugin also asks.

Every call it starts is *open* until its end is known: kept in the store (:meth:`Store.watch_call`, shared by every
worker) with the time of its next look-up. Each worker runs one :class:`Reconciler`, which takes the open calls that
are due (a lease in the store: one worker looks a call up at a time), asks DialNexa about them in one request per
200 (``GET /v1/calls?call_id=a,b,…``; ``GET /v1/calls/{id}`` for one the listing leaves out) and, for a call that
ended, makes the missing ``call.ended`` from DialNexa's record, marked ``source="reconciled"``. It goes the way a
webhook goes (:meth:`CallDesk.record_delivery`): the outbox, its dedupe (a late webhook and the reconciled event
are one event), host callbacks and browsers; the call's slot and deadline are freed.

DialNexa's pace: an open call is looked up first :data:`CHECK_SECONDS` (10) after it started, a grace in which its
webhook normally says how it went, then every :data:`CHECK_SECONDS`; a worker sends one request per 200 due calls a
round, a round every :data:`CHECK_SECONDS`. At start-up and as soon as the store answers again after an outage,
every open call is looked up at once, except one that started or was looked up less than a second ago: no call is
ever looked up more often than once a second.

A store that lost its data (Redis restarted without persistence) has forgotten the open calls too. Each worker keeps
in memory the open calls the store listed last and the records of the calls it started itself (:class:`OpenCalls`);
when the store's :meth:`Store.generation` changes, it writes them back (open calls, host contexts, deadlines, media
records) and looks them all up. A call that ended in the few seconds between the worker's last listing and the loss
may be announced twice then: delivery stays at least once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .background import BackgroundLoop
from .dialnexa.models import CallRecord
from .errors import DialNexaError, DialNexaNotFound, StoreUnavailable
from .events import RECONCILED
from .outage import store_outage
from .store import Store
from .store.base import NewCall

if TYPE_CHECKING:
    from .calls import CallDesk

log = logging.getLogger("webcall")

CHECK_SECONDS = 10.0
"""How long after its start an open call is first looked up (its webhook normally says first how it went), and how
often it is looked up again."""
MIN_CHECK_SECONDS = 1.0
"""DialNexa's floor: no call is looked up more often than this."""
PROBE_SECONDS = 1.0
"""How often a worker sees whether the store answers and still holds its data."""
LEASE_SECONDS = 30.0
"""How long the calls a worker took stay its own, well beyond what a look-up takes (a worker that died while looking
leaves them to the others after this; the round after an outage takes them when less than an interval is left)."""
PAGE_SIZE = 200
"""Calls per listing request (DialNexa's largest ``limit``)."""
LIVE_STATUSES = frozenset({"created", "initiated", "sent", "received"})
ENDED_STATUSES = frozenset({"completed", "did_not_pick", "busy", "no_answer", "failed", "cancelled", "retry_expired"})


def has_ended(record: CallRecord) -> bool:
    """Whether DialNexa's record says the call is over: an ended status or, statuses being an open set, one that is
    not known to be live with an end reason."""
    if record.status in ENDED_STATUSES:
        return True
    return record.status not in LIVE_STATUSES and record.end_reason is not None


@dataclass(frozen=True)
class _Started:
    """A call this worker started: what it wrote to the store (None for a call-back), and when (monotonic)."""

    call: NewCall | None
    at: float


class OpenCalls:
    """The calls the plugin started and has not seen end: in the store, and what this worker knows of them."""

    def __init__(
        self, store: Store, *, interval: float = CHECK_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.interval = interval
        self._clock = clock
        self._started: dict[str, _Started] = {}
        self._listed: set[str] = set()
        """Every open call as the store listed them last (other workers' too)."""
        self._releases: set[str] = set()
        """Slots to give back once the store answers again."""

    @property
    def interval(self) -> float:
        """Seconds from a call's start to its first look-up, and between two look-ups."""
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        if seconds < MIN_CHECK_SECONDS:
            raise ValueError(f"open calls are looked up at most once every {MIN_CHECK_SECONDS:g} s")
        self._interval = seconds

    async def add(self, call_id: str, call: NewCall | None = None) -> None:
        """A call has started (``call``: what the store keeps of a web call, written back should it lose it)."""
        await self.store.watch_call(call_id, self._clock() + self.interval)
        self._started[call_id] = _Started(call, time.monotonic())  # after the write: see listed()

    async def remove(self, call_id: str) -> None:
        """The call's end is known."""
        self._started.pop(call_id, None)
        self._listed.discard(call_id)
        await self.store.unwatch_call(call_id)

    def release_later(self, slot_id: str) -> None:
        """A slot that could not be given back (the store was down): given back by :meth:`settle`."""
        self._releases.add(slot_id)

    async def settle(self) -> None:
        """Give back the slots :meth:`release_later` kept (the store answers again)."""
        for slot_id in list(self._releases):
            await self.store.release_slot(slot_id)
            self._releases.discard(slot_id)

    def listed(self, call_ids: Sequence[str], asked_at: float) -> None:
        """What the store listed as open when asked at monotonic time ``asked_at``: calls of this worker that are no
        longer open ended (their webhook may have reached another worker). A call added after ``asked_at`` stays:
        the listing may have been read before the call was written."""
        self._listed = set(call_ids)
        for call_id, started in list(self._started.items()):
            if call_id not in self._listed and started.at < asked_at:
                del self._started[call_id]

    async def restore(self) -> int:
        """Write back what a store that lost its data knew of the open calls: all of them as due now, and the host
        context, deadline and media record of the calls this worker started. Returns how many calls are open."""
        now, now_monotonic = self._clock(), time.monotonic()
        known = self._listed | self._started.keys()
        writes: list[Awaitable[None]] = [self.store.watch_call(call_id, now) for call_id in known]
        for call_id, started in self._started.items():
            call, age = started.call, now_monotonic - started.at
            if call is not None:
                writes.append(self.store.remember_call(call_id, call.context, max(call.ttl - age, 1), call.deadline_at))
                writes.append(self.store.remember_media(call_id, call.media, max(call.media_ttl - age, 1)))
        await asyncio.gather(*writes)
        return len(known)


class Reconciler:
    """The worker's one loop that looks the open calls up at DialNexa (see the module's docstring)."""

    def __init__(
        self,
        desk: CallDesk,
        *,
        probe: float = PROBE_SECONDS,
        page: int = PAGE_SIZE,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.desk = desk
        self.open_calls = desk.open_calls
        self.probe = probe
        self.page = page
        self._clock = clock
        self._sleep = sleep
        self._generation: str | None = None
        self._store_down = False
        self._everything_due = True
        """Set at start-up, after an outage and after a loss: the next round looks up every open call."""
        self._next_round = 0.0
        self._loop = BackgroundLoop(
            "webcall-reconciler",
            self._step_and_wait,
            store=desk.store,
            doing="reconciliation",
            pause_after_failure=probe,
            sleep=sleep,
        )

    @property
    def store(self) -> Store:
        return self.desk.store

    @property
    def interval(self) -> float:
        """Seconds between two look-ups of one open call, and between two rounds of this worker."""
        return self.open_calls.interval

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _step_and_wait(self) -> None:
        await self.step()
        await self._sleep(self.probe)

    async def step(self) -> None:
        """One turn: see whether the store answers and still holds its data, then run a round of look-ups when one
        is due (at once after start-up, an outage or a loss)."""
        try:
            generation = await self.store.generation()
            if self._generation is not None and generation != self._generation:
                restored = await self.open_calls.restore()
                log.warning(
                    "webcall: the store lost its data (restarted without persistence?); %d open call(s) written "
                    "back and looked up at DialNexa",
                    restored,
                )
                self._everything_due = True
            elif self._store_down:
                log.info("webcall: the store answers again; looking up every open call at DialNexa")
                self._everything_due = True
            self._generation, self._store_down = generation, False
            await self.open_calls.settle()
            now = self._clock()
            if self._everything_due:
                await self._round(now, due_by=now + self.interval - MIN_CHECK_SECONDS)
                self._everything_due = False
            elif now >= self._next_round:
                await self._round(now, due_by=now)
        except StoreUnavailable as err:  # logged with the outage; the calls are looked up once the store is back
            store_outage(self.store).failed(err, by="reconciliation")
            self._store_down = True

    async def _round(self, now: float, *, due_by: float) -> None:
        """Look up every open call due by ``due_by``, a page at a time."""
        self._next_round = now + self.interval
        asked_at = time.monotonic()
        listed = await self.store.open_calls()
        if await self.store.generation() == self._generation:  # not a listing of a store that just lost its data
            self.open_calls.listed(listed, asked_at)
        while True:
            call_ids = await self.store.calls_to_check(due_by, self.page, lease_until=now + LEASE_SECONDS)
            if call_ids:
                await self._look_up(call_ids, next_at=now + self.interval)
            if len(call_ids) < self.page:
                return

    async def _look_up(self, call_ids: list[str], *, next_at: float) -> None:
        """Ask DialNexa about ``call_ids``; announce the ones that ended, look the others up again at ``next_at``."""
        try:
            listing = await self.desk.client.list_calls(limit=self.page, call_id=",".join(call_ids))
        except DialNexaError as err:
            log.warning("webcall: could not look up %d open call(s) at DialNexa: %s", len(call_ids), err)
            await self.store.check_again(call_ids, next_at)
            return
        records = {record.id: record for record in listing if record.id in call_ids}
        unknown = []
        for call_id in call_ids:
            if call_id not in records:  # not in the listing (yet): asked for alone
                try:
                    records[call_id] = await self.desk.client.get_call(call_id)
                except DialNexaNotFound:
                    unknown.append(call_id)
                except DialNexaError as err:
                    log.info("call %s: could not look the call up at DialNexa: %s", call_id, err)
        ended = [record for record in records.values() if has_ended(record)]
        for record in ended:
            log.warning(
                "call %s: DialNexa says it ended (%s, %s) but no webhook told this plugin; announcing call.ended",
                record.id,
                record.status,
                record.end_reason or "no end reason",
            )
            await self.desk.record_delivery("call_ended", {**record.raw, "id": record.id}, source=RECONCILED)
        for call_id in unknown:
            log.warning("call %s: DialNexa does not know this call; it is no longer looked up", call_id)
            await self.desk.finished(call_id)
            await self.open_calls.remove(call_id)
        closed = {record.id for record in ended} | set(unknown)
        await self.store.check_again([call_id for call_id in call_ids if call_id not in closed], next_at)
