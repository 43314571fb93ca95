"""Pooled sessions: how each is set up, and the small helpers every module runs on one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from timefuse.adapters.postgres import queries

Connection = psycopg.AsyncConnection[TupleRow]

# libpq's TCP keepalives and user timeout: a connection whose peer vanished (a failed-over
# primary, a cut network) fails within about half a minute instead of hanging until the
# kernel gives up, hours later.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


async def configure(conn: Connection) -> None:
    """Prepare a new pooled session (the pool's ``configure`` callback)."""
    await configure_reader(conn)
    await conn.execute(queries.CREATE_STAGING)


async def configure_reader(conn: Connection) -> None:
    """Prepare a new session of the read pool: a hot standby refuses even a temporary table,
    so this one has no staging table for inserts."""
    # Times come back as UTC datetimes, whatever the server's or role's default zone.
    await conn.execute("SET TIME ZONE 'UTC'")
    # Planning a statement over a partitioned table costs time in proportion to its
    # partitions (about 50 ms for the claim with 400), and by default the server may keep
    # planning afresh on every call. The store's statements prune partitions at run time and
    # none depends on its parameter values for a good plan, so each prepared statement (psycopg
    # prepares on the 5th use) keeps one generic plan.
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    # The server notices a client that vanished as quickly, and ends its session (releasing
    # its locks) instead of keeping it open.
    await conn.execute("SET tcp_keepalives_idle = 10")
    await conn.execute("SET tcp_keepalives_interval = 5")
    await conn.execute("SET tcp_keepalives_count = 3")


async def notify_due(conn: Connection, due_at: datetime | None) -> None:
    """Tell listeners (at commit) that events fall due at ``due_at``; ``None``: look now."""
    payload = "" if due_at is None else due_at.isoformat()
    await conn.execute(queries.NOTIFY_DUE, {"payload": payload})


async def fetch_value(conn: Connection, query: str) -> Any:
    row = await (await conn.execute(query)).fetchone()
    return None if row is None else row[0]


async def fetch_binary(conn: Connection, query: str, params: Mapping[str, Any]) -> list[TupleRow]:
    # Binary results: a bytea payload in text format would come back hex-escaped, twice its size.
    async with conn.cursor(binary=True) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()
