"""The production event store: PostgreSQL through a psycopg 3 connection pool."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from timefuse.adapters.postgres import connection, due_floor, listing, queries, retention
from timefuse.adapters.postgres.connection import (
    Connection,
    fetch_binary,
    fetch_value,
    notify_due,
)
from timefuse.adapters.postgres.errors import (
    lost_to_a_moved_row,
    run_again_while,
    wrap_exceptions,
)
from timefuse.adapters.postgres.inserts import insert_events, past_attaching_partitions
from timefuse.adapters.postgres.listener import Notify, watch_due
from timefuse.adapters.postgres.migrations import (
    apply_migrations,
    fill_destination_keys,
    load_migrations,
    schema_version,
)
from timefuse.adapters.postgres.partitions import (
    check_granularity,
    create_partitions,
    periods_ahead,
)
from timefuse.adapters.postgres.rows import (
    aware,
    event_values,
    outcome_arrays,
    ref_arrays,
    row_to_attempt,
    row_to_event,
)
from timefuse.adapters.postgres.schedules import PostgresSchedules
from timefuse.domain.callback import lease_expiry_callback
from timefuse.domain.event import AMENDED_COLUMN_NAMES, EVENT_COLUMN_NAMES, Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.status import EventStatus
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    AttemptRecord,
    CancelResult,
    Capabilities,
    ClaimBatch,
    ClaimRef,
    ClaimRequest,
    Cursor,
    DueFilter,
    EventPage,
    EventQuery,
    MoveDueResult,
    NextDue,
    OutcomeUpdate,
    RedeliverResult,
    SharedBreaker,
    SharedLimits,
    StoreError,
    StoreUnavailable,
    WorkerBeat,
    WorkerRecord,
)

log = structlog.get_logger("timefuse.postgres")
_T = TypeVar("_T")

# How long a call waits for a pooled connection before the store counts as unavailable.
POOL_TIMEOUT_SECONDS = 10.0
# A destination key's port, as the claim statement strips it to find a rule for the bare host.
_PORT_SUFFIX = re.compile(r":[0-9]+$")
# How long reads skip a read replica that just failed one (see PostgresEventStore._read).
REPLICA_REST_SECONDS = 5.0
# How long a read waits for a replica connection before the primary answers it instead.
REPLICA_POOL_TIMEOUT_SECONDS = 2.0
# A claim within budgets looks at this many due rows per event it may take.
SCAN_FACTOR = 4
# A shared claim's round, its destinations known and locked, locks this many of their earliest
# due rows per event their rules let it take (some may be held by a source's open breaker).
SHARED_SCAN_FACTOR = 2
# Rounds of one shared claim, each past the destinations the earlier ones found full.
SHARED_CLAIM_ROUNDS = 4
# After rounds that looked past full destinations and took LOOK_PAST_FREE_SECONDS or more,
# claims make one round only for ONE_ROUND_COST_FACTOR times as long as those rounds took (up
# to ONE_ROUND_MOST_SECONDS), and for ONE_ROUND_SECONDS at least when they claimed nothing
# there: a look past a backlog reads all of it (a million rows: seconds), and done at every
# claim it takes the claims' time, so that a backlog, once there, never drains. Another
# destination's events falling due meanwhile wait that much longer.
ONE_ROUND_SECONDS = 1.0
ONE_ROUND_COST_FACTOR = 20
ONE_ROUND_MOST_SECONDS = 300.0
LOOK_PAST_FREE_SECONDS = 0.25
# A claim that meets a row a concurrent PATCH has just moved to another partition fails
# rather than skipping it; it is run again at once, up to this many times in all.
MOVED_ROW_TRIES = 4


class PostgresEventStore(PostgresSchedules):
    """:class:`timefuse.ports.store.StoreAdapter` on PostgreSQL, safe for many processes at once.

    :param url: a libpq connection string or ``postgresql://`` URL.
    :param pool_size: the most connections this store opens (the pool starts with one).
    :param partition_granularity: ``"day"``, ``"week"`` or ``"month"``: the span of one
        partition of the events table.
    :param partitions_ahead: how many partitions :meth:`prepare_storage` keeps ready beyond
        the current one.
    :param migrate_on_open: whether :meth:`open` applies missing migrations first. On by
        default so a fresh database just works; turn it off where only ``timefuse migrate``
        (or a role with DDL rights) should change the schema.
    :param read_url: a read replica of the same database (streaming replication): listings,
        searches by external id, attempts and statistics are read there, with a pool of its
        own; claims, writes and reads by id (which follow writes) stay on ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        partition_granularity: str = "day",
        partitions_ahead: int = 7,
        migrate_on_open: bool = True,
        read_url: str | None = None,
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
        self._read_url = read_url or None
        self._read_pool: AsyncConnectionPool[Connection] | None = None
        self._replica_rests_until = 0.0
        self._one_round_until = 0.0
        self._floor = due_floor.DueFloor()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            shared=True,
            due_watcher=self,
            storage_planner=self,
            migrator=self,
            limits_sharer=self,
            replica=self if self._read_url else None,
        )

    async def open(self) -> None:
        """Open the pool; apply missing migrations (see ``migrate_on_open``); create partitions."""
        if self._pool is not None:
            return
        if self._migrate_on_open:
            await self.migrate()
        else:
            await self._check_schema()
        pool = _pool(self._url, self._pool_size, connection.configure, "timefuse")
        reader = None
        if self._read_url:
            reader = _pool(
                self._read_url,
                self._pool_size,
                connection.configure_reader,
                "reads",
                timeout=REPLICA_POOL_TIMEOUT_SECONDS,
            )
        try:
            with wrap_exceptions():
                await pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
                if reader is not None:
                    await reader.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)
            self._pool, self._read_pool = pool, reader
            await self._prepare_storage_on_open()
        except BaseException:
            self._pool = self._read_pool = None
            await pool.close()
            if reader is not None:
                await reader.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        reader, self._read_pool = self._read_pool, None
        with wrap_exceptions():
            if pool is not None:
                await pool.close()
            if reader is not None:
                await reader.close()

    async def migrate(self) -> list[str]:
        """Apply the migrations the database lacks (safe to run from many processes at once).

        Works on a store that is not open (``timefuse migrate``); returns what was applied.
        """
        with wrap_exceptions():
            async with await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, **connection.KEEPALIVES
            ) as conn:
                applied = await apply_migrations(conn)
                await fill_destination_keys(conn)
                return applied

    async def prepare_storage(self) -> list[str]:
        """Create the partitions of the current period and the next ``partitions_ahead``, and
        fold the status counters. Idempotent, and safe in several processes at once."""
        async with self._connection() as conn:
            now = await fetch_value(conn, queries.NOW)
            periods = periods_ahead(now, self._granularity, self._partitions_ahead)
            created = await create_partitions(conn, periods)
            await conn.execute(queries.COMPACT_STATUS_COUNTS)
            return created

    async def watch_due(self, notify: Notify, stop: asyncio.Event) -> None:
        """Call ``notify(due_at)`` whenever any process makes events due, until ``stop``.

        ``due_at`` is the batch's earliest ``next_attempt_at``, or ``None`` for "look now"
        (events handed back or recovered, or a reconnection that may have missed some).
        """

        def heard(due_at: datetime | None) -> None:
            self._floor.hear(due_at)
            notify(due_at)

        await watch_due(self._url, heard, stop, self._floor.listen)

    async def _due_floor(self) -> dict[str, Any]:
        """The floor this process's claims read the due index from (see ``due_floor``),
        looked up first when that is due."""
        floor = self._floor
        if floor.lookup_due(time.monotonic()):
            found = None
            floor.begin_lookup()
            try:
                async with self._connection() as conn:
                    params = {"margin": due_floor.MARGIN_SECONDS}
                    row = await (await conn.execute(queries.DUE_FLOOR, params)).fetchone()
                found = None if row is None else (row[0], str(row[1]))
            finally:
                floor.end_lookup(found, time.monotonic())
        return floor.params()

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")

    async def replica_lag(self) -> float:
        """Seconds the read replica is behind the primary: 0 once it has replayed all it
        received, else the age of the last transaction it replayed (0 if it is no replica)."""
        async with self._connection(reads=True) as conn:
            lag = await fetch_value(conn, queries.REPLICA_LAG)
        return float(lag or 0.0)

    # -- submissions -------------------------------------------------------------------------

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        async def insert() -> dict[str, str]:
            async with self._connection() as conn, conn.transaction():
                return await insert_events(conn, events)

        return await past_attaching_partitions(insert)

    # -- claims and outcomes -----------------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        floor = await self._due_floor()
        if request.shared is not None:
            return await self._claim_shared(request, request.shared, floor)
        return await _past_moved_rows(partial(self._claim_due, request, floor))

    async def _claim_due(self, request: ClaimRequest, floor: dict[str, Any]) -> ClaimBatch:
        params: dict[str, Any] = {
            **_due_params(request.due),
            **floor,
            "worker": request.worker,
            "lease": float(request.lease_seconds),
            "limit": request.limit,
        }
        statement = queries.CLAIM_DUE
        if request.budgets or request.default_budget is not None:
            statement = queries.CLAIM_DUE_IN_BUDGETS
            params.update(
                scan=request.limit * SCAN_FACTOR,
                budget_keys=list(request.budgets),
                budgets=list(request.budgets.values()),
                default_budget=request.default_budget,
            )
        async with self._connection() as conn:
            rows = await fetch_binary(conn, statement, params)
            if not rows:
                store_now = await fetch_value(conn, queries.NOW)
        events = [row_to_event(row[:-1]) for row in rows]
        if rows:
            store_now = rows[0][-1]
        # RETURNING gives rows in no promised order; the port promises earliest due first.
        events.sort(key=lambda event: (event.next_attempt_at, event.id))
        return ClaimBatch(events, store_now)

    async def _claim_shared(
        self, request: ClaimRequest, shared: SharedLimits, floor: dict[str, Any]
    ) -> ClaimBatch:
        # A claim looks at the earliest due events only (scan rows). When their destinations
        # are full (at their cap, out of tokens), the next round leaves those out and looks
        # further: one destination's backlog never hides the others' due events. A destination
        # that took some but not all it may (the round read no further than its horizon) is
        # looked at again, counting what it took as this worker's own.
        events: list[Event] = []
        probes: set[str] = set()
        store_now: datetime | None = None
        taken: Counter[str] = Counter()  # events per destination the rounds so far claimed
        done: set[str] = set()  # destinations found full, or that took all they may
        rounds = SHARED_CLAIM_ROUNDS if time.monotonic() >= self._one_round_until else 1
        past_the_first = 0  # events the rounds after the first claimed
        looking_past = 0.0  # seconds the rounds after the first took
        hold = 0.0  # at least this long, the next claims make one round only
        for round_number in range(rounds):
            started = time.monotonic()
            wanted = request.limit - len(events)
            round_shared, round_request = _after_taken(shared, request, taken)
            round_params = {**_shared_claim_params(round_shared, round_request), **floor}
            round_params.update(excluded=sorted({*round_params["excluded"], *done}),
                                limit=wanted, scan=wanted)  # fmt: skip
            claim_round = partial(
                self._claim_shared_round,
                round_params,
                partial(_most_claimable, round_shared, round_request),
                want_now=store_now is None,
            )
            try:
                keys, rows, round_now = await _past_moved_rows(claim_round)
            except StoreError as exc:
                if not events:
                    raise
                # The rounds before committed their claims: they are this claim's, or they would
                # wait out their leases unattempted (and a last attempt would be dead-lettered).
                # The next claims look once only for a while: a round that reads past backlogs
                # may be what fails (a statement timeout), and a failing store fails them anyway.
                hold = ONE_ROUND_SECONDS
                looking_past += time.monotonic() - started
                log.warning("claim round failed; keeping the rounds before", error=str(exc))
                break
            if round_number:
                looking_past += time.monotonic() - started
            store_now = store_now or round_now
            claimed = [row_to_event(row[:-3]) for row in rows]
            if rows:
                store_now = rows[0][-1]
                past_the_first += len(rows) if round_number else 0
                events.extend(claimed)
                probes.update(row[0] for row in rows if row[-2])
            if not keys:
                if round_number and not past_the_first:
                    # Looking past the full destinations found nothing to claim: the next claims
                    # look once only, for a while. Each further round reads the full ones' whole
                    # backlog (a million rows in a herd) to skip it.
                    hold = ONE_ROUND_SECONDS
                break
            if len(events) >= request.limit:
                break
            got = Counter(event.destination_key for event in claimed)
            taken.update(got)
            room = {
                event.destination_key: row[-3] for event, row in zip(claimed, rows, strict=True)
            }
            # Looked at again: a destination that took less than its room (its rows ran out at
            # the round's horizon, or none more are due: then no round finds it).
            done.update(key for key in keys if not got[key] or got[key] >= room[key])
        if hold or looking_past >= LOOK_PAST_FREE_SECONDS:
            hold = max(hold, min(ONE_ROUND_COST_FACTOR * looking_past, ONE_ROUND_MOST_SECONDS))
        if hold:
            self._one_round_until = time.monotonic() + hold
        if past_the_first:
            # A round's event whose lease ran out and was recovered before a later round took
            # it again: the later claim (its lease the live one) stands.
            latest = {event.id: event for event in sorted(events, key=lambda e: e.claim_count)}
            events = list(latest.values())
        events.sort(key=lambda event: (event.next_attempt_at, event.id))
        assert store_now is not None
        return ClaimBatch(events, store_now, frozenset(probes))

    async def _claim_shared_round(
        self,
        params: dict[str, Any],
        most_claimable: Callable[[str], int | None],
        *,
        want_now: bool,
    ) -> tuple[list[str], list[Any], datetime | None]:
        """One round of a shared claim: the due destinations looked at, the rows claimed, and
        (``want_now``) the store's now when none were: the rows carry it otherwise."""
        async with self._connection() as conn, conn.transaction():
            found = await (await conn.execute(queries.SHARED_DUE_KEYS, params)).fetchone()
            if found is None:
                raise StoreError("the due-destinations statement returned no row")
            keys, looked_at, looked_id = sorted(found[0] or []), found[1], found[2]
            rows = []
            if keys:
                await conn.execute(queries.LOCK_DESTINATIONS, {**params, "keys": keys})
                # No more rows are read (and locked) than these destinations could take: a
                # capped destination's backlog costs a claim its cap, not the claim's limit.
                # At least as many as the destinations were found in, though: each of them
                # then has its earliest due rows read, so none is passed over unread. The
                # statement reads as far as the last row they were found in, or the :scan-th
                # due row as it finds them once the locks are held if that is further (claims
                # that queued behind these locks took what they took), and no further.
                limit = params["limit"]
                bounds = [most_claimable(key) for key in keys]
                if None not in bounds:
                    limit = max(1, min(limit, sum(b for b in bounds if b is not None)))
                scan = max(limit * SHARED_SCAN_FACTOR, params["scan"])
                claim_params = {**params, "locked": keys, "limit": limit, "scan": scan,
                                "looked_at": looked_at, "looked_id": looked_id}  # fmt: skip
                rows = await fetch_binary(conn, queries.CLAIM_SHARED, claim_params)
            now = await fetch_value(conn, queries.NOW) if want_now and not rows else None
        return keys, rows, now

    async def publish_breaker(self, key: str, *, open: bool) -> None:
        statement = queries.PUBLISH_BREAKER_OPEN if open else queries.PUBLISH_BREAKER_CLOSED
        async with self._connection() as conn:
            await conn.execute(statement, {"key": key})

    async def open_breakers(self) -> list[SharedBreaker]:
        async with self._connection() as conn:
            rows = await (await conn.execute(queries.OPEN_BREAKERS)).fetchall()
        return [SharedBreaker(key, float(seconds), probe_by) for key, seconds, probe_by in rows]

    async def next_due(self, due: DueFilter) -> NextDue:
        params = {**_due_params(due), **await self._due_floor()}
        async with self._connection() as conn:
            cursor = await conn.execute(queries.NEXT_DUE_AT, params)
            row = await cursor.fetchone()
        if row is None:
            raise StoreError("the next-due statement returned no row")
        return NextDue(row[0], row[1])

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        params = outcome_arrays(updates)
        if all(update.callback is None for update in updates):
            async with self._connection() as conn:
                rows = await (await conn.execute(queries.RECORD_OUTCOMES, params)).fetchall()
            return frozenset(str(event_id) for (event_id,) in rows)

        async def record_with_callbacks() -> frozenset[str]:
            async with self._connection() as conn, conn.transaction():
                rows = await (await conn.execute(queries.RECORD_OUTCOMES, params)).fetchall()
                applied = frozenset(str(event_id) for (event_id,) in rows)
                # The notices of the outcomes that applied, inserted as insert_many does (one
                # already stored stays as it is), committed with them or not at all.
                notices = [
                    update.callback
                    for update in updates
                    if update.callback is not None and update.event_id in applied
                ]
                if notices:
                    await insert_events(conn, notices)
                return applied

        # A notice inserted into a partition being attached is refused for a moment: the
        # whole write (rolled back) is made again.
        return await past_attaching_partitions(record_with_callbacks)

    async def hand_back(self, refs: Sequence[ClaimRef], delay_seconds: float) -> int:
        params = {**ref_arrays(refs), "delay": float(delay_seconds)}
        async with self._connection() as conn, conn.transaction():
            changed = (await conn.execute(queries.HAND_BACK, params)).rowcount
            if changed and delay_seconds == 0:
                # Due now: wake the other dispatchers (later ones are found by their plans).
                await notify_due(conn, None)
        return changed

    async def extend_leases(self, refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        params = {**ref_arrays(refs), "lease": float(lease_seconds)}
        async with self._connection() as conn:
            return (await conn.execute(queries.EXTEND_LEASES, params)).rowcount

    # -- coordination ------------------------------------------------------------------------

    async def acquire_leadership(self, role: str, holder: str, ttl_seconds: float) -> bool:
        params = {"role": role, "holder": holder, "ttl": float(ttl_seconds)}
        async with self._connection() as conn:
            row = await (await conn.execute(queries.ACQUIRE_LEADERSHIP, params)).fetchone()
        return row is not None

    async def release_leadership(self, role: str, holder: str) -> None:
        async with self._connection() as conn:
            await conn.execute(queries.RELEASE_LEADERSHIP, {"role": role, "holder": holder})

    async def heartbeat(self, beat: WorkerBeat) -> None:
        params = {
            "worker": beat.worker,
            "roles": list(beat.roles),
            "started_at": aware(beat.started_at),
            "in_flight": beat.in_flight,
        }
        async with self._connection() as conn:
            await conn.execute(queries.HEARTBEAT, params)

    async def workers(self) -> list[WorkerRecord]:
        async with self._connection() as conn:
            rows = await (await conn.execute(queries.WORKERS)).fetchall()
        return [
            WorkerRecord(
                worker=worker,
                roles=tuple(roles),
                started_at=started,
                last_seen=seen,
                silent_seconds=float(silent),
                in_flight=in_flight,
            )
            for worker, roles, started, seen, silent, in_flight in rows
        ]

    async def forget_workers(self, silent_seconds: float) -> int:
        async with self._connection() as conn:
            cursor = await conn.execute(queries.FORGET_WORKERS, {"silent": float(silent_seconds)})
            return cursor.rowcount

    async def recover_expired_leases(
        self, dead_workers: Collection[str] = (), *, silent_seconds: float | None = None
    ) -> int:
        params: dict[str, object] = {"error": LEASE_EXPIRED_ERROR, "dead": sorted(dead_workers)}
        statement = queries.RECOVER_LOST_CLAIMS
        if silent_seconds is not None and dead_workers:  # none named: expired leases only
            params["silent"] = float(silent_seconds)
            statement = queries.RECOVER_LOST_CLAIMS_OF_SILENT
        async with self._connection() as conn, conn.transaction():
            cursor = await conn.execute(statement, params)
            recovered = await cursor.fetchall()
            calling_back = [(event_id, at) for event_id, at, calls_back in recovered if calls_back]
            if calling_back:
                await _insert_lease_expiry_callbacks(conn, calling_back)
            if recovered:
                await notify_due(conn, None)
        return len(recovered)

    # -- queries -----------------------------------------------------------------------------

    async def get(self, event_id: str, *, sources: frozenset[str] | None) -> Event | None:
        async with self._connection() as conn:
            rows = await fetch_binary(conn, queries.GET, {"id": event_id})
        if not rows:
            return None
        event = row_to_event(rows[0])
        return event if sources is None or event.source in sources else None

    async def get_many(self, event_ids: Sequence[str]) -> list[Event]:
        async with self._connection() as conn:
            rows = await fetch_binary(conn, queries.GET_MANY, {"ids": list(event_ids)})
        return [row_to_event(row) for row in rows]

    async def find_by_external_id(
        self, external_job_id: str, limit: int, *, sources: frozenset[str] | None
    ) -> list[Event]:
        params = {
            "external_job_id": external_job_id,
            "limit": limit,
            "sources": _source_array(sources),
        }
        statement = queries.FIND_BY_EXTERNAL_ID
        rows = await self._read(lambda conn: fetch_binary(conn, statement, params))
        return [row_to_event(row) for row in rows]

    async def count_by_status(self, sources: frozenset[str] | None) -> Mapping[EventStatus, int]:
        return await self._read(lambda conn: listing.count_by_status(conn, sources))

    async def pending_by_source(self, sources: frozenset[str]) -> Mapping[str, int]:
        async with self._connection() as conn:
            return await listing.pending_by_source(conn, sources)

    async def list_events(self, query: EventQuery, limit: int, after: Cursor | None) -> EventPage:
        return await self._read(lambda conn: listing.list_events(conn, query, limit, after))

    async def count_due_by_type(self) -> Mapping[str, int]:
        rows = await self._read(_due_by_type)
        return {delivery_type: int(count) for delivery_type, count in rows}

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        rows = await self._read(lambda conn: _fetch_all(conn, queries.ATTEMPTS, {"id": event_id}))
        return [row_to_attempt(row) for row in rows]

    # -- operator actions --------------------------------------------------------------------

    async def cancel(
        self, event_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> CancelResult:
        params = {"id": event_id, "sources": _source_array(sources), "when": _statuses(when)}

        async def cancel() -> Any:
            async with self._connection() as conn:
                return await (await conn.execute(queries.CANCEL, params)).fetchone()

        # A PENDING event may be moved to another partition by a PATCH meanwhile.
        row = await _past_moved_rows(cancel)
        if row is None:
            raise StoreError("the cancel statement returned no row")
        cancelled, visible = row
        if cancelled:
            return CancelResult.CANCELLED
        return CancelResult.NOT_PENDING if visible else CancelResult.NOT_FOUND

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> int:
        params = {
            "external_job_id": external_job_id,
            "sources": _source_array(sources),
            "when": _statuses(when),
        }

        async def cancel() -> int:
            async with self._connection() as conn:
                return (await conn.execute(queries.CANCEL_BY_EXTERNAL_ID, params)).rowcount

        return await _past_moved_rows(cancel)

    async def amend(
        self, event: Event, *, basis: AmendBasis, when: frozenset[EventStatus]
    ) -> AmendResult:
        values = dict(zip(EVENT_COLUMN_NAMES, event_values(event), strict=True))
        params: dict[str, Any] = {name: values[name] for name in AMENDED_COLUMN_NAMES}
        params.update(
            id=event.id,
            when=_statuses(when),
            basis_version=basis.version,
            basis_claim_count=basis.claim_count,
            basis_next_attempt_at=basis.next_attempt_at,
        )
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    found = await (await conn.execute(queries.AMEND_LOCK, params)).fetchone()
                    if found is None:
                        return AmendResult.NOT_AMENDABLE
                    params["old_scheduled_at"] = found[0]
                    changed = (await conn.execute(queries.AMEND, params)).rowcount
                    if changed and found[0] != event.scheduled_at:
                        await conn.execute(queries.AMEND_MOVED_ID, params)
                        await conn.execute(queries.AMEND_MOVED_ATTEMPTS, params)
                    if changed:
                        await notify_due(conn, event.next_attempt_at)
            except psycopg.errors.UniqueViolation:
                # The dedup key: another event of the job is at the new scheduled_at.
                return AmendResult.DUPLICATE
        return AmendResult.AMENDED if changed else AmendResult.NOT_AMENDABLE

    async def move_due(
        self,
        event_id: str,
        due_at: datetime,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> MoveDueResult:
        params = {
            "id": event_id,
            "due_at": aware(due_at),
            "now": aware(now),
            "sources": _source_array(sources),
            "when": _statuses(when),
        }

        async def move() -> Any:
            async with self._connection() as conn, conn.transaction():
                row = await (await conn.execute(queries.MOVE_DUE, params)).fetchone()
                if row is not None and row[0]:
                    await notify_due(conn, due_at)
                return row

        row = await _past_moved_rows(move)
        if row is None:
            raise StoreError("the move statement returned no row")
        moved, visible = row
        if moved:
            return MoveDueResult.MOVED
        return MoveDueResult.NOT_PENDING if visible else MoveDueResult.NOT_FOUND

    async def redeliver(
        self,
        event_id: str,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> RedeliverResult:
        params = {
            "id": event_id,
            "now": aware(now),
            "sources": _source_array(sources),
            "when": _statuses(when),
        }
        async with self._connection() as conn, conn.transaction():
            row = await (await conn.execute(queries.REDELIVER, params)).fetchone()
            if row is None:
                raise StoreError("the redeliver statement returned no row")
            redelivered, visible = row
            if redelivered:
                await notify_due(conn, now)
        if redelivered:
            return RedeliverResult.REDELIVERED
        return RedeliverResult.NOT_REDELIVERABLE if visible else RedeliverResult.NOT_FOUND

    async def redeliver_matching(
        self,
        *,
        status: EventStatus,
        sources: frozenset[str] | None,
        scheduled: tuple[datetime | None, datetime | None],
        now: datetime,
        limit: int,
    ) -> int:
        async with self._connection() as conn, conn.transaction():
            count = await listing.redeliver_matching(conn, now, status, sources, scheduled, limit)
            if count:
                await notify_due(conn, now)
        return count

    # -- retention ---------------------------------------------------------------------------

    async def delete_finished_before(
        self,
        cutoff: datetime,
        statuses: frozenset[EventStatus],
        batch_size: int,
        *,
        wait: bool = False,
    ) -> int:
        async with self._connection() as conn:
            return await retention.delete_finished_before(
                conn, cutoff, statuses, batch_size, wait=wait
            )

    async def _prepare_storage_on_open(self) -> None:
        try:
            await self.prepare_storage()
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

    async def _read(self, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        """``work`` on the read replica when there is one, else (or when the replica can't
        answer: unreachable, or the query canceled by a conflict with recovery) on the primary.
        A replica takes load off the primary; it never fails a read the primary can answer.
        After a failure the replica rests :data:`REPLICA_REST_SECONDS`, so reads don't each
        wait out its connection timeout; readiness reports it meanwhile."""
        if self._read_pool is not None and time.monotonic() >= self._replica_rests_until:
            try:
                async with self._connection(reads=True) as conn:
                    return await work(conn)
            except StoreUnavailable as exc:
                self._replica_rests_until = time.monotonic() + REPLICA_REST_SECONDS
                log.warning("the read replica failed a read; reading from the primary",
                            error=str(exc))  # fmt: skip
        async with self._connection() as conn:
            return await work(conn)

    @contextlib.asynccontextmanager
    async def _connection(self, *, reads: bool = False) -> AsyncIterator[Connection]:
        """A pooled connection (autocommit); any psycopg error leaves as a port exception.

        ``reads``: from the read replica's pool when there is one."""
        pool = (self._read_pool or self._pool) if reads else self._pool
        if pool is None:
            raise StoreUnavailable("the PostgreSQL event store is not open")
        with wrap_exceptions():
            async with pool.connection() as conn:
                yield conn


def _pool(
    url: str,
    size: int,
    configure: Callable[[Connection], Awaitable[None]],
    name: str,
    *,
    timeout: float = POOL_TIMEOUT_SECONDS,
) -> AsyncConnectionPool[Connection]:
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=size,
        open=False,
        kwargs={"autocommit": True, **connection.KEEPALIVES},
        configure=configure,
        timeout=timeout,
        name=name,
    )


async def _due_by_type(conn: Connection) -> list[Any]:
    return await _fetch_all(conn, queries.DUE_BY_TYPE)


async def _fetch_all(conn: Connection, statement: Any, params: Any = None) -> list[Any]:
    return await (await conn.execute(statement, params)).fetchall()


async def _past_moved_rows(statement: Callable[[], Awaitable[_T]]) -> _T:
    """``statement`` run again (a few times at most) when it lost a race with a PATCH that
    moved a row it was about to lock to another partition."""
    return await run_again_while(statement, lost_to_a_moved_row, tries=MOVED_ROW_TRIES)


async def _insert_lease_expiry_callbacks(
    conn: Connection, dead_lettered: Sequence[tuple[str, datetime]]
) -> None:
    """Insert the failure notices of events recovery dead-lettered, in its transaction."""
    params = {"ids": [i for i, _ in dead_lettered], "at": [at for _, at in dead_lettered]}
    rows = await fetch_binary(conn, queries.RECOVERED_EVENTS, params)
    notices = [lease_expiry_callback(row_to_event(row[:-1]), now=row[-1]) for row in rows]
    if any(notice is not None for notice in notices):
        await insert_events(conn, [notice for notice in notices if notice is not None])


def _due_params(due: DueFilter) -> dict[str, Any]:
    types = None if due.delivery_types is None else sorted(due.delivery_types)
    # "<destination key>\x1f<source>" leaves one source's events to a destination out.
    excluded = sorted(key for key in due.excluded_destinations if "\x1f" not in key)
    held = sorted(key for key in due.excluded_destinations if "\x1f" in key)
    return {"types": types, "excluded": excluded, "held": held}


def _most_claimable(shared: SharedLimits, request: ClaimRequest, key: str) -> int | None:
    """At most how many events of destination ``key`` one claim can take, as its rules allow
    (``None``: no bound known). An upper bound: its cap less this worker's own in flight, its
    burst, its budget; with no rule of its own, the loosest of the default and the type rules
    (the claim statement picks by the delivery type, unknown here)."""
    bare = _PORT_SUFFIX.sub("", key)
    rule = shared.overrides.get(key) or (shared.overrides.get(bare) if bare != key else None)
    rules = [rule] if rule is not None else [shared.default, *shared.type_defaults.values()]
    mine = shared.mine.get(key, 0)
    most: float = 0
    for each in rules:
        bound: float = math.inf
        if each.concurrency > 0:
            bound = max(each.concurrency - mine, 0)
        if each.rate > 0:
            bound = min(bound, each.burst)
        most = max(most, bound)
    budget = request.budgets.get(key, request.default_budget)
    if budget is not None:
        most = min(most, budget)
    return None if most == math.inf else int(most)


def _shared_claim_params(shared: SharedLimits, request: ClaimRequest) -> dict[str, Any]:
    return {
        **_due_params(request.due),
        **_shared_params(shared),
        "worker": request.worker,
        "lease": float(request.lease_seconds),
        "budget_keys": list(request.budgets),
        "budgets": list(request.budgets.values()),
        "default_budget": request.default_budget,
        "namespace": queries.LOCK_NAMESPACE,
    }


def _after_taken(
    shared: SharedLimits, request: ClaimRequest, taken: Mapping[str, int]
) -> tuple[SharedLimits, ClaimRequest]:
    """``shared`` and ``request`` for a claim's next round: the events the rounds before it
    took (committed, PROCESSING under this worker) count as this worker's own, and come out of
    their destinations' budgets."""
    if not taken:
        return shared, request
    mine = dict(shared.mine)
    budgets = dict(request.budgets)
    for key, n in taken.items():
        mine[key] = mine.get(key, 0) + n
        budget = budgets.get(key, request.default_budget)
        if budget is not None:
            budgets[key] = max(budget - n, 0)
    return replace(shared, mine=mine), replace(request, budgets=budgets)


def _shared_params(shared: SharedLimits) -> dict[str, Any]:
    overrides = list(shared.overrides.items())
    types = list(shared.type_defaults.items())
    return {
        "rule_keys": [key for key, _ in overrides],
        "rule_caps": [rule.concurrency for _, rule in overrides],
        "rule_rates": [float(rule.rate) for _, rule in overrides],
        "rule_bursts": [rule.burst for _, rule in overrides],
        "type_names": [name for name, _ in types],
        "type_caps": [rule.concurrency for _, rule in types],
        "type_rates": [float(rule.rate) for _, rule in types],
        "type_bursts": [rule.burst for _, rule in types],
        "default_cap": shared.default.concurrency,
        "default_rate": float(shared.default.rate),
        "default_burst": shared.default.burst,
        "mine_keys": list(shared.mine),
        "mine_counts": list(shared.mine.values()),
        "cooldown": float(shared.breaker_cooldown_seconds),
    }


def _statuses(statuses: Collection[EventStatus]) -> list[str]:
    return sorted(EventStatus(status).value for status in statuses)


def _source_array(sources: frozenset[str] | None) -> list[str] | None:
    """``sources`` as a ``text[]`` parameter: ``None`` (any source) stays NULL."""
    return None if sources is None else sorted(sources)
