"""The state store interface: the few things several requests (and, with Redis, several workers) must share.

Implementations: :class:`webcall.store.memory.MemoryStore` (the default, one process). Every method is atomic with
respect to the others; times are seconds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Store(ABC):
    @abstractmethod
    async def hit(self, key: str, limit: int, window: float) -> float | None:
        """Count one request against ``key``.

        Returns None while at most ``limit`` requests fell in the current ``window``, otherwise the seconds until
        the window frees up (for ``Retry-After``). A refused request is not counted.
        """

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

    @abstractmethod
    async def get_context(self, call_id: str) -> dict[str, Any] | None:
        """The context stored for ``call_id``, or None once unknown or expired."""

    @abstractmethod
    async def use_once(self, key: str, ttl: float) -> bool:
        """True the first time ``key`` is used within ``ttl`` seconds, False on every later use (single-use ids)."""

    async def ping(self) -> None:  # noqa: B027 - optional hook, nothing to check in memory
        """Raise :class:`webcall.errors.StoreUnavailable` when the store cannot be reached."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is not used afterwards."""
