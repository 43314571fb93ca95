"""Fixtures of the PostgreSQL store's own tests: an opened store and a plain SQL connection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from tests.support.postgres_server import PostgresServer
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store

Db = psycopg.Connection[tuple[object, ...]]


@pytest_asyncio.fixture
async def pg_store(postgres_dsn: str) -> AsyncIterator[Store]:
    """An opened store on a fresh database (schema migrated, partitions ahead created), behind
    the rule layer as services use it; ``.adapter`` is the PostgreSQL adapter itself."""
    store = Store(PostgresEventStore(postgres_dsn, pool_size=4))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def db(postgres_dsn: str) -> Iterator[Db]:
    """A plain autocommit connection to the test database, for arranging and inspecting rows."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        yield conn


@pytest.fixture
def another_dsn(postgres: PostgresServer) -> str:
    """A second fresh, empty database on the session's server."""
    return postgres.create_database(f"timefuse_other_{uuid.uuid4().hex[:16]}")


def counted_by_scan(db: Db, source: str | None = None) -> dict[EventStatus, int]:
    """What ``count_by_status`` must answer (for ``source``, or all), counted the slow way."""
    counts = dict.fromkeys(EventStatus, 0)
    rows = db.execute(
        "SELECT status, count(*) FROM events WHERE %(source)s::text IS NULL OR source = %(source)s"
        " GROUP BY status",
        {"source": source},
    )
    for status, count in rows:
        counts[EventStatus(str(status))] = int(str(count))
    return counts


def partition_of(db: Db, table: str, event_id: str) -> str:
    """The partition that holds ``event_id``'s row (or its attempts) in ``table``."""
    column = "id" if table == "events" else "event_id"
    query = sql.SQL("SELECT DISTINCT tableoid::regclass::text FROM {} WHERE {} = %s").format(
        sql.Identifier(table), sql.Identifier(column)
    )
    row = db.execute(query, (event_id,)).fetchone()
    assert row is not None, f"no row of {event_id} in {table}"
    return str(row[0])


def partitions(db: Db, table: str) -> list[str]:
    rows = db.execute(
        "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass"
        " ORDER BY 1",
        (table,),
    )
    return [str(name) for (name,) in rows]
