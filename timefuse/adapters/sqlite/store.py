"""The embedded event store: one SQLite file in WAL mode, driven from one dedicated thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from timefuse.adapters.sqlite import listing
from timefuse.adapters.sqlite import operations as ops
from timefuse.adapters.sqlite.connection import connect
from timefuse.adapters.sqlite.errors import wrap_exceptions
from timefuse.adapters.sqlite.rows import optional_micros, to_micros
from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.clock import Clock
from timefuse.ports.store import (
    AttemptRecord,
    CancelResult,
    EventPage,
    EventQuery,
    OutcomeUpdate,
    RedeliverResult,
    StoreError,
    StoreUnavailable,
    source_set,
)

T = TypeVar("T")


class _SystemTime:
    # Adapters may not import each other (import-linter), so the default clock is this twin
    # of adapters.system.clock.SystemClock; the composition root passes the shared one.
    def now(self) -> datetime:
        return datetime.now(UTC)


class SqliteEventStore:
    """:class:`timefuse.ports.store.EventStore` on a local SQLite file.

    Every statement runs on one worker thread that owns the only connection. SQLite admits
    one writer at a time anyway, so a single thread loses no write throughput, keeps the
    event loop free while SQLite waits on disk, and makes claims in this process strictly
    sequential: two claimers can't take the same event. Other processes opening the file are
    kept out by SQLite's own locking (every write transaction is ``BEGIN IMMEDIATE``).

    :param path: the database file; parent directories are created. ``":memory:"`` works for
        throwaway stores.
    :param clock: the store's clock, which guards claims and leases (default: system time).
    """

    def __init__(self, path: str, *, clock: Clock | None = None) -> None:
        self._path = path
        self._clock: Clock = clock or _SystemTime()
        self._executor: ThreadPoolExecutor | None = None
        # Touched only from the executor's thread.
        self._conn: sqlite3.Connection | None = None

    @property
    def path(self) -> str:
        return self._path

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timefuse-sqlite")
        try:
            await self._submit(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            # Queued behind any work already submitted, which therefore finishes first.
            fut = asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
            with wrap_exceptions():
                await fut
        finally:
            executor.shutdown(wait=False)

    async def ping(self) -> None:
        await self._run(ops.ping)

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        if not events:
            return {}
        return await self._run(partial(ops.insert_many, events=events))

    async def claim_due(self, worker_id: str, limit: int, lease_seconds: float) -> list[Event]:
        if limit <= 0:
            return []
        lease = round(lease_seconds * 1_000_000)
        claimed = await self._run(
            lambda conn: ops.claim_due(conn, self._now(), worker_id, limit, lease)
        )
        # Decoded here, on the event loop, not on the SQLite thread (see ops.claim_due).
        events, reread = ops.claimed_events(claimed)
        for event_id in reread:
            # Still under the lease just taken, so the row is as the claim left it.
            event = await self.get(event_id)
            if event is None:
                raise StoreError(f"claimed event {event_id} vanished before it was read")
            events.append(event)
        # The aggregate's order is not promised; the port promises earliest due first.
        events.sort(key=lambda event: event.next_attempt_at)
        return events

    async def record_outcomes(self, worker_id: str, updates: Sequence[OutcomeUpdate]) -> int:
        if not updates:
            return 0
        # Built on the event loop, so the SQLite thread runs almost no Python (see ops.claim_due).
        attempts, outcomes = ops.outcome_batches(updates)
        return await self._run(
            lambda conn: ops.record_outcomes(conn, self._now(), worker_id, attempts, outcomes)
        )

    async def release(self, worker_id: str, event_ids: Sequence[str]) -> int:
        if not event_ids:
            return 0
        ids = ops.id_batch(event_ids)

        def release_now(conn: sqlite3.Connection) -> int:
            now = self._now()
            return ops.reschedule(conn, now, worker_id, ids, due_at=now)

        return await self._run(release_now)

    async def reschedule(self, worker_id: str, event_ids: Sequence[str], due_at: datetime) -> int:
        due = to_micros(due_at)
        if not event_ids:
            return 0
        ids = ops.id_batch(event_ids)
        return await self._run(lambda conn: ops.reschedule(conn, self._now(), worker_id, ids, due))

    async def recover_expired_leases(self) -> int:
        return await self._run(lambda conn: ops.recover_expired_leases(conn, self._now()))

    async def cancel(self, event_id: str) -> CancelResult:
        return await self._run(lambda conn: ops.cancel(conn, self._now(), event_id))

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: Collection[str] | None = None
    ) -> int:
        wanted = source_set(sources)
        return await self._run(
            lambda conn: ops.cancel_by_external_id(conn, self._now(), external_job_id, wanted)
        )

    async def get(self, event_id: str) -> Event | None:
        return await self._run(partial(ops.get, event_id=event_id))

    async def find_by_external_id(
        self,
        external_job_id: str,
        limit: int = 100,
        *,
        sources: Collection[str] | None = None,
    ) -> list[Event]:
        wanted = source_set(sources)
        return await self._run(
            partial(
                ops.find_by_external_id,
                external_job_id=external_job_id,
                limit=limit,
                sources=wanted,
            )
        )

    async def count_by_status(
        self, sources: Collection[str] | None = None
    ) -> Mapping[EventStatus, int]:
        return await self._run(partial(listing.count_by_status, sources=source_set(sources)))

    async def list_events(
        self, query: EventQuery, limit: int, after: Cursor | None = None
    ) -> EventPage:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        return await self._run(partial(listing.list_events, query=query, limit=limit, after=after))

    async def redeliver(self, event_id: str, now: datetime) -> RedeliverResult:
        moment = to_micros(now)
        return await self._run(partial(ops.redeliver, now=moment, event_id=event_id))

    async def redeliver_dead_letters(
        self,
        *,
        sources: Collection[str] | None,
        scheduled_from: datetime | None,
        scheduled_to: datetime | None,
        now: datetime,
        limit: int = 10_000,
    ) -> int:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        work = partial(
            listing.redeliver_dead_letters,
            now=to_micros(now),
            sources=source_set(sources),
            scheduled=(optional_micros(scheduled_from), optional_micros(scheduled_to)),
            limit=limit,
        )
        return await self._run(work)

    async def next_due_at(self) -> datetime | None:
        return await self._run(ops.next_due_at)

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        return await self._run(partial(ops.attempts, event_id=event_id))

    async def delete_terminal_before(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        limit = to_micros(cutoff)
        total = 0
        # One transaction per batch, each a separate job on the SQLite thread, so claims and
        # inserts queued meanwhile run between batches instead of waiting for the whole purge.
        while True:
            deleted = await self._run(
                partial(ops.delete_terminal_batch, cutoff=limit, batch_size=batch_size)
            )
            total += deleted
            if deleted < batch_size:
                return total

    def _now(self) -> int:
        return to_micros(self._clock.now())

    def _connect(self) -> None:
        self._conn = connect(self._path)

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # The last connection to close checkpoints the WAL into the database file.
            conn.close()

    def _on_connection(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreUnavailable("the SQLite event store is closed")
        return work(self._conn)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(partial(self._on_connection, work))

    async def _submit(self, work: Callable[[], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StoreUnavailable("the SQLite event store is not open")
        try:
            fut = asyncio.get_running_loop().run_in_executor(executor, work)
        except RuntimeError as exc:  # close() shut the executor between the check and here
            raise StoreUnavailable("the SQLite event store is closed") from exc
        # If the awaiting task is cancelled, the job still runs to its end on the thread and
        # commits or rolls back whole: a cancelled claim leaves a lease that expires normally.
        with wrap_exceptions():
            return await fut
