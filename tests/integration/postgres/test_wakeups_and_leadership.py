"""Cross-process coordination through PostgreSQL: due notifications and maintenance leadership."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres.listener import parse_due
from timefuse.ports.store import RedeliverResult
from timefuse.testing.factories import make_event, make_outcome

pytestmark = pytest.mark.postgres


class Heard:
    """Collects what ``watch_due`` reports and lets a test wait for the next report."""

    def __init__(self) -> None:
        self.due: list[datetime | None] = []
        self._changed = asyncio.Event()

    def __call__(self, due_at: datetime | None) -> None:
        self.due.append(due_at)
        self._changed.set()

    async def until(self, count: int) -> list[datetime | None]:
        async with asyncio.timeout(10):
            while len(self.due) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.due


@contextlib.asynccontextmanager
async def watching(store: PostgresEventStore) -> AsyncIterator[Heard]:
    heard, stop = Heard(), asyncio.Event()
    task = asyncio.create_task(store.watch_due(heard, stop))
    try:
        await heard.until(1)  # listening: the first call is the "look now" of connecting
        yield heard
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_an_insert_batch_wakes_other_processes_once_with_its_earliest_due_time(
    pg_store: PostgresEventStore, postgres_dsn: str
) -> None:
    listener = PostgresEventStore(postgres_dsn, migrate_on_open=False)
    soon = datetime.now(UTC) + timedelta(seconds=30)
    batch = [make_event(scheduled_at=soon + timedelta(seconds=s)) for s in (5, 0, 9)]
    async with watching(listener) as heard:
        await pg_store.insert_many(batch)
        assert await heard.until(2) == [None, soon]
        await pg_store.insert_many(batch)  # nothing new inserted: nothing to announce
        await asyncio.sleep(0.3)
        assert heard.due == [None, soon]


async def test_events_handed_back_or_redelivered_wake_listeners(
    pg_store: PostgresEventStore,
) -> None:
    await pg_store.insert_many([make_event(), make_event(), make_event()])
    first, second, _ = await pg_store.claim_due("worker-a", 3, 0.05)
    later = datetime.now(UTC) + timedelta(minutes=5)
    async with watching(pg_store) as heard:
        assert await pg_store.release("worker-a", [first.id]) == 1
        assert await pg_store.reschedule("worker-a", [second.id], later) == 1
        await asyncio.sleep(0.3)
        assert await pg_store.recover_expired_leases() == 1  # the third's lease
        (again,) = await pg_store.claim_due("worker-a", 1, 30.0)
        await pg_store.record_outcomes("worker-a", [make_outcome(again, "worker-a")])
        now = datetime.now(UTC)
        assert await pg_store.redeliver(again.id, now) is RedeliverResult.REDELIVERED
        # Connected (look now), released (now), rescheduled, recovered (now), redelivered.
        assert await heard.until(5) == [None, None, later, None, now]


async def test_watching_reconnects_after_losing_its_connection(
    pg_store: PostgresEventStore, postgres_dsn: str
) -> None:
    async with watching(pg_store) as heard:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query = 'LISTEN timefuse_due'"
            )
        assert await heard.until(2) == [None, None]  # reconnected: look now
        event = make_event(scheduled_at=datetime.now(UTC) + timedelta(minutes=1))
        await pg_store.insert_many([event])
        assert (await heard.until(3))[2] == event.next_attempt_at


@pytest.mark.parametrize("payload", ["", "not a time"])
def test_a_notification_without_a_time_means_look_now(payload: str) -> None:
    assert parse_due(payload) is None


async def leads_within(store: PostgresEventStore, seconds: float) -> bool:
    """Whether ``store`` becomes the leader within ``seconds`` of trying every 0.1 s."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        async with store.leadership().hold() as leading:
            if leading or asyncio.get_running_loop().time() > deadline:
                return leading
        await asyncio.sleep(0.1)


async def test_one_process_leads_maintenance_until_it_goes(postgres_dsn: str) -> None:
    first, second = (PostgresEventStore(postgres_dsn, migrate_on_open=False) for _ in range(2))
    try:
        async with first.leadership().hold() as leading:
            assert leading
        async with second.leadership().hold() as leading:
            assert not leading
        async with first.leadership().hold() as leading:
            assert leading  # sticky: the leader keeps its lock between rounds
        await first.close()
        async with second.leadership().hold() as leading:
            assert leading
    finally:
        await first.close()
        await second.close()


async def test_leadership_passes_on_when_the_leaders_connection_dies(postgres_dsn: str) -> None:
    first, second = (PostgresEventStore(postgres_dsn, migrate_on_open=False) for _ in range(2))
    try:
        async with first.leadership().hold() as leading:
            assert leading
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d"
                " ON d.oid = l.database AND d.datname = current_database()"
                " WHERE l.locktype = 'advisory' AND l.granted"
            )
        # The lock goes when the terminated backend has exited, a moment after the signal.
        assert await leads_within(second, 5.0)
        async with first.leadership().hold() as leading:
            assert not leading  # reconnected, but the lock is taken now
    finally:
        await first.close()
        await second.close()
