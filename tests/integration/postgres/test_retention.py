"""Retention on PostgreSQL: dead partitions are dropped whole, live ones only lose old rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.integration.postgres.conftest import Db, counted_by_scan, partitions
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres.partitions import create_partitions, period_start
from timefuse.adapters.postgres.retention import RETENTION_LOCK_KEY
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC)
CUTOFF = NOW - timedelta(days=30)
LONG_AGO = NOW - timedelta(days=35)


def _day(days_ago: int) -> datetime:
    return period_start(NOW - timedelta(days=days_ago), "day")


async def _create_day_partitions(dsn: str, *days: datetime) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SET TIME ZONE 'UTC'")
        await create_partitions(conn, [(day, day + timedelta(days=1)) for day in days])


def _old(day: datetime, status: EventStatus, **overrides: object) -> Event:
    fields: dict[str, object] = {"updated_at": LONG_AGO, "status": status}
    fields.update(overrides)
    return make_event(scheduled_at=day + timedelta(hours=1), **fields)


def _add_attempt(db: Db, event: Event) -> None:
    db.execute(
        "INSERT INTO event_attempts (event_id, event_scheduled_at, attempt, started_at,"
        " duration_ms, outcome, worker) VALUES (%s, %s, 1, %s, 1.0, 'SUCCESS', 'worker-a')",
        (event.id, event.scheduled_at, event.scheduled_at),
    )


async def test_drops_dead_partitions_and_keeps_the_ones_with_live_events(
    postgres_dsn: str, pg_store: PostgresEventStore, db: Db
) -> None:
    dead, empty, pending_day, processing_day, recent_day = (_day(n) for n in (40, 39, 38, 37, 36))
    await _create_day_partitions(postgres_dsn, dead, empty, pending_day, processing_day, recent_day)
    doomed = [_old(dead, status) for status in EventStatus if status.is_terminal]
    pending = _old(pending_day, EventStatus.PENDING, next_attempt_at=NOW + timedelta(days=1))
    pending_neighbours = [_old(pending_day, EventStatus.COMPLETED) for _ in range(3)]
    processing = _old(
        processing_day, EventStatus.PROCESSING, locked_by="worker-a", lock_expires_at=NOW
    )
    recent = _old(recent_day, EventStatus.COMPLETED, updated_at=NOW - timedelta(days=1))
    # No partition covers these: they sit in the DEFAULT partition.
    in_default = [
        make_event(scheduled_at=moment, status=status, updated_at=LONG_AGO)
        for moment, status in [
            (datetime(2000, 1, 1, tzinfo=UTC), EventStatus.FAILED),
            (NOW + timedelta(days=400), EventStatus.CANCELLED),
        ]
    ]
    everything = [*doomed, pending, *pending_neighbours, processing, recent, *in_default]
    await pg_store.insert_many(everything)
    for event in (doomed[0], pending_neighbours[0], in_default[0]):
        _add_attempt(db, event)

    deleted = await pg_store.delete_terminal_before(CUTOFF, batch_size=2)

    assert deleted == len(doomed) + len(pending_neighbours) + len(in_default)
    remaining = set(partitions(db, "events"))
    assert f"events_p{dead:%Y%m%d}" not in remaining
    assert f"events_p{empty:%Y%m%d}" not in remaining
    assert f"event_attempts_p{dead:%Y%m%d}" not in set(partitions(db, "event_attempts"))
    for day in (pending_day, processing_day, recent_day):
        assert f"events_p{day:%Y%m%d}" in remaining
    for kept in (pending, processing, recent):
        assert await pg_store.get(kept.id) == kept
    for gone in (*doomed, *pending_neighbours, *in_default):
        assert await pg_store.get(gone.id) is None
        assert await pg_store.attempts(gone.id) == []
    gone_ids = [event.id for event in (*doomed, *pending_neighbours, *in_default)]
    assert db.execute(
        "SELECT count(*) FROM event_ids WHERE id = ANY(%s)", (gone_ids,)
    ).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM event_attempts").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM timefuse_event_id_cleanup").fetchone() == (0,)
    assert await pg_store.count_by_status() == counted_by_scan(db)
    assert await pg_store.delete_terminal_before(CUTOFF) == 0


async def test_forgetting_the_ids_of_a_dropped_range_spares_events_stored_since(
    pg_store: PostgresEventStore, db: Db
) -> None:
    day = _day(50)
    # An event of that day arriving after its partition was dropped lands in DEFAULT.
    late = make_event(scheduled_at=day + timedelta(hours=2), next_attempt_at=NOW)
    orphan_id = "orphan-of-a-dropped-partition"
    await pg_store.insert_many([late])
    db.execute("INSERT INTO event_ids (id, scheduled_at) VALUES (%s, %s)", (orphan_id, day))
    db.execute(
        "INSERT INTO timefuse_event_id_cleanup VALUES (%s, %s)", (day, day + timedelta(days=1))
    )
    assert await pg_store.delete_terminal_before(CUTOFF) == 0
    assert await pg_store.get(late.id) == late
    ids = db.execute("SELECT id FROM event_ids WHERE id IN (%s, %s)", (late.id, orphan_id))
    assert [row[0] for row in ids] == [late.id]
    assert db.execute("SELECT count(*) FROM timefuse_event_id_cleanup").fetchone() == (0,)


async def test_only_one_retention_runs_at_a_time(
    postgres_dsn: str, pg_store: PostgresEventStore, db: Db
) -> None:
    await pg_store.insert_many(
        [make_event(status=EventStatus.COMPLETED, updated_at=LONG_AGO) for _ in range(3)]
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
        assert await pg_store.delete_terminal_before(CUTOFF) == 0
    assert await pg_store.delete_terminal_before(CUTOFF) == 3
    assert await pg_store.count_by_status() == counted_by_scan(db)
