"""Dated partitions of ``events`` and ``event_attempts``: which exist, creating them ahead.

Both tables are RANGE-partitioned (by the event's ``scheduled_at``) with identical bounds and a
DEFAULT partition each. A period's partitions are named after its first day in UTC:
``events_p20250131`` and ``event_attempts_p20250131``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from timefuse.adapters.postgres.connection import Connection

GRANULARITIES = ("day", "week", "month")

# Serialises partition DDL across processes (create ahead, retention drops).
PARTITION_LOCK_KEY = 0x74696D6566_02

# Attaching or dropping a partition needs an ACCESS EXCLUSIVE lock (on the DEFAULT partition,
# or on the parent), and while that request waits every claim queues behind it. Giving up after
# a short wait bounds that stall; maintenance simply tries again on its next round.
DDL_LOCK_TIMEOUT = "2s"


@dataclass(frozen=True, slots=True)
class PartitionedTable:
    name: str
    key: str

    @property
    def default(self) -> str:
        return f"{self.name}_default"

    def partition_name(self, lower: datetime) -> str:
        return f"{self.name}_p{lower.astimezone(UTC):%Y%m%d}"


EVENTS = PartitionedTable("events", "scheduled_at")
ATTEMPTS = PartitionedTable("event_attempts", "event_scheduled_at")
TABLES = (EVENTS, ATTEMPTS)


@dataclass(frozen=True, slots=True)
class Partition:
    """An attached partition; the DEFAULT one has no bounds."""

    name: str
    lower: datetime | None
    upper: datetime | None

    def overlaps(self, lower: datetime, upper: datetime) -> bool:
        if self.lower is None or self.upper is None:
            return False
        return self.lower < upper and lower < self.upper


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"partition_granularity must be one of {GRANULARITIES}, not {granularity!r}"
        )
    return granularity


def period_start(moment: datetime, granularity: str) -> datetime:
    """The first instant (UTC) of the period holding ``moment``; weeks start on Monday."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def next_period(start: datetime, granularity: str) -> datetime:
    if granularity == "week":
        return start + timedelta(weeks=1)
    if granularity == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return start + timedelta(days=1)


def periods_ahead(now: datetime, granularity: str, ahead: int) -> list[tuple[datetime, datetime]]:
    """The current period and the ``ahead`` following ones, as (lower, upper) bounds."""
    lower = period_start(now, granularity)
    periods = []
    for _ in range(ahead + 1):
        upper = next_period(lower, granularity)
        periods.append((lower, upper))
        lower = upper
    return periods


_LIST_PARTITIONS = r"""
SELECT c.relname, m.bounds[1]::timestamptz, m.bounds[2]::timestamptz
  FROM pg_inherits AS i
  JOIN pg_class AS c ON c.oid = i.inhrelid
  LEFT JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                 $re$FROM \('([^']+)'\) TO \('([^']+)'\)$re$) AS m (bounds)
         ON true
 WHERE i.inhparent = %s::regclass
 ORDER BY 2 NULLS LAST
"""


async def list_partitions(conn: Connection, table: PartitionedTable) -> list[Partition]:
    """The attached partitions of ``table``, earliest first, the DEFAULT one last."""
    cursor = await conn.execute(_LIST_PARTITIONS, (table.name,))
    return [Partition(name, lower, upper) for name, lower, upper in await cursor.fetchall()]


async def create_partitions(
    conn: Connection, periods: Sequence[tuple[datetime, datetime]]
) -> list[str]:
    """Create the partitions of both tables for each period that has none; returns their names.

    No row is ever moved: a period whose events already sit in the DEFAULT partition (they
    were scheduled that far ahead before its partition existed) keeps them there, and gets no
    partition of its own. Creating one takes three short transactions, none of which scans
    under a lock that stops claims or inserts:

    1. a NOT VALID check constraint on each DEFAULT partition keeps the period's rows out of it
       from now on (an insert meanwhile fails with a check violation, which the store treats
       as "try again in a moment");
    2. validating it proves no such row got in before (a scan that lets writes go on);
    3. the new partitions are attached: with the constraint in place PostgreSQL skips its own
       scan of DEFAULT, so the exclusive lock lasts milliseconds. The constraint then goes.

    If another process is changing partitions right now, this returns early: that process is
    doing the same work.
    """
    if not await _try_session_lock(conn):
        return []
    created: list[str] = []
    try:
        await _drop_fences(conn)
        for lower, upper in periods:
            existing = await list_partitions(conn, EVENTS)
            if any(partition.overlaps(lower, upper) for partition in existing):
                continue
            if await _default_holds(conn, lower, upper):
                continue
            if await _attach_period(conn, lower, upper):
                created.extend(table.partition_name(lower) for table in TABLES)
    finally:
        try:
            await _drop_fences(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (PARTITION_LOCK_KEY,))
    return created


FENCE_PREFIX = "timefuse_creating_"


async def _try_session_lock(conn: Connection) -> bool:
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (PARTITION_LOCK_KEY,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _default_holds(conn: Connection, lower: datetime, upper: datetime) -> bool:
    query = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM ONLY {default} WHERE {key} >= %s AND {key} < %s)"
    ).format(default=sql.Identifier(EVENTS.default), key=sql.Identifier(EVENTS.key))
    row = await (await conn.execute(query, (lower, upper))).fetchone()
    return bool(row and row[0])


async def _attach_period(conn: Connection, lower: datetime, upper: datetime) -> bool:
    fence = sql.Identifier(FENCE_PREFIX + EVENTS.partition_name(lower).removeprefix("events_"))
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
            for table in TABLES:
                await conn.execute(
                    sql.SQL(
                        "ALTER TABLE {default} ADD CONSTRAINT {fence}"
                        " CHECK ({key} < {lower} OR {key} >= {upper}) NOT VALID"
                    ).format(
                        default=sql.Identifier(table.default),
                        fence=fence,
                        key=sql.Identifier(table.key),
                        lower=sql.Literal(lower),
                        upper=sql.Literal(upper),
                    )
                )
        for table in TABLES:
            await conn.execute(
                sql.SQL("ALTER TABLE {default} VALIDATE CONSTRAINT {fence}").format(
                    default=sql.Identifier(table.default), fence=fence
                )
            )
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
            for table in TABLES:
                await _create_partition(conn, table, lower, upper)
    except (psycopg.errors.CheckViolation, psycopg.errors.LockNotAvailable):
        # A row of the period reached DEFAULT before the fence, or the locks are busy: the
        # period stays with DEFAULT (or the next round tries again).
        return False
    return True


async def _drop_fences(conn: Connection) -> None:
    """Drop the fences a creation left (this one, or one cut off by a lost connection)."""
    for table in TABLES:
        cursor = await conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND conname LIKE %s",
            (table.default, FENCE_PREFIX + "%"),
        )
        for (name,) in await cursor.fetchall():
            await conn.execute(
                sql.SQL("ALTER TABLE {default} DROP CONSTRAINT IF EXISTS {fence}").format(
                    default=sql.Identifier(table.default), fence=sql.Identifier(name)
                )
            )


async def lock_partition_ddl(conn: Connection) -> bool:
    """Take the partition DDL lock for the current transaction; ``False`` if someone has it."""
    await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
    cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PARTITION_LOCK_KEY,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _create_partition(
    conn: Connection, table: PartitionedTable, lower: datetime, upper: datetime
) -> None:
    """Create and attach one empty partition, in the caller's transaction."""
    names: dict[str, Any] = {
        "parent": sql.Identifier(table.name),
        "partition": sql.Identifier(table.partition_name(lower)),
    }
    await conn.execute(
        sql.SQL(
            "CREATE TABLE {partition} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ).format(**names)
    )
    # DDL takes no bind parameters: the bounds go in as literals.
    await conn.execute(
        sql.SQL(
            "ALTER TABLE {parent} ATTACH PARTITION {partition}"
            " FOR VALUES FROM ({lower}) TO ({upper})"
        ).format(lower=sql.Literal(lower), upper=sql.Literal(upper), **names)
    )
