"""Maintenance: lease recovery, retention and cached gauges, run by one process at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import structlog

from timefuse.domain.status import EventStatus
from timefuse.ports.clock import Clock
from timefuse.ports.store import EventStore, PlansStorage, StoreError
from timefuse.service.metrics import Metrics
from timefuse.service.wakeup import DueSignal

log = structlog.get_logger("timefuse.maintenance")


class Leadership(Protocol):
    """Decides whether this process may run maintenance now (one process at a time)."""

    def hold(self) -> contextlib.AbstractAsyncContextManager[bool]:
        """Enter to try to lead; yields ``True`` while this process is the leader."""
        ...


class SoleLeader:
    """Leadership for a store only one process uses (the embedded SQLite store)."""

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        yield True


@dataclass(frozen=True, slots=True)
class MaintenanceSettings:
    retention_days: int = 7
    lease_check_seconds: float = 5.0
    retention_every_seconds: float = 3600.0
    partitions_every_seconds: float = 3600.0
    gauges_every_seconds: float = 15.0


class Maintenance:
    def __init__(
        self,
        *,
        store: EventStore,
        clock: Clock,
        metrics: Metrics,
        settings: MaintenanceSettings,
        leadership: Leadership | None = None,
        wakeup: DueSignal | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._leadership = leadership or SoleLeader()
        self._wakeup = wakeup
        self._last_retention = float("-inf")
        self._last_gauges = float("-inf")
        self._last_partitions = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self._leadership.hold() as leading:
                    if leading:
                        await self.run_once()
            except StoreError as exc:
                log.warning("maintenance failed; will retry", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.lease_check_seconds)

    async def run_once(self) -> None:
        loop = asyncio.get_running_loop()
        recovered = await self._store.recover_expired_leases()
        if recovered:
            self._metrics.leases_recovered.inc(recovered)
            log.info("recovered expired leases", count=recovered)
            if self._wakeup is not None:
                self._wakeup.notify()
        now = loop.time()
        if now - self._last_retention >= self._settings.retention_every_seconds:
            await self.cleanup(self._settings.retention_days)
            self._last_retention = now
        if (
            isinstance(self._store, PlansStorage)
            and now - self._last_partitions >= self._settings.partitions_every_seconds
        ):
            created = await self._store.create_partitions_ahead()
            if created:
                log.info("created partitions ahead", partitions=created)
            self._last_partitions = now
        if now - self._last_gauges >= self._settings.gauges_every_seconds:
            await self.refresh_gauges()
            self._last_gauges = now

    async def cleanup(self, days: int) -> int:
        """Delete terminal events older than ``days``; returns how many went."""
        cutoff = self._clock.now() - timedelta(days=days)
        deleted = await self._store.delete_terminal_before(cutoff)
        if deleted:
            log.info("retention deleted terminal events", count=deleted, days=days)
        return deleted

    async def refresh_gauges(self) -> None:
        counts = await self._store.count_by_status()
        for status in EventStatus:
            self._metrics.events_by_status.labels(status.value).set(counts.get(status, 0))
