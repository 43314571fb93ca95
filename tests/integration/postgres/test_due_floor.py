"""Claims read the due index from a floor, past the entries of events already claimed; events
made due below it by any process are claimed at once, and those no notification announces
after the next lookup (see ``timefuse.adapters.postgres.due_floor``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tests.integration.postgres.conftest import Db
from tests.integration.postgres.test_wakeups_and_leadership import Heard
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres import store as postgres_store
from timefuse.adapters.postgres.due_floor import LOOKUP_SECONDS
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimRef, ClaimRequest, MoveDueResult, StoreError
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome

pytestmark = pytest.mark.postgres

DUE_INDEX_PAGES = """
SELECT COALESCE(sum(idx_blks_hit + idx_blks_read), 0) FROM pg_statio_user_indexes
 WHERE relname LIKE 'events%' AND indexrelname LIKE '%next_attempt_at%'
"""

OTHER_CLIENTS = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend'
   AND pid <> pg_backend_pid()
"""


class Clock:
    """The store's monotonic clock, moved on by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(postgres_store, "time", SimpleNamespace(monotonic=lambda: self.now))

    def past_the_lookup(self) -> None:
        self.now += LOOKUP_SECONDS + 0.1


async def opened(dsn: str) -> Store:
    store = Store(PostgresEventStore(dsn, pool_size=2))
    await store.open()
    return store


@contextlib.asynccontextmanager
async def listening(store: Store) -> AsyncIterator[Heard]:
    """``store`` hearing the due notifications, as a dispatcher's store does."""
    heard, stop = Heard(), asyncio.Event()
    watcher = store.capabilities.due_watcher
    assert watcher is not None
    task = asyncio.create_task(watcher.watch_due(heard, stop))
    try:
        await heard.until(1)  # listening: the "look now" of connecting
        yield heard
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def backlog(n: int, *, age: timedelta) -> list[Event]:
    """``n`` events of one destination due at one instant ``age`` ago (as a herd is)."""
    instant = datetime.now(UTC) - age
    return [make_event(scheduled_at=instant) for _ in range(n)]


async def insert(store: Store, events: list[Event]) -> None:
    for start in range(0, len(events), 1000):
        await store.insert_many(events[start : start + 1000])


async def claim(store: Store, limit: int, worker: str = "w") -> list[str]:
    batch = await store.claim(ClaimRequest(worker, limit, 60.0))
    return [event.id for event in batch.events]


async def pages_read(db: Db, store: Store) -> int:
    """The due index's pages read so far, counting ``store``'s claims: reported once its
    connections have closed."""
    await store.close()
    for _ in range(400):
        if db.execute(OTHER_CLIENTS).fetchone() == (0,):
            break
        await asyncio.sleep(0.025)
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(DUE_INDEX_PAGES).fetchone()
    assert row is not None
    return int(row[0])


async def test_claims_behind_a_claimed_backlog_read_past_it_once_a_second_not_every_claim(
    postgres_dsn: str, db: Db
) -> None:
    # 30,000 due at one instant, 28,000 of them claimed: their entries still lead the due
    # index (until vacuum). Twenty claims of 50 by a store that keeps a floor read them once
    # (its lookup); by one that does not (it hears no notifications), every claim reads them.
    store = await opened(postgres_dsn)
    await insert(store, backlog(30_000, age=timedelta(minutes=10)))
    for _ in range(28):
        assert len(await claim(store, 1000)) == 1000
    start = await pages_read(db, store)

    floored = await opened(postgres_dsn)
    async with listening(floored):
        taken = [await claim(floored, 50) for _ in range(20)]
    with_floor = await pages_read(db, floored) - start

    plain = await opened(postgres_dsn)
    taken += [await claim(plain, 50) for _ in range(20)]
    without = await pages_read(db, plain) - start - with_floor

    assert all(len(ids) == 50 for ids in taken)
    assert len({event_id for ids in taken for event_id in ids}) == 2000
    assert with_floor * 4 < without, (with_floor, without)


@dataclass
class Floored:
    claimer: Store
    other: Store
    heard: Heard
    clock: Clock
    first: list[Event]  # the claimer's first claim: now below its floor


@contextlib.asynccontextmanager
async def past_a_floor(
    dsn: str, monkeypatch: pytest.MonkeyPatch, *also: Event
) -> AsyncIterator[Floored]:
    """A claimer, listening, whose floor stands past the 200 events it claimed (in two claims
    of 100, the second after a lookup) of 300 due ten minutes ago that another store (a second
    process) inserted with ``also``."""
    clock = Clock(monkeypatch)
    claimer, other = await opened(dsn), await opened(dsn)
    try:
        await insert(other, [*backlog(300, age=timedelta(minutes=10)), *also])
        async with listening(claimer) as heard:
            first = await claimer.claim(ClaimRequest("w", 100, 60.0))
            clock.past_the_lookup()
            assert len(await claim(claimer, 100)) == 100  # the floor: where the first stopped
            yield Floored(claimer, other, heard, clock, first.events)
    finally:
        await claimer.close()
        await other.close()


async def test_an_event_another_process_inserts_below_the_floor_is_claimed_at_once(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with past_a_floor(postgres_dsn, monkeypatch) as f:
        late = make_event(scheduled_at=datetime.now(UTC) - timedelta(hours=1))
        await f.other.insert_many([late])
        await f.heard.until(2)  # the connection's "look now", then this insert
        taken = await claim(f.claimer, 10)
    assert taken[0] == late.id
    assert len(taken) == 10


async def test_an_event_another_process_hands_back_below_the_floor_is_claimed_at_once(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with past_a_floor(postgres_dsn, monkeypatch) as f:
        # Handed back due now: a "look now", and the floor goes.
        assert await f.other.hand_back([ClaimRef.of(f.first[0])], 0.0) == 1
        await f.heard.until(2)
        taken = await claim(f.claimer, 10)
    assert taken[0] == f.first[0].id


async def test_an_event_made_due_below_the_floor_unannounced_is_claimed_after_the_next_lookup(
    postgres_dsn: str, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write no notification announces (by hand, say) waits for the floor's next lookup.
    async with past_a_floor(postgres_dsn, monkeypatch) as f:
        unannounced = f.first[0].id
        db.execute(
            "UPDATE events SET status = 'PENDING', locked_by = NULL, lock_expires_at = NULL"
            " WHERE id = %s",
            (unannounced,),
        )
        assert unannounced not in await claim(f.claimer, 10)
        f.clock.past_the_lookup()
        assert (await claim(f.claimer, 10))[0] == unannounced


async def test_a_retry_due_now_and_an_event_moved_below_the_floor_are_claimed_at_once(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = make_event(scheduled_at=datetime.now(UTC) + timedelta(hours=1))
    async with past_a_floor(postgres_dsn, monkeypatch, later) as f:
        retried = f.first[0]
        # A retry is due at the database's now plus its delay: above the floor.
        outcome = make_outcome(retried, "w", EventStatus.PENDING, retry_delay_seconds=0.0)
        assert await f.claimer.record_outcomes([outcome]) == {retried.id}
        assert retried.id in await claim(f.claimer, 200)  # after the last 100 of the backlog
        # Moved by another process to an hour ago: announced with that time.
        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        moved = await f.other.move_due(later.id, an_hour_ago, datetime.now(UTC))
        assert moved is MoveDueResult.MOVED
        await f.heard.until(2)
        assert (await claim(f.claimer, 10))[0] == later.id


async def test_an_event_inserted_while_the_listener_was_cut_off_is_claimed_once_it_is_back(
    postgres_dsn: str, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restart of the listening connection (a failover, a killed backend): what was announced
    # meanwhile is lost, so the floor goes and the next claim reads from the front.
    late = make_event(scheduled_at=datetime.now(UTC) - timedelta(hours=1))
    async with past_a_floor(postgres_dsn, monkeypatch) as f:
        cut = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN timefuse_due'"
        ).fetchall()
        assert cut == [(True,)]
        await f.other.insert_many([late])  # announced while nobody listens (0.5 s to return)
        await f.heard.until(2)  # the reconnection's "look now"
        taken = await claim(f.claimer, 10)
    assert late.id in taken


async def test_a_failed_lookup_fails_that_claim_only_and_loses_nothing(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opened(postgres_dsn)
    try:
        events = backlog(20, age=timedelta(minutes=10))
        await insert(store, events)
        async with listening(store):
            with monkeypatch.context() as refusing:
                refusing.setattr(postgres_store.queries, "DUE_FLOOR", "SELECT 1 / 0")
                with pytest.raises(StoreError):
                    await claim(store, 10)
            taken = await claim(store, 20)  # looked up again at once
        assert sorted(taken) == sorted(event.id for event in events)
    finally:
        await store.close()
