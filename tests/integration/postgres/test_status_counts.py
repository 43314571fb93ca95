"""The status counters on PostgreSQL: writers add to slots of their own, and storage
preparation folds them into one row per (source, status), dropping those that count nothing."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.integration.postgres.conftest import Db, counted_by_scan
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.postgres

Rows = list[tuple[str, str, int, int]]


def counter_rows(db: Db) -> Rows:
    rows = db.execute(
        "SELECT source, status, slot, n FROM timefuse_status_counts ORDER BY source, status, slot"
    )
    return [
        (str(source), str(status), int(str(slot)), int(str(n))) for source, status, slot, n in rows
    ]


def counted_per_source(db: Db) -> dict[tuple[str, str], int]:
    rows = db.execute("SELECT source, status, count(*) FROM events GROUP BY source, status")
    return {(str(source), str(status)): int(str(n)) for source, status, n in rows}


@pytest.fixture
def two_slots(postgres_dsn: str) -> Iterator[tuple[Db, Db]]:
    """Two connections whose changes are counted in different slots (backend pid mod 16)."""
    opened: list[Db] = []
    try:
        by_slot: dict[int, Db] = {}
        while len(by_slot) < 2:
            assert len(opened) < 32, "no two connections with different counting slots"
            conn = psycopg.connect(postgres_dsn, autocommit=True)
            opened.append(conn)
            by_slot.setdefault(conn.info.backend_pid % 16, conn)
        first, second = by_slot.values()
        yield first, second
    finally:
        for conn in opened:
            conn.close()


def set_status(conn: Db, event_ids: list[str], status: EventStatus) -> None:
    conn.execute("UPDATE events SET status = %s WHERE id = ANY(%s)", (status.value, event_ids))


async def test_preparing_storage_folds_the_counters_to_one_row_per_source_and_status(
    pg_store: Store, db: Db, two_slots: tuple[Db, Db]
) -> None:
    adapter = pg_store.adapter
    assert isinstance(adapter, PostgresEventStore)
    alpha = [make_event(source="alpha") for _ in range(6)]
    beta = [make_event(source="beta") for _ in range(2)]
    await pg_store.insert_many([*alpha, *beta])
    first, second = two_slots
    # alpha's COMPLETED is counted in two slots; beta's PENDING nets to zero (its events all
    # moved on), spread over the inserting slot and the ones that moved them.
    set_status(first, [alpha[0].id, alpha[1].id], EventStatus.COMPLETED)
    set_status(second, [alpha[2].id], EventStatus.COMPLETED)
    set_status(first, [beta[0].id], EventStatus.CANCELLED)
    set_status(second, [beta[1].id], EventStatus.CANCELLED)
    before = counter_rows(db)
    assert len([row for row in before if row[:2] == ("alpha", "COMPLETED")]) == 2
    beta_pending = [n for source, status, _, n in before if (source, status) == ("beta", "PENDING")]
    assert beta_pending
    assert sum(beta_pending) == 0
    totals = await pg_store.count_by_status()

    assert await adapter.prepare_storage() == []

    after = counter_rows(db)
    assert [(source, status, n) for source, status, _, n in after] == sorted(
        (source, status, n) for (source, status), n in counted_per_source(db).items()
    )
    assert [(source, status, n) for source, status, _, n in after] == [
        ("alpha", "COMPLETED", 3),
        ("alpha", "PENDING", 3),
        ("beta", "CANCELLED", 2),
    ]
    assert await pg_store.count_by_status() == totals == counted_by_scan(db)
    assert await pg_store.count_by_status(["beta"]) == counted_by_scan(db, "beta")


async def test_counting_goes_on_after_the_counters_are_folded(
    pg_store: Store, db: Db, two_slots: tuple[Db, Db]
) -> None:
    adapter = pg_store.adapter
    assert isinstance(adapter, PostgresEventStore)
    events = [make_event(source="alpha") for _ in range(4)]
    await pg_store.insert_many(events)
    await adapter.prepare_storage()
    first, second = two_slots
    set_status(first, [events[0].id], EventStatus.CANCELLED)
    set_status(second, [events[1].id, events[2].id], EventStatus.CANCELLED)
    assert await pg_store.count_by_status() == counted_by_scan(db)
    await adapter.prepare_storage()
    assert [(source, status, n) for source, status, _, n in counter_rows(db)] == [
        ("alpha", "CANCELLED", 3),
        ("alpha", "PENDING", 1),
    ]
    assert await pg_store.count_by_status() == counted_by_scan(db)
