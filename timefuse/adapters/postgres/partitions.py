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

from psycopg import sql

from timefuse.adapters.postgres.connection import Connection

GRANULARITIES = ("day", "week", "month")

# Serialises partition DDL across processes (create ahead, retention drops).
PARTITION_LOCK_KEY = 0x74696D6566_02

# Creating or dropping a partition needs an ACCESS EXCLUSIVE lock (on the DEFAULT partition, or
# on the parent), and while that request waits every claim queues behind it. Giving up after
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

    Each period is its own transaction, so the DEFAULT partitions stay locked only as long as
    one period's rows take to move. A period that overlaps an existing partition (left by an
    earlier granularity) is skipped. If another process is changing partitions right now,
    this returns early: that process is doing the same work.
    """
    created: list[str] = []
    for lower, upper in periods:
        async with conn.transaction():
            if not await lock_partition_ddl(conn):
                break
            existing = await list_partitions(conn, EVENTS)
            if any(partition.overlaps(lower, upper) for partition in existing):
                continue
            for table in TABLES:
                await _create_partition(conn, table, lower, upper)
                created.append(table.partition_name(lower))
    return created


async def lock_partition_ddl(conn: Connection) -> bool:
    """Take the partition DDL lock for the current transaction; ``False`` if someone has it."""
    await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'")
    cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PARTITION_LOCK_KEY,))
    row = await cursor.fetchone()
    return bool(row and row[0])


async def _create_partition(
    conn: Connection, table: PartitionedTable, lower: datetime, upper: datetime
) -> None:
    """Create and attach one partition, moving its rows out of the DEFAULT partition first.

    PostgreSQL refuses to attach a range while the DEFAULT partition holds rows of it, so the
    new table starts detached, the rows move into it, and then it is attached, all in the
    caller's transaction. The DEFAULT partition is locked first (ACCESS EXCLUSIVE, as ATTACH
    needs anyway): a concurrent insert of that range waits for the commit and then goes to the
    new partition, instead of landing in DEFAULT between the move and the attach.
    """
    names: dict[str, Any] = {
        "parent": sql.Identifier(table.name),
        "default": sql.Identifier(table.default),
        "partition": sql.Identifier(table.partition_name(lower)),
        "key": sql.Identifier(table.key),
    }
    await conn.execute(sql.SQL("LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE").format(**names))
    # No indexes yet: ATTACH builds the parent's indexes on the new table in one pass each,
    # cheaper than maintaining them row by row during the move.
    await conn.execute(
        sql.SQL(
            "CREATE TABLE {partition} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ).format(**names)
    )
    columns = sql.SQL(", ").join(map(sql.Identifier, await _column_names(conn, table.name)))
    await conn.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {default} WHERE {key} >= %(lower)s AND {key} < %(upper)s"
            " RETURNING {columns}) INSERT INTO {partition} ({columns}) SELECT {columns} FROM moved"
        ).format(columns=columns, **names),
        {"lower": lower, "upper": upper},
    )
    # DDL takes no bind parameters: the bounds go in as literals.
    await conn.execute(
        sql.SQL(
            "ALTER TABLE {parent} ATTACH PARTITION {partition}"
            " FOR VALUES FROM ({lower}) TO ({upper})"
        ).format(lower=sql.Literal(lower), upper=sql.Literal(upper), **names)
    )


async def _column_names(conn: Connection, table: str) -> list[str]:
    # Named explicitly: a partition's physical column order may differ from the parent's
    # (a column dropped before it was attached), so SELECT * could misalign.
    cursor = await conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    return [name for (name,) in await cursor.fetchall()]
