"""One background task that takes turns for the runtime's lifetime: the event dispatcher, the deadline task and the
reconciler each run on one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field

from .errors import StoreUnavailable
from .outage import store_outage
from .store import Store

log = logging.getLogger("webcall")


@dataclass(eq=False)
class BackgroundLoop:
    """Runs ``turn`` again and again in a task named ``name`` between :meth:`start` and :meth:`stop`. A turn that
    finds the store unreachable is counted in the store's outage (as ``doing``); one that fails otherwise is logged;
    either way the next turn waits ``pause_after_failure`` seconds."""

    name: str
    turn: Callable[[], Awaitable[None]]
    _: KW_ONLY
    store: Store
    doing: str
    pause_after_failure: float = 1.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _runner: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)

    def start(self) -> None:
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        # The flag as well as the cancellation: a store client may swallow a cancellation that arrives while it
        # reconnects (redis-py can, with Redis down), and the task must still end, at its next turn.
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.turn()
                continue
            except StoreUnavailable as err:
                store_outage(self.store).failed(err, by=self.doing)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webcall: %s failed; retrying", self.doing)
            await self.sleep(self.pause_after_failure)
