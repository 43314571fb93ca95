"""A claim that meets a row a concurrent PATCH moved to another partition.

Events are partitioned by ``scheduled_at``, so a PATCH changing it moves the row. A claim whose
snapshot still shows the row where it was, and which reaches it only after the move commits,
can't lock it: PostgreSQL fails the statement with SQLSTATE 40001 ("tuple to be locked was
already moved to another partition due to concurrent update") instead of skipping the row.
Run again, with a fresh snapshot, the claim finds the row where it now is.

The interleaving is made deterministic: the claiming store's sessions resolve ``now()`` to a
function of the test's, which (in the claiming statement only) first waits for an advisory
lock the test holds. The claim's statement has taken its snapshot and is scanning the due
rows when it waits; the test then moves the event, commits, and lets the claim go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import pytest_asyncio
from psycopg.conninfo import make_conninfo

from tests.integration.postgres.conftest import Db, partition_of
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    ClaimRequest,
    DestinationRule,
    SharedLimits,
)
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.postgres

PAUSE_LOCK = 7301
# Only the statement that claims (not the shared claim's look at due destinations first).
_PAUSING_NOW = f"""
CREATE SCHEMA claim_pause;
CREATE FUNCTION claim_pause.now() RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF pg_catalog.strpos(pg_catalog.current_query(), 'claim_count = e.claim_count + 1') > 0 THEN
        PERFORM pg_catalog.pg_advisory_xact_lock_shared({PAUSE_LOCK});
    END IF;
    RETURN pg_catalog.now();
END $$;
"""
WAITING_FOR_THE_PAUSE = f"""
SELECT count(*) FROM pg_locks
 WHERE locktype = 'advisory' AND objid = {PAUSE_LOCK} AND NOT granted
"""


@pytest_asyncio.fixture
async def pausable_store(pg_store: Store, postgres_dsn: str, db: Db) -> AsyncIterator[Store]:
    """A second store on the same database whose claims wait while PAUSE_LOCK is held."""
    db.execute(_PAUSING_NOW)
    # public first: anything created goes there; claim_pause before pg_catalog: its now().
    dsn = make_conninfo(postgres_dsn, options="-c search_path=public,claim_pause,pg_catalog")
    store = Store(PostgresEventStore(dsn, pool_size=1))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


CLAIMS = {
    "plain": ClaimRequest("worker-a", 10, 30.0),
    "within budgets": ClaimRequest("worker-a", 10, 30.0, default_budget=5),
    "shared limits": ClaimRequest(
        "worker-a", 10, 30.0, shared=SharedLimits(default=DestinationRule())
    ),
}


@pytest.mark.parametrize("request_", CLAIMS.values(), ids=CLAIMS.keys())
async def test_a_claim_meeting_a_row_moved_by_a_patch_claims_it_where_it_now_is(
    pg_store: Store, pausable_store: Store, postgres_dsn: str, db: Db, request_: ClaimRequest
) -> None:
    now = datetime.now(UTC)
    # Three days ago (the DEFAULT partition), moved to tomorrow's; due all along.
    (event,) = [make_event(scheduled_at=now - timedelta(days=3))]
    await pg_store.insert_many([event])
    before = partition_of(db, "events", event.id)

    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as pause:
        await pause.execute("SELECT pg_advisory_lock(%s)", (PAUSE_LOCK,))
        claiming = asyncio.create_task(pausable_store.claim(request_))
        await _until_the_claim_waits(pause, claiming)

        moved = replace(
            event, scheduled_at=now + timedelta(days=1), updated_at=now, version=event.version + 1
        )
        assert await pg_store.amend(moved, basis=AmendBasis.of(event)) is AmendResult.AMENDED
        assert partition_of(db, "events", event.id) != before

        await pause.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_LOCK,))
        batch = await asyncio.wait_for(claiming, timeout=30)

    assert batch is not None
    assert [(e.id, e.scheduled_at, e.locked_by) for e in batch.events] == [
        (event.id, moved.scheduled_at, "worker-a")
    ]


async def _until_the_claim_waits(
    conn: psycopg.AsyncConnection[tuple[object, ...]], claiming: asyncio.Task[object]
) -> None:
    """Return once the claim's statement waits for the pause (it has its snapshot then)."""
    async with asyncio.timeout(30):
        while True:
            if claiming.done():
                raise AssertionError(f"the claim ended before it paused: {claiming.result()}")
            row = await (await conn.execute(WAITING_FOR_THE_PAUSE)).fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(0.01)  # polling the server's lock table, not waiting for time
