"""Retention: dropping dead partitions whole, deleting the remaining old terminal events in
bounded batches, and forgetting the ids of what went.

Never touches a PENDING or PROCESSING event: a partition that still holds one, or a row updated
after the cutoff, is kept and only its old terminal rows are deleted, one batch at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from timefuse.adapters.postgres.connection import Connection
from timefuse.adapters.postgres.partitions import (
    ATTEMPTS,
    EVENTS,
    list_partitions,
    lock_partition_ddl,
)
from timefuse.domain.status import TERMINAL_STATUSES, EventStatus

# Any fixed number, distinct from the other lock keys: one retention run at a time.
RETENTION_LOCK_KEY = 0x74696D6566_03

_TERMINAL = sorted(status.value for status in TERMINAL_STATUSES)
# Written out literally, as in the predicate of the partial index events_retention: only then
# can the planner use that index whatever the parameters.
_IS_TERMINAL = "status IN (" + ", ".join(f"'{status}'" for status in _TERMINAL) + ")"

_PARTITION_COUNTS = """
SELECT source, status, count(*), max(updated_at) FROM {partition} GROUP BY source, status
"""

# Index probes only (events_status_schedule, events_retention), so cheap under the lock.
_STILL_ALIVE = f"""
SELECT EXISTS (SELECT 1 FROM {{partition}} WHERE status IN ('PENDING', 'PROCESSING'))
    OR EXISTS (SELECT 1 FROM {{partition}} WHERE {_IS_TERMINAL} AND updated_at >= %(cutoff)s)
"""

# DELETE has no LIMIT in PostgreSQL: a batch is the ctids of at most `limit` rows. ctids are
# only unique within one table, hence one partition at a time. The outer conditions re-check
# each row in case it changed after the inner SELECT read it.
_DELETE_BATCH = f"""
WITH gone AS (
    DELETE FROM {{partition}}
     WHERE ctid = ANY(ARRAY(SELECT ctid FROM {{partition}}
                             WHERE {_IS_TERMINAL} AND updated_at < %(cutoff)s
                             LIMIT %(limit)s))
       AND {_IS_TERMINAL} AND updated_at < %(cutoff)s
    RETURNING id, source, status
),
forgotten AS (DELETE FROM event_ids WHERE id = ANY(ARRAY(SELECT id FROM gone))),
history AS (DELETE FROM {{attempts}} WHERE event_id = ANY(ARRAY(SELECT id FROM gone))),
counts AS (SELECT source, status, count(*) AS n FROM gone GROUP BY source, status)
SELECT COALESCE(sum(n), 0)::bigint,
       timefuse_add_status_counts(array_agg(source), array_agg(status), array_agg(-n))
  FROM counts
"""

_FORGET_IDS_BATCH = """
DELETE FROM event_ids
 WHERE ctid = ANY(ARRAY(
       SELECT x.ctid FROM event_ids AS x
        WHERE x.scheduled_at >= %(lower)s AND x.scheduled_at < %(upper)s
          AND NOT EXISTS (SELECT 1 FROM events AS e
                           WHERE e.id = x.id AND e.scheduled_at = x.scheduled_at)
        LIMIT %(limit)s))
"""


async def delete_finished_before(
    conn: Connection,
    cutoff: datetime,
    statuses: Collection[EventStatus],
    batch_size: int,
    *,
    wait: bool = False,
) -> int:
    """Run one retention pass on ``conn`` (autocommit); returns how many events went.

    ``statuses`` are the finished ones (the rule layer's); the SQL is written for exactly the
    terminal statuses, so any other set is refused. Returns 0 at once when another process is
    running retention, or with ``wait`` waits for that run to end, then runs.
    """
    if frozenset(statuses) != TERMINAL_STATUSES:
        raise ValueError("retention deletes events in the terminal statuses only")
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
    row = await cursor.fetchone()
    if not (row and row[0]):
        if not wait:
            return 0
        await conn.execute("SELECT pg_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
    try:
        deleted = await _drop_dead_partitions(conn, cutoff)
        deleted += await _delete_old_terminal_rows(conn, cutoff, batch_size)
        await _forget_ids_of_dropped_partitions(conn, batch_size)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))
        except psycopg.Error:
            # The session must not keep the lock, or no retention would ever run again:
            # closing it releases the lock, and the pool replaces a closed connection.
            with contextlib.suppress(psycopg.Error):
                await conn.close()
    return deleted


async def _drop_dead_partitions(conn: Connection, cutoff: datetime) -> int:
    dropped = 0
    for partition in await list_partitions(conn, EVENTS):
        if partition.lower is None or partition.upper is None or partition.upper > cutoff:
            continue
        counts = await _counts_if_dead(conn, partition.name, cutoff)
        if counts is None:
            continue
        bounds = (partition.lower, partition.upper)
        try:
            if await _drop_partition(conn, partition.name, bounds, cutoff, counts):
                dropped += sum(counts.values())
        except psycopg.errors.LockNotAvailable:
            continue  # busy right now (lock_timeout): the next run drops it
    return dropped


async def _counts_if_dead(
    conn: Connection, partition: str, cutoff: datetime
) -> dict[tuple[str, str], int] | None:
    """Rows per (source, status) if all are terminal and older than ``cutoff``, else ``None``.

    Read without a lock (a full pass over the partition's retention index), so the drop's
    locked section stays short. Whatever changes afterwards makes a row live or recently
    updated, which the re-check under the lock sees. (One thing would slip past: inserting an
    already terminal event, last updated before the cutoff, into this very partition between
    the two steps. It would still go, but the counts would keep it: callers insert PENDING
    events, so this is left at that rather than recounting under the lock.)
    """
    query = sql.SQL(_PARTITION_COUNTS).format(partition=sql.Identifier(partition))
    counts: dict[tuple[str, str], int] = {}
    for source, status, count, last_update in await (await conn.execute(query)).fetchall():
        if status not in _TERMINAL or last_update >= cutoff:
            return None
        counts[(source, status)] = count
    return counts


async def _drop_partition(
    conn: Connection,
    name: str,
    bounds: tuple[datetime, datetime],
    cutoff: datetime,
    counts: dict[tuple[str, str], int],
) -> bool:
    lower, upper = bounds
    names: dict[str, Any] = {
        "partition": sql.Identifier(name),
        "attempts": sql.Identifier(ATTEMPTS.partition_name(lower)),
    }
    params = {"cutoff": cutoff}
    async with conn.transaction():
        if not await lock_partition_ddl(conn):
            return False  # partitions are being created: try again on the next run
        # ONLY: the parents, not every partition. Each query on events locks the parent
        # first, so nothing can insert into or update this partition until the commit.
        await conn.execute("LOCK TABLE ONLY events, event_attempts IN ACCESS EXCLUSIVE MODE")
        cursor = await conn.execute(sql.SQL(_STILL_ALIVE).format(**names), params)
        row = await cursor.fetchone()
        if row is None or row[0]:
            return False
        await conn.execute(sql.SQL("DROP TABLE {partition}").format(**names))
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {attempts}").format(**names))
        # A dropped table fires no DELETE trigger: the counts go down here.
        await conn.execute(
            "SELECT timefuse_add_status_counts(%s::text[], %s::text[], %s::bigint[])",
            (
                [source for source, _ in counts],
                [status for _, status in counts],
                [-count for count in counts.values()],
            ),
        )
        await conn.execute(
            "INSERT INTO timefuse_event_id_cleanup (lower_bound, upper_bound) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            (lower, upper),
        )
    return True


async def _delete_old_terminal_rows(conn: Connection, cutoff: datetime, batch_size: int) -> int:
    attempts = {(p.lower, p.upper): p.name for p in await list_partitions(conn, ATTEMPTS)}
    deleted = 0
    for partition in await list_partitions(conn, EVENTS):
        # The attempts of an event sit in the attempts partition with the same bounds.
        attempts_name = attempts.get((partition.lower, partition.upper), ATTEMPTS.name)
        query = sql.SQL(_DELETE_BATCH).format(
            partition=sql.Identifier(partition.name), attempts=sql.Identifier(attempts_name)
        )
        params = {"cutoff": cutoff, "limit": batch_size}
        while True:
            # Autocommit: each batch is its own short transaction.
            row = await (await conn.execute(query, params)).fetchone()
            batch = int(row[0]) if row else 0
            deleted += batch
            if batch < batch_size:
                break
    return deleted


async def _forget_ids_of_dropped_partitions(conn: Connection, batch_size: int) -> None:
    cursor = await conn.execute("SELECT lower_bound, upper_bound FROM timefuse_event_id_cleanup")
    for lower, upper in await cursor.fetchall():
        params = {"lower": lower, "upper": upper, "limit": batch_size}
        while (await conn.execute(_FORGET_IDS_BATCH, params)).rowcount >= batch_size:
            pass
        await conn.execute(
            "DELETE FROM timefuse_event_id_cleanup WHERE lower_bound = %s AND upper_bound = %s",
            (lower, upper),
        )
