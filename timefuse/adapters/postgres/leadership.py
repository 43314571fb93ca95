"""Maintenance leadership across processes: a PostgreSQL session advisory lock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg.rows import TupleRow

from timefuse.adapters.postgres.errors import wrap_exceptions

# Any fixed number, the same in every process, distinct from the other lock keys.
LEADER_LOCK_KEY = 0x74696D6566_04


class AdvisoryLeadership:
    """:class:`timefuse.service.maintenance.Leadership` through ``pg_try_advisory_lock``.

    The lock lives as long as a dedicated connection (outside the pool, which would hand the
    session to other work). Leadership is sticky: the leader keeps the connection, and with it
    the lock, from one ``hold()`` to the next, so maintenance doesn't hop between processes;
    if the leader dies or its connection breaks, the server releases the lock and another
    process takes it on its next try.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._leading = False

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        with wrap_exceptions():
            leading = await self._try_to_lead()
        yield leading

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        leading, self._leading = self._leading, False
        if conn is None:
            return
        try:
            if leading:
                # Released now, not whenever the server notices the session ended, so
                # another process can take over on its next try.
                await conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK_KEY,))
        except psycopg.Error:
            pass  # a broken session holds nothing
        finally:
            await conn.close()

    async def _try_to_lead(self) -> bool:
        if self._conn is not None and not await self._alive(self._conn):
            await self.close()
        if self._conn is None:
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        if not self._leading:
            cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))
            row = await cursor.fetchone()
            self._leading = bool(row and row[0])
        return self._leading

    @staticmethod
    async def _alive(conn: psycopg.AsyncConnection[TupleRow]) -> bool:
        # A session that still answers still holds its session-level locks.
        try:
            await conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True
