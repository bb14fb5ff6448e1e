"""The event bus: deduplicated events into the outbox, host callbacks run from it, browsers fed from the call log.

Delivery to host callbacks is at least once: an event is in the outbox (the store) before DialNexa is answered 2xx;
a dispatcher task takes entries, runs every callback that has not yet succeeded for the entry — each isolated, with
its own timeout, retried with backoff — and acknowledges the entry when every callback has succeeded or has been
moved to the dead-letter list. An entry taken by a worker that died is reclaimed by another worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .background import BackgroundLoop
from .errors import StoreUnavailable
from .events import CallEvent, now_iso
from .outage import store_outage
from .store import Store
from .store.base import RECLAIMED, NewCall

log = logging.getLogger("webcall.events")

Callback = Callable[[CallEvent], Awaitable[None] | None]
DEDUPE_TTL = 7 * 24 * 3600.0
EVENT_LOG_TTL = 24 * 3600.0
QUALITY_WAIT_SECONDS = 2.0
"""How long ``call.ended`` waits for the quality summary of a browser that said it would send one."""
TAKE_BLOCK_SECONDS = 0.5
"""How long an idle dispatcher waits on the store for new outbox entries before it asks again."""
TAKE_COUNT = 16
"""Outbox entries taken at most per store call."""
GATHER_SECONDS = 0.02
"""After taking a partial batch, the dispatcher waits this long before it takes again, so that under load entries
arrive at the host in batches (one store call per batch, not one per event) at the cost of this much delay. An idle
dispatcher blocks on the store instead: the first event after a quiet spell is delivered at once."""


@dataclass(frozen=True)
class DeadLetter:
    """A callback that kept failing for one event; replay it with ``WebCall.replay(letter.id)``."""

    id: str
    event: CallEvent
    callback: str
    error: str
    attempts: int
    failed_at: str


def callback_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class CallbackList:
    """Host callbacks for call events, registered like aiohttp signals: ``handle.on_call_event.append(fn)``,
    or with a filter: ``@handle.on_call_event.on("call.ended")``."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Callback, frozenset[str] | None]] = []

    def append(self, fn: Callback, *, types: Iterable[str] | None = None) -> None:
        name = callback_name(fn)
        taken = {n for n, _, _ in self._items}
        base, n = name, 2
        while name in taken:
            name, n = f"{base}#{n}", n + 1
        self._items.append((name, fn, frozenset(types) if types is not None else None))

    def on(self, *types: str) -> Callable[[Callback], Callback]:
        """Decorator: run the function for events of these types (all types when none are given)."""

        def register(fn: Callback) -> Callback:
            self.append(fn, types=types or None)
            return fn

        return register

    def for_event(self, event: CallEvent) -> list[tuple[str, Callback]]:
        return [(name, fn) for name, fn, types in self._items if types is None or event.type in types]

    def get(self, name: str) -> Callback | None:
        return next((fn for n, fn, _ in self._items if n == name), None)

    def __len__(self) -> int:
        return len(self._items)


class EventBus:
    def __init__(
        self,
        store: Store,
        callbacks: CallbackList,
        *,
        callback_timeout: float = 10.0,
        attempts: int = 5,
        backoff: float = 0.5,
        concurrency: int = 32,
        gather_seconds: float = GATHER_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.callbacks = callbacks
        self.callback_timeout = callback_timeout
        self.attempts = attempts
        self.backoff = backoff
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        # An entry held longer than one full round of retries belongs to a worker that died.
        self.reclaim_after = attempts * (callback_timeout + backoff * 2**attempts) + 5
        self._slots = asyncio.Semaphore(concurrency)
        self.gather_seconds = gather_seconds
        self._sleep = sleep
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher = BackgroundLoop("webcall-dispatcher", self._dispatch, store=store, doing="event delivery")
        self._unacknowledged: dict[str, asyncio.Future[None]] = {}
        self._acknowledging = False

    # -- publishing ------------------------------------------------------------------------------------------------
    async def publish(self, event: CallEvent, *, new_call: NewCall | None = None) -> bool:
        """Queue an event for the host's callbacks and the call's browsers; False when it is a duplicate. With
        ``new_call`` (the event is about a call the plugin has just started), the call's records are written in the
        same store step (:meth:`Store.publish_new_call`)."""
        entry = {"event": event.to_json()}
        publication: dict[str, Any] = {
            "dedupe_key": f"dedupe:{event.id}",
            "dedupe_ttl": DEDUPE_TTL,
            "browser_event": event.browser_json(),
            "log_ttl": EVENT_LOG_TTL,
        }
        if new_call is None:
            entry_id = await self.store.publish_event(entry, call_id=event.call_id, **publication)
        else:
            entry_id = await self.store.publish_new_call(new_call, entry, **publication)
        if entry_id is None:
            log.info("call %s: duplicate %s ignored", event.call_id, event.type)
            return False
        log.info("call %s: %s queued", event.call_id, event.type)
        return True

    # -- dispatching -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._dispatcher.start()

    async def stop(self) -> None:
        await self._dispatcher.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, within: float = 5.0) -> None:
        """Wait until the outbox is empty and no delivery runs (for tests and orderly shutdowns)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self._tasks and await self.store.outbox_depth() == 0:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError("the outbox did not drain in time")

    async def _dispatch(self) -> None:
        """One turn of the dispatcher: take what the outbox holds (waiting a moment when it is empty) and start
        delivering each entry."""
        entries = await self.store.outbox_take(
            self.consumer, TAKE_COUNT, block=TAKE_BLOCK_SECONDS, reclaim_after=self.reclaim_after
        )
        store_outage(self.store).answered()
        for entry_id, entry in entries:
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(entry_id, entry))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        if 0 < len(entries) < TAKE_COUNT:
            await asyncio.sleep(self.gather_seconds)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _deliver(self, entry_id: str, entry: dict[str, Any]) -> None:
        try:
            event = CallEvent.from_json(entry["event"])
            if event.type == "call.ended" and event.quality is None:
                event = await self._with_quality(event)
            only = set(entry.get("only") or [])
            done: set[str] = set()
            if entry.pop(RECLAIMED, False):  # taken over from a worker that died: some callbacks may have run
                log.info("webcall: outbox entry %s was reclaimed from a stopped worker", entry_id)
                done = await self.store.done_parts(entry_id)
            targets = [
                (n, fn) for n, fn in self.callbacks.for_event(event) if n not in done and (not only or n in only)
            ]
            # A part is marked done so that, if this entry is retried, it is not repeated; an entry with one part has
            # nothing to protect (a retry repeats that part at most: delivery is at least once).
            mark_done = len(targets) > 1
            await asyncio.gather(
                *(self._run_callback(entry_id, event, name, fn, mark_done=mark_done) for name, fn in targets)
            )
            await self._acknowledge(entry_id)
        except StoreUnavailable as err:
            log.debug("webcall: store unreachable while delivering %s; it will be retried", entry_id)
            store_outage(self.store).failed(err, by="event delivery")
        except Exception:
            log.exception("webcall: delivering outbox entry %s failed; it will be retried", entry_id)

    async def _with_quality(self, event: CallEvent) -> CallEvent:
        """``call.ended`` with the browser's quality summary, waiting up to :data:`QUALITY_WAIT_SECONDS` for a
        browser that said it would send one (the widget sends it as the call ends, often after DialNexa's webhook)."""
        deadline = time.monotonic() + QUALITY_WAIT_SECONDS
        while True:
            media = await self.store.media_of(event.call_id)
            quality = media.get("quality") if media is not None else None
            if isinstance(quality, dict):
                return dataclasses.replace(event, quality=quality)
            if media is None or not media.get("reports_quality") or time.monotonic() >= deadline:
                return event
            await asyncio.sleep(0.1)

    async def _acknowledge(self, entry_id: str) -> None:
        """Acknowledge a delivered entry. Entries delivered while an acknowledgement is on its way to the store wait
        for it to return, then go together in one store call: one call per batch instead of one per entry."""
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unacknowledged[entry_id] = acknowledged
        if not self._acknowledging:
            self._acknowledging = True
            try:
                while self._unacknowledged:
                    batch, self._unacknowledged = self._unacknowledged, {}
                    failure: Exception | None = None
                    try:
                        await self.store.outbox_ack_all(list(batch))
                    except Exception as err:
                        failure = err
                    except BaseException:
                        for waiting in batch.values():
                            waiting.cancel()
                        raise
                    for waiting in batch.values():
                        if waiting.done():
                            continue
                        if failure is None:
                            waiting.set_result(None)
                        else:
                            waiting.set_exception(failure)
            finally:
                self._acknowledging = False
        await acknowledged

    async def _run_callback(self, entry_id: str, event: CallEvent, name: str, fn: Callback, *, mark_done: bool) -> None:
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                result = fn(event)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout=self.callback_timeout)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                error = f"timed out after {self.callback_timeout} s"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if mark_done:
                    await self.store.mark_done(entry_id, name, ttl=self.reclaim_after * 2)
                return
            log.warning(
                "call %s: callback %s failed on %s (attempt %d/%d): %s",
                event.call_id,
                name,
                event.type,
                attempt,
                self.attempts,
                error,
            )
            if attempt < self.attempts:
                await self._sleep(self.backoff * 2 ** (attempt - 1))
        letter = {
            "event": event.to_json(),
            "callback": name,
            "error": error[:500],
            "attempts": self.attempts,
            "failed_at": now_iso(),
        }
        await self.store.dead_add(letter)
        await self.store.mark_done(entry_id, name, ttl=self.reclaim_after * 2)
        log.error("call %s: callback %s gave up on %s; it is in the dead-letter list", event.call_id, name, event.type)

    # -- dead letters ----------------------------------------------------------------------------------------------
    async def dead_letters(self) -> list[DeadLetter]:
        letters = []
        for letter_id, data in await self.store.dead_list():
            letters.append(
                DeadLetter(
                    id=letter_id,
                    event=CallEvent.from_json(data["event"]),
                    callback=str(data["callback"]),
                    error=str(data.get("error", "")),
                    attempts=int(data.get("attempts", 0)),
                    failed_at=str(data.get("failed_at", "")),
                )
            )
        return letters

    async def replay(self, letter_id: str) -> bool:
        """Queue a dead letter's event again for its callback; False when no such letter exists."""
        data = await self.store.dead_take(letter_id)
        if data is None:
            return False
        await self.store.outbox_add({"event": data["event"], "only": [data["callback"]]})
        return True
