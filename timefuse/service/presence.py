"""Heartbeats: each process tells the store it is alive, so a dead one is noticed in seconds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from datetime import datetime

import structlog

from timefuse.ports.store import StoreError, WorkerBeat
from timefuse.service.store import Store

log = structlog.get_logger("timefuse")


class Presence:
    """Heartbeats ``worker`` every ``every_seconds`` until stopped.

    :param in_flight: what the process reports as deliveries in flight.
    :param dead_after_seconds: the silence after which the maintenance leader may judge this
        process dead and take its claims back (see :meth:`vouch`).
    """

    def __init__(
        self,
        store: Store,
        *,
        worker: str,
        roles: Collection[str],
        started_at: datetime,
        every_seconds: float = 1.0,
        in_flight: Callable[[], int] = lambda: 0,
        dead_after_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._worker = worker
        self._roles = tuple(sorted(roles))
        self._started_at = started_at
        self._every = every_seconds
        self._in_flight = in_flight
        self._failing = False
        self._dead_after = dead_after_seconds
        self._now = monotonic
        # When the newest heartbeat that succeeded was sent: the store heard of us after it.
        self._heard_from = -float("inf")

    async def beat(self) -> None:
        sent = self._now()
        await self._store.heartbeat(
            WorkerBeat(self._worker, self._roles, self._started_at, self._in_flight())
        )
        self._heard_from = max(self._heard_from, sent)

    async def vouch(self) -> None:
        """Make sure the store heard of this process lately, before it acts as a live one
        (claims): unless a heartbeat sent within half the dead-after time succeeded, heartbeat
        now. A process whose heartbeats failed for that long may be judged dead at any moment,
        and what it claimed then taken back while it delivers; the other half of the time is
        the margin for the claim itself. Raises :class:`StoreError` if the heartbeat fails."""
        if self._now() - self._heard_from >= self._dead_after / 2:
            await self.beat()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.beat()
                if self._failing:
                    log.info("heartbeats reach the store again")
                self._failing = False
            except StoreError as exc:
                if not self._failing:
                    log.warning("heartbeat failed; retrying", error=str(exc))
                self._failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every)
