"""The embedded event store: one SQLite file in WAL mode, driven from one dedicated thread."""

from __future__ import annotations

import asyncio
import contextlib
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
from timefuse.adapters.sqlite.rows import (
    from_micros,
    micros_of_seconds,
    optional_micros,
    to_micros,
)
from timefuse.adapters.sqlite.schedules import SqliteSchedules
from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.clock import Clock
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    AttemptRecord,
    CancelResult,
    Capabilities,
    ClaimBatch,
    ClaimRef,
    ClaimRequest,
    DueFilter,
    EventPage,
    EventQuery,
    MoveDueResult,
    NextDue,
    OutcomeUpdate,
    RedeliverResult,
    StoreError,
    StoreUnavailable,
    WorkerBeat,
    WorkerRecord,
)

T = TypeVar("T")

# How often a dispatcher looks for commits by other processes (an API process's submissions):
# a pragma on this process's own connection, so about 40 cheap calls a second.
WATCH_SECONDS = 0.025


class _SystemTime:
    # Adapters may not import each other (import-linter), so the default clock is this twin
    # of adapters.system.clock.SystemClock; the composition root passes the shared one.
    def now(self) -> datetime:
        return datetime.now(UTC)


class SqliteEventStore(SqliteSchedules):
    """:class:`timefuse.ports.store.StoreAdapter` on a local SQLite file.

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

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(shared=False, due_watcher=self)

    async def watch_due(
        self, notify: Callable[[datetime | None], None], stop: asyncio.Event
    ) -> None:
        """Wake the dispatcher when another process commits to the file: ``timefuse api`` and
        ``timefuse dispatch`` on one file then work as ``timefuse serve`` does, woken within
        :data:`WATCH_SECONDS` of a submission rather than at the next poll. Only commits by
        other connections change ``PRAGMA data_version``, so this process's own writes wake
        nothing."""
        last: int | None = None
        while not stop.is_set():
            try:
                version = await self._run(ops.data_version)
            except StoreError:
                version = None  # closed or failing: the dispatcher's own calls say so
            if last is not None and version is not None and version != last:
                notify(None)
            last = version if version is not None else last
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_SECONDS)

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

    # -- submissions -------------------------------------------------------------------------

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        return await self._run(partial(ops.insert_many, events=events))

    # -- claims and outcomes -----------------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        def work(conn: sqlite3.Connection) -> tuple[str, int]:
            now = self._now()
            return ops.claim(conn, now, request), now

        claimed, now = await self._run(work)
        # Decoded here, on the event loop, not on the SQLite thread (see ops.claim).
        events, reread = ops.claimed_events(claimed)
        for event_id in reread:
            # Still under the claim just taken, so the row is as the claim left it.
            event = await self._run(partial(ops.get, event_id=event_id, sources=None))
            if event is None:
                raise StoreError(f"claimed event {event_id} vanished before it was read")
            events.append(event)
        # The aggregate's order is not promised; the port promises earliest due first.
        events.sort(key=lambda event: (event.next_attempt_at, event.id))
        return ClaimBatch(events, from_micros(now))

    async def next_due(self, due: DueFilter) -> NextDue:
        def work(conn: sqlite3.Connection) -> NextDue:
            now = self._now()
            return NextDue(ops.next_due_at(conn, due), from_micros(now))

        return await self._run(work)

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        # Built on the event loop, so the SQLite thread runs almost no Python (see ops.claim).
        batch, callbacks = ops.outcome_batch(updates), ops.callback_rows(updates)
        return await self._run(
            lambda conn: ops.record_outcomes(conn, self._now(), batch, callbacks)
        )

    async def hand_back(self, refs: Sequence[ClaimRef], delay_seconds: float) -> int:
        batch, delay = ops.ref_batch(refs), micros_of_seconds(delay_seconds)
        return await self._run(lambda conn: ops.hand_back(conn, self._now(), batch, delay))

    async def extend_leases(self, refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        batch, lease = ops.ref_batch(refs), micros_of_seconds(lease_seconds)
        return await self._run(lambda conn: ops.extend_leases(conn, self._now(), batch, lease))

    # -- coordination ------------------------------------------------------------------------

    async def acquire_leadership(self, role: str, holder: str, ttl_seconds: float) -> bool:
        ttl = micros_of_seconds(ttl_seconds)
        return await self._run(
            lambda conn: ops.acquire_leadership(conn, self._now(), role, holder, ttl)
        )

    async def release_leadership(self, role: str, holder: str) -> None:
        await self._run(partial(ops.release_leadership, role=role, holder=holder))

    async def heartbeat(self, beat: WorkerBeat) -> None:
        await self._run(lambda conn: ops.heartbeat(conn, self._now(), beat))

    async def workers(self) -> list[WorkerRecord]:
        return await self._run(lambda conn: ops.workers(conn, self._now()))

    async def forget_workers(self, silent_seconds: float) -> int:
        return await self._run(
            lambda conn: ops.forget_workers(conn, self._now() - micros_of_seconds(silent_seconds))
        )

    async def recover_expired_leases(
        self, dead_workers: Collection[str] = (), *, silent_seconds: float | None = None
    ) -> int:
        dead = frozenset(dead_workers)
        silent = None if silent_seconds is None else micros_of_seconds(silent_seconds)

        def work(conn: sqlite3.Connection) -> int:
            now = self._now()
            before = None if silent is None else now - silent
            return ops.recover_lost_claims(conn, now, dead, before)

        return await self._run(work)

    # -- queries -----------------------------------------------------------------------------

    async def get(self, event_id: str, *, sources: frozenset[str] | None) -> Event | None:
        return await self._run(partial(ops.get, event_id=event_id, sources=sources))

    async def get_many(self, event_ids: Sequence[str]) -> list[Event]:
        return await self._run(partial(ops.get_many, event_ids=event_ids))

    async def find_by_external_id(
        self, external_job_id: str, limit: int, *, sources: frozenset[str] | None
    ) -> list[Event]:
        return await self._run(
            partial(
                ops.find_by_external_id,
                external_job_id=external_job_id,
                limit=limit,
                sources=sources,
            )
        )

    async def list_events(self, query: EventQuery, limit: int, after: Cursor | None) -> EventPage:
        return await self._run(partial(listing.list_events, query=query, limit=limit, after=after))

    async def count_by_status(self, sources: frozenset[str] | None) -> Mapping[EventStatus, int]:
        return await self._run(partial(listing.count_by_status, sources=sources))

    async def pending_by_source(self, sources: frozenset[str]) -> Mapping[str, int]:
        return await self._run(partial(listing.pending_by_source, sources=sources))

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        return await self._run(partial(ops.attempts, event_id=event_id))

    async def count_due_by_type(self) -> Mapping[str, int]:
        return await self._run(lambda conn: ops.count_due_by_type(conn, self._now()))

    # -- operator actions --------------------------------------------------------------------

    async def cancel(
        self, event_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> CancelResult:
        return await self._run(lambda conn: ops.cancel(conn, self._now(), event_id, sources, when))

    async def amend(
        self, event: Event, *, basis: AmendBasis, when: frozenset[EventStatus]
    ) -> AmendResult:
        return await self._run(lambda conn: ops.amend(conn, event, basis, when))

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> int:
        return await self._run(
            lambda conn: ops.cancel_by_external_id(
                conn, self._now(), external_job_id, sources, when
            )
        )

    async def move_due(
        self,
        event_id: str,
        due_at: datetime,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> MoveDueResult:
        moment, due = to_micros(now), to_micros(due_at)
        return await self._run(
            lambda conn: ops.move_due(conn, moment, due, event_id, sources, when)
        )

    async def redeliver(
        self,
        event_id: str,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> RedeliverResult:
        moment = to_micros(now)
        return await self._run(lambda conn: ops.redeliver(conn, moment, event_id, sources, when))

    async def redeliver_matching(
        self,
        *,
        status: EventStatus,
        sources: frozenset[str] | None,
        scheduled: tuple[datetime | None, datetime | None],
        now: datetime,
        limit: int,
    ) -> int:
        work = partial(
            listing.redeliver_matching,
            now=to_micros(now),
            status=status,
            sources=sources,
            scheduled=(optional_micros(scheduled[0]), optional_micros(scheduled[1])),
            limit=limit,
        )
        return await self._run(work)

    # -- retention ---------------------------------------------------------------------------

    async def delete_finished_before(
        self,
        cutoff: datetime,
        statuses: frozenset[EventStatus],
        batch_size: int,
        *,
        wait: bool = False,  # one writer: no other pass to wait for
    ) -> int:
        limit = to_micros(cutoff)
        total = 0
        # One transaction per batch, each a separate job on the SQLite thread, so claims and
        # inserts queued meanwhile run between batches instead of waiting for the whole purge.
        while True:
            deleted = await self._run(
                partial(
                    ops.delete_finished_batch,
                    cutoff=limit,
                    statuses=statuses,
                    batch_size=batch_size,
                )
            )
            total += deleted
            if deleted < batch_size:
                return total

    def _now(self) -> int:
        return to_micros(self._clock.now())

    def _connect(self) -> None:
        conn = connect(self._path)
        try:
            ops.fill_destination_keys(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

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
