"""The in-memory event store: no server, no file; for tests, passing the same contract suite."""

from __future__ import annotations

from timefuse.adapters.memory.store import MemoryStore, StoreFaults

__all__ = ["MemoryStore", "StoreFaults"]
