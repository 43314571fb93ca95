"""Dated partitions: any date is accepted; partitions are created ahead without moving a row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.integration.postgres.conftest import Db, counted_by_scan, partition_of, partitions
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres.partitions import next_period, period_start, periods_ahead
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import claim

pytestmark = pytest.mark.postgres


def _day_name(table: str, moment: datetime) -> str:
    return f"{table}_p{moment:%Y%m%d}"


@pytest.mark.parametrize(
    ("granularity", "moment", "start", "following"),
    [
        ("day", "2025-03-30T23:59:59+00:00", "2025-03-30", "2025-03-31"),
        ("day", "2025-03-31T01:30:00+02:00", "2025-03-30", "2025-03-31"),
        ("week", "2025-01-01T12:00:00+00:00", "2024-12-30", "2025-01-06"),
        ("month", "2024-12-31T23:00:00+00:00", "2024-12-01", "2025-01-01"),
        ("month", "2024-01-31T00:00:00+00:00", "2024-01-01", "2024-02-01"),
    ],
)
def test_periods_are_utc_days_monday_weeks_and_calendar_months(
    granularity: str, moment: str, start: str, following: str
) -> None:
    lower = period_start(datetime.fromisoformat(moment), granularity)
    assert lower == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert next_period(lower, granularity) == datetime.fromisoformat(following).replace(tzinfo=UTC)


def test_periods_ahead_are_the_current_one_and_the_next_n() -> None:
    periods = periods_ahead(datetime(2025, 12, 30, 15, tzinfo=UTC), "day", 3)
    assert [lower.day for lower, _ in periods] == [30, 31, 1, 2]
    assert all(upper == next_period(lower, "day") for lower, upper in periods)


async def test_opening_creates_the_partitions_ahead_once(postgres_dsn: str, db: Db) -> None:
    store = PostgresEventStore(postgres_dsn, partitions_ahead=3)
    await store.open()
    try:
        today = period_start(datetime.now(UTC), "day")
        expected = [_day_name("events", today + timedelta(days=n)) for n in range(4)]
        assert partitions(db, "events") == sorted([*expected, "events_default"])
        assert len(partitions(db, "event_attempts")) == 5
        assert await store.prepare_storage() == []
    finally:
        await store.close()


async def test_accepts_events_next_year_and_ten_years_ahead(pg_store: Store, db: Db) -> None:
    now = datetime.now(UTC)
    far = [make_event(scheduled_at=now + timedelta(days=days)) for days in (366, 3653)]
    assert await pg_store.insert_many(far) == {event.id: event.id for event in far}
    for event in far:
        assert await pg_store.get(event.id) == event
        assert await pg_store.find_by_external_id(event.external_job_id) == [event]
        assert partition_of(db, "events", event.id) == "events_default"
    assert (await pg_store.count_by_status())[EventStatus.PENDING] == 2
    # When their time comes they are claimed like any other: only the due time changes.
    db.execute(
        "UPDATE events SET next_attempt_at = now() - interval '1 second' WHERE id = ANY(%s)",
        ([event.id for event in far],),
    )
    claimed = await claim(pg_store, "worker-a", 10, 30.0)
    assert sorted(event.id for event in claimed) == sorted(event.id for event in far)


async def test_a_period_with_rows_in_default_keeps_them_there_and_gets_no_partition(
    postgres_dsn: str, db: Db
) -> None:
    near = Store(PostgresEventStore(postgres_dsn, partitions_ahead=2))
    await near.open()
    try:
        day = period_start(datetime.now(UTC), "day") + timedelta(days=5)
        # Due now although scheduled in 5 days, so it can be claimed and get an attempt.
        attempted = make_event(
            scheduled_at=day + timedelta(hours=1),
            next_attempt_at=datetime.now(UTC) - timedelta(seconds=1),
        )
        waiting = [make_event(scheduled_at=day + timedelta(hours=h)) for h in (2, 23)]
        await near.insert_many([attempted, *waiting])
        (claimed,) = await claim(near, "worker-a", 10, 30.0)
        await near.record_outcomes([make_outcome(claimed, "worker-a")])
        before = [await near.get(event.id) for event in (attempted, *waiting)]
        history = await near.attempts(attempted.id)

        ahead = PostgresEventStore(postgres_dsn, partitions_ahead=7)
        await ahead.open()  # creates the periods ahead, but not the one with rows in DEFAULT
        await ahead.close()

        names = partitions(db, "events")
        assert _day_name("events", day) not in names
        assert _day_name("events", day + timedelta(days=1)) in names
        for event in (attempted, *waiting):
            assert partition_of(db, "events", event.id) == "events_default"
        assert [await near.get(event.id) for event in (attempted, *waiting)] == before
        assert await near.attempts(attempted.id) == history
        assert await near.count_by_status() == counted_by_scan(db)
        same_day, next_day = (
            make_event(scheduled_at=moment)
            for moment in (day + timedelta(hours=3), day + timedelta(days=1, hours=3))
        )
        await near.insert_many([same_day, next_day])
        assert partition_of(db, "events", same_day.id) == "events_default"
        assert partition_of(db, "events", next_day.id) == _day_name("events", day + timedelta(1))
    finally:
        await near.close()


async def test_an_insert_meeting_a_partition_being_attached_waits_for_it(
    pg_store: Store, postgres_dsn: str, db: Db
) -> None:
    # The state between the two steps of a creation: DEFAULT already refuses the period's
    # rows, its partition is not attached yet. An insert for the period then fails with a
    # check violation, which the store takes for "in a moment": it tries again, and the row
    # lands in the new partition once it is attached.
    lower = period_start(datetime.now(UTC), "day") + timedelta(days=20)
    upper = lower + timedelta(days=1)
    for table, key in (("events", "scheduled_at"), ("event_attempts", "event_scheduled_at")):
        db.execute(
            f"ALTER TABLE {table}_default ADD CONSTRAINT timefuse_creating_test CHECK"
            f" ({key} < '{lower.isoformat()}' OR {key} >= '{upper.isoformat()}') NOT VALID"
        )
    event = make_event(scheduled_at=lower + timedelta(hours=1))
    inserting = asyncio.create_task(pg_store.insert_many([event]))
    await asyncio.sleep(0.3)
    assert not inserting.done(), "the insert gives up at once instead of waiting"
    for table in ("events", "event_attempts"):
        name = _day_name(table, lower)
        db.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        db.execute(
            f"ALTER TABLE {table} ATTACH PARTITION {name}"
            f" FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
        )
        db.execute(f"ALTER TABLE {table}_default DROP CONSTRAINT timefuse_creating_test")
    assert await asyncio.wait_for(inserting, 5) == {event.id: event.id}
    assert partition_of(db, "events", event.id) == _day_name("events", lower)


async def test_a_coarser_granularity_skips_periods_already_covered(
    postgres_dsn: str, db: Db
) -> None:
    daily = PostgresEventStore(postgres_dsn, partitions_ahead=2)
    await daily.open()
    await daily.close()
    days = set(partitions(db, "events"))
    monthly = Store(
        PostgresEventStore(postgres_dsn, partition_granularity="month", partitions_ahead=2)
    )
    await monthly.open()
    try:
        today = datetime.now(UTC)
        covered_until = period_start(today, "day") + timedelta(days=3)
        expected = {
            _day_name(table, lower)
            for lower, _ in periods_ahead(today, "month", 2)
            if lower >= covered_until
            for table in ("events", "event_attempts")
        }
        assert set(partitions(db, "events")) - days == {
            name for name in expected if name.startswith("events_")
        }
        event = make_event(scheduled_at=today + timedelta(days=40))
        await monthly.insert_many([event])
        assert await monthly.get(event.id) == event
    finally:
        await monthly.close()


def test_rejects_an_unknown_granularity() -> None:
    with pytest.raises(ValueError, match="partition_granularity"):
        PostgresEventStore("postgresql://localhost/x", partition_granularity="hour")


async def test_opening_does_not_wait_long_for_a_busy_default_partition(
    postgres_dsn: str, db: Db
) -> None:
    near = PostgresEventStore(postgres_dsn, partitions_ahead=1)
    await near.open()
    await near.close()
    before = partitions(db, "events")
    with psycopg.connect(postgres_dsn) as busy:
        busy.execute("LOCK TABLE events_default IN ACCESS SHARE MODE")  # a long reader
        far = Store(PostgresEventStore(postgres_dsn, partitions_ahead=5))
        await far.open()  # gives up on the partitions after the lock timeout, opens anyway
        try:
            event = make_event()
            await far.insert_many([event])
            assert await far.get(event.id) == event
        finally:
            await far.close()
    assert partitions(db, "events") == before
