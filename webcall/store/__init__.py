"""State stores: memory (default) and, for several workers, Redis."""

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
