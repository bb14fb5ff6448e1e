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
from dataclasses import KW_ONLY, dataclass

from .background import BackgroundLoop
from .outage import store_outage
from .store import Store

log = logging.getLogger("webcall")

CHECK_SECONDS = 0.5
"""How often the task looks for calls past their maximum length."""
BATCH = 50
"""Calls ended at most per look; a full batch is followed by another look at once."""


@dataclass(eq=False)
class CallDeadlines:
    """The task that ends each call at its maximum length with ``end_call`` (the call desk's), started and stopped
    with the runtime."""

    store: Store
    end_call: Callable[[str], Awaitable[None]]
    _: KW_ONLY
    every: float = CHECK_SECONDS
    batch: int = BATCH
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def __post_init__(self) -> None:
        self._loop = BackgroundLoop(
            "webcall-deadlines", self._look, store=self.store, doing="call deadlines", sleep=self.sleep
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _look(self) -> None:
        """One look for calls past their deadline, then the pause before the next (none after a full batch: more
        may be due)."""
        ended = await self.end_due_calls()
        store_outage(self.store).answered()
        await self.sleep(self.every if ended < self.batch else 0)

    async def end_due_calls(self) -> int:
        """End the calls past their maximum length (at most one batch); returns how many there were."""
        due = await self.store.deadlines_due(self.clock(), self.batch)
        for call_id in due:
            try:
                await self.end_call(call_id)
            except Exception:
                log.exception("call %s: ending the call at its maximum length failed", call_id)
        return len(due)
