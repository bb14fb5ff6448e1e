"""Trouble with the state store, named once and then summarised.

While Redis cannot be reached, every request that needs it fails, and so does each turn of the event dispatcher
(about once a second). A warning for each would bury everything else in the log; none would hide the outage. An
:class:`Outage` names the trouble once — which store, its address without the password, the error — then, while it
lasts, sums it up every :data:`SUMMARY_SECONDS` (since when, how many attempts failed, and where), and says when the
store answers again.

Each store the plugin opens is registered with :func:`watch_store`; the places that meet its failures report them
to :func:`store_outage` (``failed``) and the dispatcher, which asks the store continually, reports its answers
(``answered``).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

log = logging.getLogger("webcall.store")

SUMMARY_SECONDS = 60.0
"""How often a lasting outage is summarised."""


def address_without_password(url: str) -> str:
    """A store URL as it may be logged: no password, and no query (which can carry one)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{hosts}" if at and user else hosts
    return f"{parts.scheme}://{netloc}{parts.path}"


def describe_store(url: str) -> str:
    """``the memory store`` or ``Redis at redis://host:6379/0``, for log lines."""
    if url == "memory":
        return "the memory store"
    return f"Redis at {address_without_password(url)}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class Outage:
    """One dependency's outages: the first failure is named, a lasting one summarised, the recovery said."""

    def __init__(
        self,
        description: str,
        *,
        summary_seconds: float = SUMMARY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        logger: logging.Logger = log,
    ) -> None:
        self.description = description
        self.summary_seconds = summary_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._log = logger
        self._began: float | None = None
        self._began_at = 0.0
        self._reported = 0.0
        self._failures: Counter[str] = Counter()
        self._last_error = ""

    @property
    def ongoing(self) -> bool:
        return self._began is not None

    def failed(self, error: BaseException, *, by: str) -> None:
        """``by`` (e.g. ``"requests"``, ``"event delivery"``) met ``error`` trying to use the store."""
        now = self._clock()
        self._last_error = (str(error.__cause__ or error) or type(error).__name__).rstrip(".")
        self._failures[by] += 1
        if self._began is None:
            self._began, self._began_at, self._reported = now, self._wall_clock(), now
            self._log.warning(
                "webcall: the state store (%s) is unreachable: %s. Until it answers, starts and webhooks get 503 and "
                "event delivery waits; this is summarised every %s while it lasts",
                self.description,
                self._last_error,
                _duration(self.summary_seconds),
            )
            return
        if now - self._reported >= self.summary_seconds:
            self._reported = now
            self._log.warning(
                "webcall: the state store (%s) is still unreachable, since %s UTC (%s): %s; last error: %s",
                self.description,
                datetime.fromtimestamp(self._began_at, UTC).strftime("%H:%M:%S"),
                _duration(now - self._began),
                self._attempts(),
                self._last_error,
            )

    def answered(self) -> None:
        """The store answered: an outage, if there was one, is over."""
        if self._began is None:
            return
        self._log.warning(
            "webcall: the state store (%s) answers again, after %s unreachable (%s)",
            self.description,
            _duration(self._clock() - self._began),
            self._attempts(),
        )
        self._began = None
        self._failures.clear()

    def _attempts(self) -> str:
        total = sum(self._failures.values())
        each = ", ".join(f"{count} by {by}" for by, count in sorted(self._failures.items()))
        return f"{total} failed attempt{'s' if total != 1 else ''} ({each})"


_outages: weakref.WeakKeyDictionary[object, Outage] = weakref.WeakKeyDictionary()


def watch_store(store: object, url: str) -> Outage:
    """Register the store opened from ``url``: its outages are described by its address (without the password)."""
    outage = _outages[store] = Outage(describe_store(url))
    return outage


def store_outage(store: object) -> Outage:
    """The outage record of ``store`` (registered by :func:`watch_store`; a store nobody registered, such as one a
    test made, is described by its type)."""
    outage = _outages.get(store)
    if outage is None:
        outage = _outages[store] = Outage(f"a {type(store).__name__}")
    return outage
