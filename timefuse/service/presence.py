"""Heartbeats: each process tells the store it is alive, so a dead one is noticed in seconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from datetime import datetime

import structlog

from timefuse.ports.store import StoreError, WorkerBeat
from timefuse.service.store import Store

log = structlog.get_logger("timefuse")


class Presence:
    """Heartbeats ``worker`` every ``every_seconds`` until stopped.

    :param in_flight: what the process reports as deliveries in flight.
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
    ) -> None:
        self._store = store
        self._worker = worker
        self._roles = tuple(sorted(roles))
        self._started_at = started_at
        self._every = every_seconds
        self._in_flight = in_flight
        self._failing = False

    async def beat(self) -> None:
        await self._store.heartbeat(
            WorkerBeat(self._worker, self._roles, self._started_at, self._in_flight())
        )

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
