"""A shared claim reads the due index about as far as it looks, not through the whole backlog.

Its first statement looks at the earliest due rows and finds their destinations; the claim
itself then reads those destinations' due rows. When each has one due row and thousands of
others' wait behind them, it must stop where the first statement stopped: reading on would make
every claim cost the backlog (a claim of 100 took 36 ms instead of 11 with 20,000 due, and a
backlog of 100,000 receivers drained at some hundreds a second).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.postgres.conftest import Db
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.ports.store import ClaimRequest, DestinationRule, SharedLimits
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.postgres

BACKLOG = 3000
LIMIT = 50

DUE_INDEX_READS = """
SELECT COALESCE(sum(idx_tup_read), 0) FROM pg_stat_user_indexes
 WHERE relname LIKE 'events%' AND indexrelname LIKE '%next_attempt_at%'
"""


async def reads_after_closing(store: Store, db: Db) -> int:
    """The due index's entries read, once the store's connections have gone (a backend
    reports its counts when it ends, so they are all in when the figure stops moving)."""
    await store.close()
    last, steady_since = -1, time.monotonic()
    while time.monotonic() - steady_since < 0.5:
        db.execute("SELECT pg_stat_clear_snapshot()")
        row = db.execute(DUE_INDEX_READS).fetchone()
        assert row is not None
        if int(row[0]) != last:
            last, steady_since = int(row[0]), time.monotonic()
        await asyncio.sleep(0.05)
    return last


async def test_a_claim_of_one_event_per_destination_stops_where_it_looked(
    postgres_dsn: str, db: Db
) -> None:
    store = Store(PostgresEventStore(postgres_dsn, pool_size=2))
    await store.open()
    now = datetime.now(UTC)
    events = [
        make_event(
            destination=f"https://receiver-{n}.example/hook",
            scheduled_at=now - timedelta(minutes=30) + timedelta(milliseconds=n),
        )
        for n in range(BACKLOG)
    ]
    for start in range(0, BACKLOG, 1000):
        await store.insert_many(events[start : start + 1000])
    before = await reads_after_closing(store, db)

    store = Store(PostgresEventStore(postgres_dsn, pool_size=2))
    await store.open()
    shared = SharedLimits(default=DestinationRule(concurrency=10))
    batch = await store.claim(ClaimRequest("w", LIMIT, 60.0, shared=shared))
    read = await reads_after_closing(store, db) - before

    # The earliest due, one per destination, as before.
    assert [event.id for event in batch.events] == [event.id for event in events[:LIMIT]]
    # What the claim looked at (twice its limit) and then read again, not the backlog.
    assert LIMIT <= read <= 6 * LIMIT, read
