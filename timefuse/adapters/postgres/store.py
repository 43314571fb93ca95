"""The production event store: PostgreSQL through a psycopg 3 connection pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from timefuse.adapters.postgres import connection, listing, queries, retention
from timefuse.adapters.postgres.connection import (
    Connection,
    fetch_binary,
    fetch_value,
    notify_due,
)
from timefuse.adapters.postgres.errors import wrap_exceptions
from timefuse.adapters.postgres.inserts import insert_events
from timefuse.adapters.postgres.leadership import AdvisoryLeadership
from timefuse.adapters.postgres.listener import Notify, watch_due
from timefuse.adapters.postgres.migrations import apply_migrations, load_migrations, schema_version
from timefuse.adapters.postgres.partitions import (
    check_granularity,
    create_partitions,
    periods_ahead,
)
from timefuse.adapters.postgres.rows import (
    aware,
    outcome_arrays,
    row_to_attempt,
    row_to_event,
)
from timefuse.domain.event import Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.status import EventStatus
from timefuse.ports.store import (
    AttemptRecord,
    CancelResult,
    Cursor,
    EventPage,
    EventQuery,
    OutcomeUpdate,
    RedeliverResult,
    StoreError,
    StoreUnavailable,
    source_set,
)

log = structlog.get_logger("timefuse.postgres")

# How long a call waits for a pooled connection before the store counts as unavailable.
POOL_TIMEOUT_SECONDS = 10.0


class PostgresEventStore:
    """:class:`timefuse.ports.store.EventStore` on PostgreSQL, safe for many processes at once.

    :param url: a libpq connection string or ``postgresql://`` URL.
    :param pool_size: the most connections this store opens (the pool starts with one).
    :param partition_granularity: ``"day"``, ``"week"`` or ``"month"``: the span of one
        partition of the events table.
    :param partitions_ahead: how many partitions :meth:`create_partitions_ahead` keeps ready
        beyond the current one.
    :param migrate_on_open: whether :meth:`open` applies missing migrations first. On by
        default so a fresh database just works; turn it off where only ``timefuse migrate``
        (or a role with DDL rights) should change the schema.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        partition_granularity: str = "day",
        partitions_ahead: int = 7,
        migrate_on_open: bool = True,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        if partitions_ahead < 0:
            raise ValueError(f"partitions_ahead can't be negative, got {partitions_ahead}")
        self._url = url
        self._pool_size = pool_size
        self._granularity = check_granularity(partition_granularity)
        self._partitions_ahead = partitions_ahead
        self._migrate_on_open = migrate_on_open
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._leadership: AdvisoryLeadership | None = None

    async def open(self) -> None:
        """Open the pool; apply missing migrations (see ``migrate_on_open``); create partitions."""
        if self._pool is not None:
            return
        if self._migrate_on_open:
            await self.migrate()
        else:
            await self._check_schema()
        pool = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            kwargs={"autocommit": True},
            configure=connection.configure,
            timeout=POOL_TIMEOUT_SECONDS,
            name="timefuse",
        )
        try:
            with wrap_exceptions():
                await pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
            self._pool = pool
            await self._create_partitions_on_open()
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        leadership, self._leadership = self._leadership, None
        with wrap_exceptions():
            if leadership is not None:
                await leadership.close()
            if pool is not None:
                await pool.close()

    async def migrate(self) -> list[str]:
        """Apply the migrations the database lacks (safe to run from many processes at once).

        Works on a store that is not open (``timefuse migrate``); returns what was applied.
        """
        with wrap_exceptions():
            async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                return await apply_migrations(conn)

    async def create_partitions_ahead(self) -> list[str]:
        """Create the partitions of the current period and the next ``partitions_ahead``.

        Idempotent, and safe in several processes at once. Meant for maintenance, once a day
        or more often; rows that meanwhile landed in the DEFAULT partition are moved over.
        """
        async with self._connection() as conn:
            now = await fetch_value(conn, queries.NOW)
            periods = periods_ahead(now, self._granularity, self._partitions_ahead)
            return await create_partitions(conn, periods)

    def leadership(self) -> AdvisoryLeadership:
        """Maintenance leadership for this database (closed with the store)."""
        if self._leadership is None:
            self._leadership = AdvisoryLeadership(self._url)
        return self._leadership

    async def watch_due(self, notify: Notify, stop: asyncio.Event) -> None:
        """Call ``notify(due_at)`` whenever any process inserts events, until ``stop`` is set.

        ``due_at`` is the batch's earliest ``next_attempt_at``, or ``None`` for "look now"
        (events released or recovered, or a reconnection that may have missed some).
        """
        await watch_due(self._url, notify, stop)

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        if not events:
            return {}
        async with self._connection() as conn, conn.transaction():
            return await insert_events(conn, events)

    async def claim_due(self, worker_id: str, limit: int, lease_seconds: float) -> list[Event]:
        if limit <= 0:
            return []
        params = {"worker": worker_id, "lease": float(lease_seconds), "limit": limit}
        async with self._connection() as conn:
            rows = await fetch_binary(conn, queries.CLAIM_DUE, params)
        # RETURNING gives rows in no promised order; the port promises earliest due first.
        events = [row_to_event(row) for row in rows]
        events.sort(key=lambda event: event.next_attempt_at)
        return events

    async def record_outcomes(self, worker_id: str, updates: Sequence[OutcomeUpdate]) -> int:
        if not updates:
            return 0
        # Only the first outcome per event can apply (it clears the lease), so later ones for
        # the same event are dropped here instead of joining twice in the statement.
        unique: dict[str, OutcomeUpdate] = {}
        for update in updates:
            unique.setdefault(update.event_id, update)
        params: dict[str, Any] = {**outcome_arrays(list(unique.values())), "owner": worker_id}
        async with self._connection() as conn:
            cursor = await conn.execute(queries.RECORD_OUTCOMES, params)
            return cursor.rowcount

    async def release(self, worker_id: str, event_ids: Sequence[str]) -> int:
        return await self._reschedule(worker_id, event_ids, None)

    async def reschedule(self, worker_id: str, event_ids: Sequence[str], due_at: datetime) -> int:
        return await self._reschedule(worker_id, event_ids, aware(due_at))

    async def recover_expired_leases(self) -> int:
        params = {"error": LEASE_EXPIRED_ERROR}
        return await self._update_and_notify(queries.RECOVER_EXPIRED_LEASES, params, None)

    async def redeliver(self, event_id: str, now: datetime) -> RedeliverResult:
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(queries.REDELIVER, {"id": event_id, "now": aware(now)})
            row = await cursor.fetchone()
            if row is None:
                raise StoreError("the redeliver statement returned no row")
            redelivered, exists = row
            if redelivered:
                await notify_due(conn, now)
        if redelivered:
            return RedeliverResult.REDELIVERED
        return RedeliverResult.NOT_REDELIVERABLE if exists else RedeliverResult.NOT_FOUND

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
        wanted = source_set(sources)
        async with self._connection() as conn, conn.transaction():
            scheduled = (scheduled_from, scheduled_to)
            count = await listing.redeliver_dead_letters(conn, now, wanted, scheduled, limit)
            if count:
                await notify_due(conn, now)
        return count

    async def cancel(self, event_id: str) -> CancelResult:
        async with self._connection() as conn:
            cursor = await conn.execute(queries.CANCEL, {"id": event_id})
            row = await cursor.fetchone()
        if row is None:
            raise StoreError("the cancel statement returned no row")
        cancelled, exists = row
        if cancelled:
            return CancelResult.CANCELLED
        return CancelResult.NOT_PENDING if exists else CancelResult.NOT_FOUND

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: Collection[str] | None = None
    ) -> int:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return 0
        params = {"external_job_id": external_job_id, "sources": _source_array(wanted)}
        async with self._connection() as conn:
            return (await conn.execute(queries.CANCEL_BY_EXTERNAL_ID, params)).rowcount

    async def get(self, event_id: str) -> Event | None:
        async with self._connection() as conn:
            rows = await fetch_binary(conn, queries.GET, {"id": event_id})
        return row_to_event(rows[0]) if rows else None

    async def find_by_external_id(
        self,
        external_job_id: str,
        limit: int = 100,
        *,
        sources: Collection[str] | None = None,
    ) -> list[Event]:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return []
        params = {
            "external_job_id": external_job_id,
            "limit": limit,
            "sources": _source_array(wanted),
        }
        async with self._connection() as conn:
            rows = await fetch_binary(conn, queries.FIND_BY_EXTERNAL_ID, params)
        return [row_to_event(row) for row in rows]

    async def count_by_status(
        self, sources: Collection[str] | None = None
    ) -> Mapping[EventStatus, int]:
        wanted = source_set(sources)
        async with self._connection() as conn:
            return await listing.count_by_status(conn, wanted)

    async def list_events(
        self, query: EventQuery, limit: int, after: Cursor | None = None
    ) -> EventPage:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        async with self._connection() as conn:
            return await listing.list_events(conn, query, limit, after)

    async def next_due_at(self) -> datetime | None:
        async with self._connection() as conn:
            value: datetime | None = await fetch_value(conn, queries.NEXT_DUE_AT)
        return value

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        async with self._connection() as conn:
            cursor = await conn.execute(queries.ATTEMPTS, {"id": event_id})
            return [row_to_attempt(row) for row in await cursor.fetchall()]

    async def delete_terminal_before(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if cutoff.tzinfo is None:
            raise ValueError(f"the event store needs timezone-aware datetimes, got {cutoff!r}")
        async with self._connection() as conn:
            return await retention.delete_terminal_before(conn, cutoff, batch_size)

    async def _create_partitions_on_open(self) -> None:
        try:
            await self.create_partitions_ahead()
        except StoreUnavailable as exc:
            # Not worth failing a start over: DEFAULT takes every row meanwhile, and the next
            # call (maintenance's) creates the partitions.
            log.warning("could not create partitions ahead", error=str(exc))

    async def _check_schema(self) -> None:
        latest = len(load_migrations())
        with wrap_exceptions():
            async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                current = await schema_version(conn)
        if current < latest:
            raise StoreError(
                f"the database schema is at version {current}, this timefuse needs {latest}: "
                "run `timefuse migrate` first"
            )

    async def _reschedule(
        self, worker_id: str, event_ids: Sequence[str], due_at: datetime | None
    ) -> int:
        if not event_ids:
            return 0
        params = {"ids": list(event_ids), "owner": worker_id, "due_at": due_at}
        return await self._update_and_notify(queries.RESCHEDULE, params, due_at)

    async def _update_and_notify(
        self, query: str, params: dict[str, Any], due_at: datetime | None
    ) -> int:
        """Run a statement that makes events due (at ``due_at``, or now); wake listeners if any."""
        async with self._connection() as conn, conn.transaction():
            changed = (await conn.execute(query, params)).rowcount
            if changed:
                await notify_due(conn, due_at)
        return changed

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection (autocommit); any psycopg error leaves as a port exception."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the PostgreSQL event store is not open")
        with wrap_exceptions():
            async with pool.connection() as conn:
                yield conn


def _source_array(sources: frozenset[str] | None) -> list[str] | None:
    """``sources`` as a ``text[]`` parameter: ``None`` (any source) stays NULL."""
    return None if sources is None else sorted(sources)
