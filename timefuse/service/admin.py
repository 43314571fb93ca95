"""Operator actions beyond single events: retention now, destinations, workers."""

from __future__ import annotations

from collections.abc import Mapping

from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.store import SharedBreaker, WorkerRecord
from timefuse.service.gate import DestinationGate
from timefuse.service.maintenance import Maintenance
from timefuse.service.store import Store


class Admin:
    """What the admin API acts on besides events.

    The destinations are those of this process's dispatcher: breakers, caps and queues live in
    the memory of each dispatching process, so another process's are neither shown nor reset
    here.

    :param retention_days: what :meth:`cleanup` keeps when not told otherwise
        (``CLEANUP_RETENTION_DAYS``).
    """

    def __init__(
        self,
        *,
        maintenance: Maintenance,
        gate: DestinationGate,
        store: Store,
        retention_days: int,
        dead_after_seconds: float,
        registry: DeliveryRegistry | None = None,
    ) -> None:
        self._maintenance = maintenance
        self._gate = gate
        self._store = store
        self._registry = registry or DeliveryRegistry()
        self.retention_days = retention_days
        self._dead_after = dead_after_seconds

    async def cleanup(self, days: int | None = None) -> int:
        """Delete terminal events last updated more than ``days`` ago, now; returns how many."""
        return await self._maintenance.cleanup(self.retention_days if days is None else days)

    def destinations(self) -> Mapping[str, Mapping[str, object]]:
        """Each destination this process's dispatcher knows, by key, with its state."""
        return self._gate.snapshot()

    def reset_destination(self, key: str) -> Mapping[str, object] | None:
        """Close the destination's breaker; its state after, or ``None`` if it is unknown."""
        if not self._gate.reset_breaker(key):
            return None
        return self._gate.snapshot().get(key)

    async def shared_breakers(self) -> list[SharedBreaker]:
        """Breakers open for the whole cluster (kept in the store when dispatchers share
        limits, as on PostgreSQL); none with a store that doesn't share them."""
        return await self._store.open_breakers()

    async def close_shared_breaker(self, key: str) -> bool:
        """Close a breaker for the whole cluster; ``False`` if it is not open there."""
        if key not in {b.key for b in await self._store.open_breakers()}:
            return False
        await self._store.publish_breaker(key, open=False)
        return True

    async def workers(self) -> list[tuple[WorkerRecord, bool]]:
        """Every process heard of recently, with whether it counts as alive."""
        return [(w, w.silent_seconds <= self._dead_after) for w in await self._store.workers()]

    async def delivery_types(self) -> list[dict[str, object]]:
        """The types this process delivers, and any other type due events name (left waiting
        for a process that has it), each with how many of its events are due now."""
        due = await self._store.count_due_by_type()
        rows: list[dict[str, object]] = [
            {
                "name": kind.name,
                "loaded": True,
                "origin": kind.origin,
                "version": kind.version,
                "due": due.get(kind.name, 0),
            }
            for kind in self._registry.types()
        ]
        loaded = set(self._registry.names())
        rows += [
            {"name": name, "loaded": False, "origin": None, "version": None, "due": count}
            for name, count in sorted(due.items())
            if name not in loaded
        ]
        return rows
