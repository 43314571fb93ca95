"""Writing attempt outcomes and deferrals back to the store in batches.

One transaction per flush instead of one per event: at thousands of deliveries a second the
store sees tens of statements a second, not thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from datetime import datetime, timedelta

import structlog

from timefuse.ports.store import EventStore, OutcomeUpdate, StoreError
from timefuse.service.wakeup import DueSignal

log = structlog.get_logger("timefuse.dispatcher")

FLUSH_INTERVAL_SECONDS = 0.02
# Deferrals due within the same tenth of a second share one statement.
DEFER_GRANULARITY = timedelta(milliseconds=100)


class OutcomeWriter:
    def __init__(
        self, store: EventStore, worker_id: str, wakeup: DueSignal, batch_size: int
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._wakeup = wakeup
        self._batch_size = batch_size
        self._outcomes: list[OutcomeUpdate] = []
        self._deferred: dict[datetime, list[str]] = defaultdict(list)
        self._ready = asyncio.Event()

    def add(self, update: OutcomeUpdate) -> None:
        self._outcomes.append(update)
        if len(self._outcomes) >= self._batch_size:
            self._ready.set()

    def defer(self, event_id: str, due_at: datetime) -> None:
        """Hand a claimed event back as PENDING at ``due_at``, its attempt not counted."""
        bucket = due_at + (DEFER_GRANULARITY - timedelta(microseconds=1))
        bucket -= timedelta(microseconds=bucket.microsecond % 100_000)
        self._deferred[bucket].append(event_id)

    @property
    def pending(self) -> int:
        return len(self._outcomes) + sum(len(ids) for ids in self._deferred.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every few milliseconds, or at once when a batch is full, until ``stop``.

        Stopping never interrupts a write: a batch taken for writing when the process is asked
        to stop is written (or kept) before this returns, not dropped by a cancellation.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), FLUSH_INTERVAL_SECONDS)
            self._ready.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is buffered; ``False`` (and everything kept) if the store failed."""
        return await self._flush_outcomes() and await self._flush_deferrals()

    async def flush_until_written(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not await self.flush() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    async def _flush_outcomes(self) -> bool:
        if not self._outcomes:
            return True
        batch, self._outcomes = self._outcomes, []
        try:
            await self._store.record_outcomes(self._worker_id, batch)
        except BaseException as exc:
            self._outcomes = batch + self._outcomes
            if not isinstance(exc, StoreError):
                raise
            # Kept for the next flush. If the store stays down past the lease, recovery counts
            # the attempt and the event is delivered again: at least once, never lost.
            log.warning("writing outcomes failed; will retry", error=str(exc), count=len(batch))
            return False
        retries = [u.next_attempt_at for u in batch if u.next_attempt_at is not None]
        if retries:
            self._wakeup.notify(min(retries))
        return True

    async def _flush_deferrals(self) -> bool:
        while self._deferred:
            # Taken out before the await: deferrals added meanwhile go to a fresh list.
            due_at, ids = self._deferred.popitem()
            try:
                await self._store.reschedule(self._worker_id, ids, due_at)
            except BaseException as exc:
                self._deferred[due_at].extend(ids)
                if not isinstance(exc, StoreError):
                    raise
                log.warning("deferring events failed; will retry", error=str(exc), count=len(ids))
                return False
            self._wakeup.notify(due_at)
        return True
