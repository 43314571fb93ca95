"""Fixtures of the PostgreSQL store's own tests: an opened store and a plain SQL connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import pytest_asyncio

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.domain.status import EventStatus


@pytest_asyncio.fixture
async def pg_store(postgres_dsn: str) -> AsyncIterator[PostgresEventStore]:
    """An opened store on a fresh database (schema migrated, partitions ahead created)."""
    store = PostgresEventStore(postgres_dsn, pool_size=4)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def db(postgres_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection to the test database, for arranging and inspecting rows."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        yield conn


def counted_by_scan(db: psycopg.Connection[tuple[object, ...]]) -> dict[EventStatus, int]:
    """What ``count_by_status`` must answer, counted the slow way."""
    counts = dict.fromkeys(EventStatus, 0)
    for status, count in db.execute("SELECT status, count(*) FROM events GROUP BY status"):
        counts[EventStatus(str(status))] = int(str(count))
    return counts


def partition_of(db: psycopg.Connection[tuple[object, ...]], table: str, event_id: str) -> str:
    """The partition that holds ``event_id``'s row (or its attempts) in ``table``."""
    column = "id" if table == "events" else "event_id"
    row = db.execute(
        f"SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {column} = %s",  # noqa: S608
        (event_id,),
    ).fetchone()
    assert row is not None, f"no row of {event_id} in {table}"
    return str(row[0])
