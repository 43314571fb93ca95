"""A shared claim reads the due index about as far as it looks, not through the whole backlog,
and claims queued behind one destination's lock each still get their share.

A shared claim first finds the destinations of the earliest due rows, locks them, then reads
their due rows. When each has one due row and thousands of others' wait behind them, it must
stop near where it looked: reading on made every claim cost the backlog (a claim of 100 took
36 ms instead of 11 with 20,000 due to as many receivers). Where it stops is decided once the
locks are held, so a claim that waited behind others' reads past what they took.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.integration.postgres.conftest import Db
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres.queries import LOCK_NAMESPACE
from timefuse.domain.event import Event
from timefuse.ports.store import ClaimBatch, ClaimRequest, DestinationRule, SharedLimits
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.postgres

BACKLOG = 3000
LIMIT = 50
CAPPED = SharedLimits(default=DestinationRule(concurrency=10))

DUE_INDEX_READS = """
SELECT COALESCE(sum(idx_tup_read), 0) FROM pg_stat_user_indexes
 WHERE relname LIKE 'events%' AND indexrelname LIKE '%next_attempt_at%'
"""

OTHER_CLIENTS = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend'
   AND pid <> pg_backend_pid()
"""

WAITING_FOR_A_DESTINATION = """
SELECT count(*) FROM pg_locks
 WHERE locktype = 'advisory' AND classid = %s AND NOT granted
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def opened(dsn: str) -> Store:
    store = Store(PostgresEventStore(dsn, pool_size=2))
    await store.open()
    return store


async def stored(dsn: str, events: list[Event]) -> None:
    store = await opened(dsn)
    try:
        for start in range(0, len(events), 1000):
            await store.insert_many(events[start : start + 1000])
    finally:
        await store.close()


async def until(db: Db, query: str, expected: int, *params: object) -> None:
    for _ in range(400):
        row = db.execute(query, params).fetchone()
        if row is not None and int(row[0]) == expected:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"still not {expected}: {query}")


async def due_index_reads_after_closing(store: Store, db: Db) -> int:
    """The due index's entries read so far: a backend has reported its counts once it has
    left ``pg_stat_activity``, so the store's connections are closed and waited for first."""
    await store.close()
    await until(db, OTHER_CLIENTS, 0)
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(DUE_INDEX_READS).fetchone()
    assert row is not None
    return int(row[0])


async def first_claim_and_its_reads(
    dsn: str, db: Db, events: list[Event]
) -> tuple[ClaimBatch, int]:
    """Store ``events``, then one claim of :data:`LIMIT` (a cap of 10 per destination): the
    claim and the due index's entries it read."""
    await stored(dsn, events)
    store = await opened(dsn)
    before = await due_index_reads_after_closing(store, db)
    store = await opened(dsn)
    batch = await store.claim(ClaimRequest("w", LIMIT, 60.0, shared=CAPPED))
    return batch, await due_index_reads_after_closing(store, db) - before


async def test_a_claim_of_one_event_per_destination_stops_where_it_looked(
    postgres_dsn: str, db: Db
) -> None:
    now = datetime.now(UTC)
    events = [
        make_event(
            destination=f"https://receiver-{n}.example/hook",
            scheduled_at=now - timedelta(minutes=30) + timedelta(milliseconds=n),
        )
        for n in range(BACKLOG)
    ]
    batch, read = await first_claim_and_its_reads(postgres_dsn, db, events)

    # The earliest due, one per destination, as before.
    assert [event.id for event in batch.events] == [event.id for event in events[:LIMIT]]
    # What the claim looked at (its limit), then the horizon's and its own reads of twice
    # that once locked (250 in all); not the backlog.
    assert LIMIT <= read <= 6 * LIMIT, read


async def test_claims_that_queued_behind_a_destinations_lock_each_get_a_full_batch(
    postgres_dsn: str, db: Db
) -> None:
    now = datetime.now(UTC)
    destination = "https://busy.example/hook"
    events = [
        make_event(destination=destination, scheduled_at=now - timedelta(seconds=10 + n / 1000))
        for n in range(2000)
    ]
    await stored(postgres_dsn, events)
    key = events[0].destination_key
    stores = [await opened(postgres_dsn) for _ in range(4)]
    try:
        # The destination's lock held here: the four claims find its due rows, then wait for
        # it, and go one after another once it is let go.
        with psycopg.connect(postgres_dsn, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, key))
            shared = SharedLimits(default=DestinationRule())  # no cap: each may take 100
            claims = [
                asyncio.create_task(store.claim(ClaimRequest(f"w{n}", 100, 60.0, shared=shared)))
                for n, store in enumerate(stores)
            ]
            await until(db, WAITING_FOR_A_DESTINATION, 4, LOCK_NAMESPACE)
            holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_NAMESPACE, key))
            batches = await asyncio.gather(*claims)
    finally:
        for store in stores:
            await store.close()

    assert [len(batch.events) for batch in batches] == [100, 100, 100, 100]
    ids = [event.id for batch in batches for event in batch.events]
    assert len(set(ids)) == 400
    # Together, the 400 earliest due.
    assert set(ids) == {event.id for event in sorted(events, key=lambda e: e.next_attempt_at)[:400]}


async def test_a_claim_stops_where_it_looked_among_events_due_at_one_instant(
    postgres_dsn: str, db: Db
) -> None:
    # A cron time or a herd: every event due at the same instant, each to its own receiver,
    # stored in an order that is not their ids' (as ids made from dedup keys are not).
    at = datetime.now(UTC) - timedelta(minutes=5)
    events = [
        make_event(destination=f"https://receiver-{n}.example/hook", scheduled_at=at)
        for n in range(BACKLOG)
    ]
    shuffled = random.Random(7).sample(events, len(events))
    first, read = await first_claim_and_its_reads(postgres_dsn, db, shuffled)
    store = await opened(postgres_dsn)
    try:
        rest = []
        while batch := (await store.claim(ClaimRequest("w", 500, 60.0, shared=CAPPED))).events:
            rest.extend(batch)
    finally:
        await store.close()

    assert len(first.events) == LIMIT
    assert LIMIT <= read <= 6 * LIMIT, read
    # None passed over: the later claims take every other one, each once.
    ids = [event.id for event in [*first.events, *rest]]
    assert sorted(ids) == sorted(event.id for event in events)


async def test_events_due_at_one_instant_across_partitions_are_each_claimed(
    postgres_dsn: str, db: Db
) -> None:
    # Due at the same instant (handed back together, say), stored in two partitions: today's
    # (later ids) and an older one's. Each claim gets its full batch, none comes back empty.
    now = datetime.now(UTC)
    due = now - timedelta(seconds=30)
    # The older ones made first: smaller ids, as ids made from scheduled times are.
    older = [
        make_event(
            destination=f"https://o{n}.example/h",
            scheduled_at=now - timedelta(days=3),
            next_attempt_at=due,
        )
        for n in range(300)
    ]
    today = [
        make_event(destination=f"https://t{n}.example/h", scheduled_at=now, next_attempt_at=due)
        for n in range(500)
    ]
    await stored(postgres_dsn, [*today, *older])
    db.execute("ANALYZE events")  # as autovacuum would: the plan then reads by due time
    store = await opened(postgres_dsn)
    try:
        shared = CAPPED
        sizes = []
        claimed: list[str] = []
        for _ in range(8):
            batch = await store.claim(ClaimRequest("w", 100, 60.0, shared=shared))
            sizes.append(len(batch.events))
            claimed.extend(event.id for event in batch.events)
    finally:
        await store.close()

    assert sizes == [100] * 8
    assert sorted(claimed) == sorted(event.id for event in [*today, *older])
