"""SqliteEventStore opens files made by earlier versions, migrating them in place.

``data/sqlite_schema_v1.sql`` is schema.sql as version 1 shipped it, frozen here: a file
created by that code is what ``open()`` must keep working with.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import pytest

from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.adapters.sqlite.connection import MIGRATIONS, SCHEMA_VERSION
from timefuse.domain.destination import destination_key
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventQuery, StoreError
from timefuse.service.store import Store

V1_SCHEMA = Path(__file__).parent / "data" / "sqlite_schema_v1.sql"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_DONE_ID = "0195550a-0000-7000-8000-000000000001"
_CLAIMED_ID = "0195550a-0000-7000-8000-000000000002"


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _insert_v1_event(conn: sqlite3.Connection, event_id: str, status: str, **extra: object) -> None:
    columns = {
        "id": event_id,
        "external_job_id": f"job-{event_id[-1]}",
        "source": "billing",
        "scheduled_at": _micros(_CREATED + timedelta(hours=1)),
        "delivery_type": "http",
        "destination": "https://receiver.example/hook",
        "payload": b'{"n": 1}',
        "next_attempt_at": _micros(_CREATED + timedelta(hours=1)),
        "created_at": _micros(_CREATED),
        "updated_at": _micros(_CREATED + timedelta(hours=1, seconds=2)),
        "max_retries": 3,
        "status": status,
        **extra,
    }
    names = ", ".join(columns)
    marks = ", ".join(f":{name}" for name in columns)
    conn.execute(f"INSERT INTO events ({names}) VALUES ({marks})", columns)


def _insert_v1_attempt(conn: sqlite3.Connection, event_id: str, attempt: int) -> None:
    conn.execute(
        "INSERT INTO event_attempts (event_id, attempt, started_at, duration_ms, outcome,"
        " status_code, error, worker) VALUES (?, ?, ?, 12.5, ?, 503, 'HTTP 503', 'worker-a')",
        (event_id, attempt, _micros(_CREATED + timedelta(hours=1, seconds=attempt)), "RETRIABLE"),
    )


def _create_v1_file(path: Path) -> None:
    """A file as version 1 left it: one event delivered on its 2nd attempt, one mid-claim."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(V1_SCHEMA.read_text("utf-8"))
        _insert_v1_event(
            conn, _DONE_ID, "COMPLETED", attempts=2, retry_count=1, last_error="HTTP 503"
        )
        _insert_v1_attempt(conn, _DONE_ID, 1)
        _insert_v1_attempt(conn, _DONE_ID, 2)
        expired = _micros(datetime.now(UTC) - timedelta(minutes=1))
        _insert_v1_event(
            conn,
            _CLAIMED_ID,
            "PROCESSING",
            attempts=1,
            locked_by="old-worker",
            lock_expires_at=expired,
        )
    finally:
        conn.close()


def _schema_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        version: int = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        return version
    finally:
        conn.close()


async def test_opens_a_version_1_file_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _create_v1_file(path)
    store = Store(SqliteEventStore(str(path)))
    await store.open()
    try:
        done = await store.get(_DONE_ID)
        assert done is not None
        assert (done.status, done.attempts, done.last_error) == (
            EventStatus.COMPLETED,
            2,
            "HTTP 503",
        )
        assert done.scheduled_at == _CREATED + timedelta(hours=1)
        history = await store.attempts(_DONE_ID)
        assert [(r.sequence, r.attempt) for r in history] == [(1, 1), (2, 2)]
        page = await store.list_events(EventQuery(sources=["billing"]), 10)
        assert sorted(event.id for event in page.events) == [_DONE_ID, _CLAIMED_ID]
        # The per-source counts start from the events the file already held.
        counts = await store.count_by_status(sources=["billing"])
        assert (counts[EventStatus.COMPLETED], counts[EventStatus.PROCESSING]) == (1, 1)
        assert sum(counts.values()) == 2
    finally:
        await store.close()
    assert _schema_version(path) == SCHEMA_VERSION == 6


async def test_a_claim_made_before_the_migration_expires_with_an_attempt_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    _create_v1_file(path)
    store = Store(SqliteEventStore(str(path)))
    await store.open()
    try:
        assert await store.recover_expired_leases() == 1
        (record,) = await store.attempts(_CLAIMED_ID)
        # Version 1 kept no claim time; a claim was the row's last update.
        assert record.started_at == _CREATED + timedelta(hours=1, seconds=2)
        assert (record.outcome, record.error, record.worker, record.sequence) == (
            OutcomeKind.RETRIABLE,
            LEASE_EXPIRED_ERROR,
            "old-worker",
            1,
        )
    finally:
        await store.close()


def _describe(path: Path) -> dict[str, object]:
    """Every table's columns and every index's definition, independent of DDL spelling."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
        description: dict[str, object] = {}
        for kind, name, table, sql in objects:
            if kind == "table":
                description[name] = conn.execute(f"PRAGMA table_xinfo({name})").fetchall()
            else:
                spelled = re.sub(r"\s+", " ", sql.replace("IF NOT EXISTS ", ""))
                description[name] = (table, spelled)
        return description
    finally:
        conn.close()


async def test_a_migrated_file_has_the_schema_of_a_new_one(tmp_path: Path) -> None:
    migrated, new = tmp_path / "migrated.db", tmp_path / "new.db"
    _create_v1_file(migrated)
    for path in (migrated, new):
        store = SqliteEventStore(str(path))
        await store.open()
        await store.close()
    description = _describe(new)
    assert {"events", "event_attempts", "events_schedule", "event_attempts_event_seq"} <= set(
        description
    )
    assert _describe(migrated) == description


async def test_reopens_a_file_it_created(tmp_path: Path) -> None:
    path = str(tmp_path / "current.db")
    store = SqliteEventStore(path)
    await store.open()
    await store.close()
    reopened = Store(SqliteEventStore(path))
    await reopened.open()
    try:
        assert sum((await reopened.count_by_status()).values()) == 0
    finally:
        await reopened.close()


async def test_refuses_a_file_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA.read_text("utf-8"))
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SqliteEventStore(str(path)).open()


def test_every_version_after_the_first_has_a_migration_script() -> None:
    assert sorted(MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))
    folder = files("timefuse") / "migrations" / "sqlite"
    for script in MIGRATIONS.values():
        assert (folder / script).is_file()


async def test_a_migrated_file_gives_its_live_events_their_destination_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    _create_v1_file(path)
    store = Store(SqliteEventStore(str(path)))
    await store.open()
    try:
        claimed = await store.get(_CLAIMED_ID)
        assert claimed is not None
        assert claimed.destination_key == destination_key(
            claimed.delivery_type, claimed.destination
        )
        # A claim made before the migration is its one claim: its outcome quotes claim 1.
        assert claimed.claim_count == claimed.attempts
    finally:
        await store.close()
