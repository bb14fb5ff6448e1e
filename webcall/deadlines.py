"""Calls past their maximum length are hung up by the plugin, whatever DialNexa does.

Every start stores its call's deadline (:meth:`Store.publish_new_call`); :class:`CallDeadlines` is one small task per
worker that asks the store, twice a second, for the calls whose deadline has passed and ends each. The store hands a
due call to one worker only (Redis removes it from the deadline set in the same step), so several workers never end a
call twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .errors import StoreUnavailable
from .outage import store_outage
from .store import Store

log = logging.getLogger("webcall")

CHECK_SECONDS = 0.5
"""How often the task looks for calls past their maximum length."""
BATCH = 50
"""Calls ended at most per look; a full batch is followed by another look at once."""


class CallDeadlines:
    """The task that ends each call at its maximum length with ``end_call`` (the call desk's), started and stopped
    with the runtime."""

    def __init__(
        self,
        store: Store,
        end_call: Callable[[str], Awaitable[None]],
        *,
        every: float = CHECK_SECONDS,
        batch: int = BATCH,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.end_call = end_call
        self.every = every
        self.batch = batch
        self._clock = clock
        self._sleep = sleep
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name="webcall-deadlines")

    async def stop(self) -> None:
        # The flag as well: a store client may swallow a cancellation while it reconnects (see EventBus.stop).
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    async def _run(self) -> None:
        while not self._stopping:
            pause = self.every
            try:
                if await self.end_due_calls() >= self.batch:
                    pause = 0  # more may be due: look again at once
                store_outage(self.store).answered()
            except StoreUnavailable as err:
                store_outage(self.store).failed(err, by="call deadlines")
                pause = 1.0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webcall: looking for calls past their maximum length failed; retrying")
                pause = 1.0
            await self._sleep(pause)

    async def end_due_calls(self) -> int:
        """End the calls past their maximum length (at most one batch); returns how many there were."""
        due = await self.store.deadlines_due(self._clock(), self.batch)
        for call_id in due:
            try:
                await self.end_call(call_id)
            except Exception:
                log.exception("call %s: ending the call at its maximum length failed", call_id)
        return len(due)
