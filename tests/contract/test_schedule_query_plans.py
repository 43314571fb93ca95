"""The planner's tick reads due schedules through their index, never by scanning them all.

With many schedules waiting and a few due, the SQL stores must answer ``due_schedules`` from
the partial index on the next instant of running schedules (and list a schedule's occurrences
from the index on the schedule id in ``extra``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres import schedules as pg
from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.adapters.sqlite import schedules as lite
from timefuse.service.store import Store
from timefuse.testing.store_contract_schedules import make_record
from timefuse.testing.store_contract_support import utc_now

WAITING = 2000


async def seed_schedules(store: Store) -> None:
    now = utc_now()
    for n in range(WAITING):
        due = now + (timedelta(minutes=-1) if n % 500 == 0 else timedelta(days=1 + n % 300))
        record = make_record(key=f"s{n}", next_run_at=due)
        if n % 7 == 0:
            record = replace(record, schedule=replace(record.schedule, paused=True))
        assert await store.save_schedule(record, expected_version=None)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    path = tmp_path / "plans.db"
    store = Store(SqliteEventStore(str(path)))
    await store.open()
    yield store, path
    await store.close()


async def test_sqlite_reads_due_schedules_and_occurrences_through_their_indexes(
    sqlite_store: tuple[Store, Path],
) -> None:
    store, path = sqlite_store
    await seed_schedules(store)
    assert len(await store.due_schedules(utc_now(), 100)) == 3  # s0 is paused
    with sqlite3.connect(path) as conn:
        conn.execute("ANALYZE")
        due = " ".join(
            str(row[3])
            for row in conn.execute("EXPLAIN QUERY PLAN " + lite.DUE, {"until": 0, "limit": 10})
        )
        occurrences = " ".join(
            str(row[3])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + lite.OCCURRENCES.format(before=""),
                {"schedule": "x", "limit": 10},
            )
        )
    assert "USING INDEX timefuse_schedules_due" in due
    assert "SCAN" not in due
    assert "USING INDEX events_occurrences" in occurrences
    assert "TEMP B-TREE" not in occurrences


@pytest.mark.postgres
async def test_postgres_reads_due_schedules_and_occurrences_through_their_indexes(
    postgres_dsn: str,
) -> None:
    store = Store(PostgresEventStore(postgres_dsn, pool_size=2))
    await store.open()
    try:
        await seed_schedules(store)
        assert len(await store.due_schedules(utc_now(), 100)) == 3  # s0 is paused
    finally:
        await store.close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
        due = _plan(conn, pg.DUE, {"until": utc_now(), "limit": 10})
        # The events table is empty here, where reading it whole costs nothing: what matters
        # is that the index serves the query, in its order, once there are events.
        conn.execute("SET enable_seqscan = off")
        occurrences = _plan(conn, pg.OCCURRENCES.format(before=""), {"schedule": "x", "limit": 10})
    assert "timefuse_schedules_due" in due
    assert "Seq Scan" not in due
    # Each partition's copy of events_occurrences, read backwards and merged: no sort.
    assert "_expr_scheduled_at_id_idx" in occurrences
    assert '"Node Type": "Sort"' not in occurrences
    assert "Seq Scan" not in occurrences


def _plan(conn: psycopg.Connection[tuple[object, ...]], query: str, params: object) -> str:
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    return json.dumps(row[0])
