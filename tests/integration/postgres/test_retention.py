"""Retention on PostgreSQL: dead partitions are dropped whole, live ones only lose old rows."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.integration.postgres.conftest import Db, counted_by_scan, partitions
from timefuse.adapters.postgres.partitions import create_partitions, period_start
from timefuse.adapters.postgres.retention import RETENTION_LOCK_KEY
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
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


@dataclass
class OldDays:
    """Five old days with their partitions, and events in them and in DEFAULT."""

    days: dict[str, datetime]
    doomed: list[Event]  # every row of the "dead" day: all terminal, all old
    kept: list[Event]  # PENDING, PROCESSING, and terminal but updated after the cutoff
    stragglers: list[Event]  # old terminal rows beside live ones, or in DEFAULT


async def _arrange_old_days(dsn: str, store: Store, db: Db) -> OldDays:
    names = ("dead", "empty", "pending", "processing", "recent")
    days = {name: _day(40 - n) for n, name in enumerate(names)}
    await _create_day_partitions(dsn, *days.values())
    kept = [
        _old(days["pending"], EventStatus.PENDING, next_attempt_at=NOW + timedelta(days=1)),
        _old(days["processing"], EventStatus.PROCESSING, locked_by="w", lock_expires_at=NOW),
        _old(days["recent"], EventStatus.COMPLETED, updated_at=NOW - timedelta(days=1)),
    ]
    stragglers = [_old(days["pending"], EventStatus.COMPLETED) for _ in range(3)]
    # No partition covers these two: they sit in the DEFAULT partition.
    stragglers += [
        make_event(scheduled_at=datetime(2000, 1, 1, tzinfo=UTC), status=EventStatus.FAILED,
                   updated_at=LONG_AGO),
        make_event(scheduled_at=NOW + timedelta(days=400), status=EventStatus.CANCELLED,
                   updated_at=LONG_AGO),
    ]  # fmt: skip
    terminal = [status for status in EventStatus if status.is_terminal]
    doomed = [
        _old(days["dead"], status, source=source)
        for status in terminal
        for source in ("billing", "shipping")
    ]
    await store.adapter.insert_many([*doomed, *kept, *stragglers])
    for event in (doomed[0], stragglers[0], stragglers[-1]):
        _add_attempt(db, event)
    return OldDays(days, doomed, kept, stragglers)


async def test_drops_dead_partitions_and_keeps_the_ones_with_live_events(
    postgres_dsn: str, pg_store: Store, db: Db
) -> None:
    old = await _arrange_old_days(postgres_dsn, pg_store, db)

    deleted = await pg_store.delete_terminal_before(CUTOFF, batch_size=2)

    assert deleted == len(old.doomed) + len(old.stragglers)
    remaining = set(partitions(db, "events"))
    assert {f"events_p{day:%Y%m%d}" for day in old.days.values()} - remaining == {
        f"events_p{old.days['dead']:%Y%m%d}",
        f"events_p{old.days['empty']:%Y%m%d}",
    }
    assert f"event_attempts_p{old.days['dead']:%Y%m%d}" not in partitions(db, "event_attempts")
    for kept in old.kept:
        assert await pg_store.get(kept.id) == kept
    gone = [*old.doomed, *old.stragglers]
    for event in gone:
        assert await pg_store.get(event.id) is None
        assert await pg_store.attempts(event.id) == []
    ids = [event.id for event in gone]
    assert db.execute("SELECT count(*) FROM event_ids WHERE id = ANY(%s)", (ids,)).fetchone() == (
        0,
    )
    assert db.execute("SELECT count(*) FROM event_attempts").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM timefuse_event_id_cleanup").fetchone() == (0,)
    assert await pg_store.count_by_status() == counted_by_scan(db)
    for source in ("billing", "shipping", "tests"):
        assert await pg_store.count_by_status([source]) == counted_by_scan(db, source)
    assert await pg_store.delete_terminal_before(CUTOFF) == 0


async def test_forgetting_the_ids_of_a_dropped_range_spares_events_stored_since(
    pg_store: Store, db: Db
) -> None:
    day = _day(50)
    # An event of that day arriving after its partition was dropped lands in DEFAULT.
    late = make_event(scheduled_at=day + timedelta(hours=2), next_attempt_at=NOW)
    orphan_id = "orphan-of-a-dropped-partition"
    await pg_store.adapter.insert_many([late])
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
    postgres_dsn: str, pg_store: Store, db: Db
) -> None:
    await pg_store.adapter.insert_many(
        [make_event(status=EventStatus.COMPLETED, updated_at=LONG_AGO) for _ in range(3)]
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
        assert await pg_store.delete_terminal_before(CUTOFF) == 0
        # Explicitly: a closing session releases its locks only once its backend has exited.
        other.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))
    assert await pg_store.delete_terminal_before(CUTOFF) == 3
    assert await pg_store.count_by_status() == counted_by_scan(db)


async def test_an_operators_pass_waits_for_a_running_one_rather_than_answering_0(
    postgres_dsn: str, pg_store: Store, db: Db
) -> None:
    await pg_store.adapter.insert_many(
        [make_event(status=EventStatus.COMPLETED, updated_at=LONG_AGO) for _ in range(3)]
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
        requested = asyncio.create_task(pg_store.delete_terminal_before(CUTOFF, wait=True))
        done, _ = await asyncio.wait({requested}, timeout=0.5)
        assert not done, "the pass answered while another one held retention"
        other.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))
    assert await asyncio.wait_for(requested, timeout=30) == 3
    assert await pg_store.count_by_status() == counted_by_scan(db)


async def test_a_partition_too_busy_to_drop_waits_for_the_next_run(
    postgres_dsn: str, pg_store: Store, db: Db
) -> None:
    day = _day(45)
    await _create_day_partitions(postgres_dsn, day)
    dead = _old(day, EventStatus.COMPLETED)
    straggler = make_event(status=EventStatus.CANCELLED, updated_at=LONG_AGO)
    await pg_store.adapter.insert_many([dead, straggler])
    with psycopg.connect(postgres_dsn) as reader:
        reader.execute("SELECT count(*) FROM events")  # a long transaction holding a lock
        # The drop gives up after the lock timeout; the rows still go, one by one.
        assert await pg_store.delete_terminal_before(CUTOFF) == 2
        assert f"events_p{day:%Y%m%d}" in partitions(db, "events")
    assert await pg_store.delete_terminal_before(CUTOFF) == 0
    assert f"events_p{day:%Y%m%d}" not in partitions(db, "events")
    assert await pg_store.count_by_status() == counted_by_scan(db)
