"""Maintenance: lease recovery, retention, storage upkeep and gauges, led by one process.

Leadership is a lease in the store (renewed every round, taken over when its holder stops
renewing), so it can't hang on a session the way a lock tied to a connection can. It lasts as
long as a worker's silence before it is declared dead: a killed leader is replaced, and its own
claims recovered, as fast as any other dead worker's. Lease
recovery runs every round; retention and storage upkeep run in tasks of their own, so a long
retention pass never delays the recovery of lost claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog

from timefuse.domain.status import EventStatus
from timefuse.ports.clock import Clock
from timefuse.ports.store import StoreError
from timefuse.service.metrics import Metrics
from timefuse.service.planner import SchedulePlanner
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal

log = structlog.get_logger("timefuse.maintenance")

ROLE = "maintenance"
# Leadership lasts the dead-after time, but never longer than this: a killed leader holds up
# recovery, retention and the schedule planner (whose grace for late instants is 60 s) until it
# lapses, whatever dead-after time an operator sets.
LEADERSHIP_MAX_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class MaintenanceSettings:
    retention_days: int = 7
    # How often the leader recovers lost claims (and renews its leadership); at most a third
    # of its leadership (dead_after_seconds, at most LEADERSHIP_MAX_SECONDS), so a live leader
    # renews it well before it lapses.
    round_seconds: float = 1.0
    # A worker silent this long is dead: its claims are recovered. Leadership not renewed for
    # this long (at most LEADERSHIP_MAX_SECONDS) passes to another process.
    dead_after_seconds: float = 5.0
    # A worker silent this long is forgotten (no longer listed).
    forget_after_seconds: float = 86_400.0
    retention_every_seconds: float = 3600.0
    upkeep_every_seconds: float = 3600.0
    gauges_every_seconds: float = 15.0


class Maintenance:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        metrics: Metrics,
        settings: MaintenanceSettings,
        holder: str,
        wakeup: DueSignal | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        planner: SchedulePlanner | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._settings = settings
        self._holder = holder
        self._wakeup = wakeup
        self._now = monotonic
        self._planner = planner
        self._last: dict[str, float] = {}
        self._background: dict[str, asyncio.Task[None]] = {}
        self._due_types: set[str] = set()
        self.leading = False
        # Silence only proves death while this process hears the store itself: after it lost
        # touch (an outage, a partition), every worker gets dead_after_seconds from the moment
        # it is back before being declared dead. Until then, only expired leases return.
        self._lost_touch = False
        self._judge_from = -float("inf")

    @property
    def _leadership_seconds(self) -> float:
        return min(self._settings.dead_after_seconds, LEADERSHIP_MAX_SECONDS)

    @property
    def _round_every(self) -> float:
        return min(self._settings.round_seconds, self._leadership_seconds / 3)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self.leading = await self._lead()
                if self.leading:
                    await self._round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._round_every)
        finally:
            for task in self._background.values():
                task.cancel()
            await asyncio.gather(*self._background.values(), return_exceptions=True)
            if self.leading:
                with contextlib.suppress(StoreError):
                    await self._store.release_leadership(ROLE, self._holder)

    async def _lead(self) -> bool:
        try:
            leading = await self._store.acquire_leadership(
                ROLE, self._holder, self._leadership_seconds
            )
        except StoreError as exc:
            log.warning("maintenance leadership unknown; will retry", error=str(exc))
            self._lost_touch = True
            return False
        if self._lost_touch:
            self._lost_touch = False
            self._judge_from = self._now() + self._settings.dead_after_seconds
        return leading

    async def _round(self) -> None:
        try:
            await self.recover()
        except StoreError as exc:
            log.warning("lease recovery failed; will retry", error=str(exc))
            self._lost_touch = True
        settings = self._settings
        self._in_background("retention", settings.retention_every_seconds, self._retention)
        if self._store.capabilities.storage_planner is not None:
            self._in_background("upkeep", settings.upkeep_every_seconds, self.prepare_storage)
        self._in_background("gauges", settings.gauges_every_seconds, self.refresh_gauges)
        if self._planner is not None:
            # Every round (once the previous tick has finished): occurrences are created
            # ahead of their instants by the planner's lookahead, which covers the round.
            self._in_background("schedules", 0.0, self._planner.run_once)

    def _in_background(
        self, name: str, every: float, work: Callable[[], Awaitable[object]]
    ) -> None:
        running = self._background.get(name)
        if running is not None and not running.done():
            return
        now = self._now()
        if now - self._last.get(name, -float("inf")) < every:
            return
        self._last[name] = now
        self._background[name] = asyncio.create_task(self._guarded(name, work))

    async def _guarded(self, name: str, work: Callable[[], Awaitable[object]]) -> None:
        try:
            await work()
        except StoreError as exc:
            log.warning("maintenance task failed; will retry", task=name, error=str(exc))
            self._last.pop(name, None)

    async def recover(self) -> int:
        """Recover the claims of expired leases and of dead workers; how many.

        The listing only names the suspects: the store recovers a suspect's claims only if it
        is still silent when the recovery runs, so a worker that comes back (and claims
        again) between the two calls keeps what it claimed.
        """
        settings = self._settings
        workers = await self._store.workers()
        dead = {w.worker for w in workers if w.silent_seconds > settings.dead_after_seconds}
        if dead and self._now() < self._judge_from:
            dead = set()
        recovered = await self._store.recover_expired_leases(
            dead, silent_seconds=settings.dead_after_seconds
        )
        if recovered:
            self._metrics.leases_recovered.inc(recovered)
            log.info("recovered lost claims", count=recovered, suspected_dead=sorted(dead))
            if self._wakeup is not None:
                self._wakeup.notify()
        if any(w.silent_seconds > settings.forget_after_seconds for w in workers):
            await self._store.forget_workers(settings.forget_after_seconds)
        return recovered

    async def _retention(self) -> None:
        await self.cleanup(self._settings.retention_days)

    async def cleanup(self, days: int, *, wait: bool = False) -> int:
        """Delete terminal events older than ``days``; returns how many went. ``wait``: when
        another process is running retention, wait for it and run after (an operator's
        request), rather than skip this pass (the schedule's)."""
        cutoff = self._clock.now() - timedelta(days=days)
        deleted = await self._store.delete_terminal_before(cutoff, wait=wait)
        if deleted:
            log.info("retention deleted terminal events", count=deleted, days=days)
        return deleted

    async def prepare_storage(self) -> list[str]:
        planner = self._store.capabilities.storage_planner
        if planner is None:
            return []
        created = await planner.prepare_storage()
        if created:
            log.info("created partitions ahead", partitions=created)
        return created

    async def refresh_gauges(self) -> None:
        counts = await self._store.count_by_status()
        for status in EventStatus:
            self._metrics.events_by_status.labels(status.value).set(counts.get(status, 0))
        due = await self._store.count_due_by_type()
        gauge = self._metrics.due_by_type
        for gone in self._due_types - due.keys():
            gauge.remove(gone)
        for delivery_type, count in due.items():
            gauge.labels(delivery_type).set(count)
        self._due_types = set(due)
        self._metrics.shared_breakers_open.set(len(await self._store.open_breakers()))
