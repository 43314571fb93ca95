"""Schema migrations: the snapshot matches the migrations, and migrating is idempotent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from timefuse.adapters.postgres import PostgresEventStore, migrations
from timefuse.adapters.postgres.migrations import (
    Migration,
    apply_migrations,
    load_migrations,
    schema_snapshot,
)
from timefuse.domain.status import EventStatus
from timefuse.ports.store import StoreError
from timefuse.service.store import Store
from timefuse.testing.factories import make_outcome

pytestmark = pytest.mark.postgres

# Everything a migration can create, described so that two databases compare equal exactly
# when their schemas do. OIDs and generated names of dated partitions are left out.
_CATALOG_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, pg_get_partkeydef(c.oid),
               pg_get_expr(c.relpartbound, c.oid), c.relpersistence
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema()""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), co.collname, a.attidentity
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          LEFT JOIN pg_collation co ON co.oid = a.attcollation
         WHERE n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = current_schema()""",
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
          FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
          JOIN pg_namespace n ON n.oid = k.connamespace
         WHERE n.nspname = current_schema()""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND NOT t.tgisinternal""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid)
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = current_schema()""",
    "sequences": """
        SELECT sequencename, data_type, start_value, increment_by, cycle FROM pg_sequences
         WHERE schemaname = current_schema()""",
    "inheritance": """
        SELECT p.relname, c.relname FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent""",
    "versions": "SELECT version, name FROM timefuse_schema_version",
}


def catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {
            name: sorted(conn.execute(query).fetchall(), key=repr)  # type: ignore[arg-type]
            for name, query in _CATALOG_QUERIES.items()
        }


def build_from_snapshot(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_snapshot().encode())


def test_migrations_are_numbered_in_order() -> None:
    migrations = load_migrations()
    versions = sorted(m.version for m in migrations)
    assert versions == list(range(1, len(versions) + 1))
    assert len(migrations) >= 2


async def test_the_snapshot_and_the_migrations_build_the_same_schema(
    postgres_dsn: str, another_dsn: str
) -> None:
    build_from_snapshot(postgres_dsn)
    applied = await PostgresEventStore(another_dsn).migrate()
    assert applied == [m.name for m in load_migrations()]
    from_snapshot, from_migrations = catalog(postgres_dsn), catalog(another_dsn)
    for part in _CATALOG_QUERIES:
        assert from_snapshot[part] == from_migrations[part], f"{part} differ"
    assert from_migrations["triggers"], "the catalog query must see the counting triggers"


async def test_migrating_a_snapshot_database_applies_nothing(postgres_dsn: str) -> None:
    build_from_snapshot(postgres_dsn)
    assert await PostgresEventStore(postgres_dsn).migrate() == []


async def test_concurrent_migrations_apply_each_migration_once(
    postgres_dsn: str, another_dsn: str
) -> None:
    stores = [PostgresEventStore(postgres_dsn) for _ in range(4)]
    results = await asyncio.gather(*(store.migrate() for store in stores))
    names = [m.name for m in load_migrations()]
    assert sorted(results, key=len) == [[], [], [], names]
    build_from_snapshot(another_dsn)
    assert catalog(postgres_dsn) == catalog(another_dsn)


def test_concurrent_migrate_commands_leave_one_schema(postgres_dsn: str, another_dsn: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_dsn}
    commands = [
        subprocess.Popen(
            [sys.executable, "-m", "timefuse", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outputs = [command.communicate(timeout=60)[0].decode() for command in commands]
    assert [command.returncode for command in commands] == [0, 0], outputs
    build_from_snapshot(another_dsn)
    assert catalog(postgres_dsn) == catalog(another_dsn)


async def test_opening_migrates_a_fresh_database_and_reopening_changes_nothing(
    postgres_dsn: str,
) -> None:
    for _ in range(2):
        store = PostgresEventStore(postgres_dsn)
        await store.open()
        await store.close()
    versions = catalog(postgres_dsn)["versions"]
    assert [version for version, _ in versions] == [m.version for m in load_migrations()]


async def test_a_store_that_does_not_migrate_refuses_to_open_on_an_old_schema(
    postgres_dsn: str,
) -> None:
    store = PostgresEventStore(postgres_dsn, migrate_on_open=False)
    with pytest.raises(StoreError, match="timefuse migrate"):
        await store.open()
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("SELECT to_regclass('events')").fetchone()
    assert row == (None,)
    await store.migrate()
    await store.open()
    await store.close()


_V2_EVENT = """
INSERT INTO events (id, external_job_id, source, scheduled_at, delivery_type, destination,
                    payload, next_attempt_at, created_at, updated_at, max_retries, status,
                    attempts, locked_by, lock_expires_at)
VALUES (%(id)s, %(id)s, %(source)s, %(at)s, 'http', 'https://r.example/', '{}', %(at)s,
        %(at)s, %(at)s, 3, %(status)s, %(attempts)s, %(locked_by)s, %(expires)s)
"""
_V2_ATTEMPT = """
INSERT INTO event_attempts (event_id, event_scheduled_at, attempt, started_at, duration_ms,
                            outcome, worker)
VALUES (%s, %s, %s, %s, 1.0, 'RETRIABLE', 'w')
"""


async def test_upgrading_a_database_with_events_keeps_their_counts_and_histories(
    postgres_dsn: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        assert len(await apply_migrations(conn, target=2)) == 2
    at = datetime.now(UTC)
    rows = [
        ("a", "billing", "PENDING", 0, None),
        ("b", "billing", "FAILED", 1, None),
        ("c", "shipping", "PROCESSING", 2, "w"),
    ]
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        for event_id, source, status, attempts, locked_by in rows:
            expires = at + timedelta(minutes=5) if locked_by else None
            db.execute(_V2_EVENT, {"id": event_id, "source": source, "at": at, "status": status,
                                   "attempts": attempts, "locked_by": locked_by,
                                   "expires": expires})  # fmt: skip
            db.execute("INSERT INTO event_ids VALUES (%s, %s)", (event_id, at))
        for attempt in (1, 2):
            db.execute(_V2_ATTEMPT, ("c", at, attempt, at))
    store = Store(PostgresEventStore(postgres_dsn))
    await store.open()
    try:
        billing = await store.count_by_status(sources=["billing"])
        assert (billing[EventStatus.PENDING], billing[EventStatus.FAILED]) == (1, 1)
        assert (await store.count_by_status(sources=["shipping"]))[EventStatus.PROCESSING] == 1
        assert [record.sequence for record in await store.attempts("c")] == [1, 2]
        processing = await store.get("c")
        assert processing is not None
        assert await store.record_outcomes([make_outcome(processing, "w")]) == {"c"}
        assert [record.sequence for record in await store.attempts("c")] == [1, 2, 3]
    finally:
        await store.close()


async def test_rebuilding_the_due_index_under_claims_deadlocks_nothing(postgres_dsn: str) -> None:
    # A live cluster during a rolling deploy: a claim has read events and will write them
    # when the migration that swaps the due index starts. Neither may be aborted.
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await apply_migrations(conn, target=8)
    with psycopg.connect(postgres_dsn) as claim:
        claim.execute("SELECT count(*) FROM events WHERE status = 'PENDING'")  # reads first
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            migrating = asyncio.create_task(apply_migrations(conn))
            await _until_an_access_exclusive_lock_waits(postgres_dsn)
            # Then writes them, while the migration waits for it.
            claim.execute("UPDATE events SET attempts = attempts WHERE status = 'PENDING'")
            claim.commit()
            applied = await asyncio.wait_for(migrating, timeout=30)
    assert applied == ["0009_due_index_by_id.sql"]


async def test_a_migration_chosen_as_a_deadlocks_victim_is_applied_again(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A later migration locks two tables; a live write holds the second and then asks for the
    # first. PostgreSQL aborts the migration (it waited first, so its backend looks for a
    # deadlock first, deadlock_timeout after it began to wait):
    # the runner applies it again once the write is done, instead of failing the deploy.
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await apply_migrations(conn)
    known = load_migrations()
    version = len(known) + 1
    two_tables = Migration(
        version,
        f"{version:04d}_two_tables.sql",
        "LOCK TABLE timefuse_destinations IN ACCESS EXCLUSIVE MODE;\n"
        "LOCK TABLE events IN ACCESS EXCLUSIVE MODE;\n",
    )
    monkeypatch.setattr(migrations, "load_migrations", lambda: [*known, two_tables])
    with psycopg.connect(postgres_dsn) as write:
        write.execute("UPDATE events SET attempts = attempts")  # holds events
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            migrating = asyncio.create_task(apply_migrations(conn))
            await _until_an_access_exclusive_lock_waits(postgres_dsn)
            await asyncio.to_thread(write.execute, "SELECT count(*) FROM timefuse_destinations")
            write.commit()
            applied = await asyncio.wait_for(migrating, timeout=30)
    assert applied == [two_tables.name]


async def _until_an_access_exclusive_lock_waits(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        for _ in range(400):
            waiting = db.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE d.datname = current_database() AND NOT l.granted"
                " AND l.mode = 'AccessExclusiveLock'"
            ).fetchone()
            if waiting is not None and waiting[0]:
                return
            await asyncio.sleep(0.025)
    raise AssertionError("the migration never waited")
