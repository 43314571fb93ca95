"""Cross-process coordination through PostgreSQL: due notifications, leadership, recovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres.listener import parse_due
from timefuse.ports.store import ClaimRef, RedeliverResult, WorkerBeat
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import claim, insert_and_claim, stored_event

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
    pg_store: Store, postgres_dsn: str
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


async def test_events_made_due_now_wake_listeners(pg_store: Store) -> None:
    await pg_store.insert_many([make_event(), make_event(), make_event()])
    first, second, _ = await claim(pg_store, "worker-a", 3, 0.05)
    async with watching(pg_store.adapter) as heard:  # type: ignore[arg-type]
        assert await pg_store.hand_back([ClaimRef.of(first)]) == 1  # due now: announced
        assert await pg_store.hand_back([ClaimRef.of(second)], 300.0) == 1  # later: not
        await asyncio.sleep(0.3)
        assert await pg_store.recover_expired_leases() == 1  # the third's lease
        (again,) = await claim(pg_store, "worker-a", 1, 30.0)
        await pg_store.record_outcomes([make_outcome(again, "worker-a")])
        now = datetime.now(UTC)
        assert await pg_store.redeliver(again.id, now) is RedeliverResult.REDELIVERED
        # Connected (look now), handed back (now), recovered (now), redelivered.
        assert await heard.until(4) == [None, None, None, now]
        await asyncio.sleep(0.3)
        assert len(heard.due) == 4


async def test_watching_reconnects_after_losing_its_connection(
    pg_store: Store, postgres_dsn: str
) -> None:
    async with watching(pg_store.adapter) as heard:  # type: ignore[arg-type]
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


async def test_leadership_passes_on_while_the_old_leaders_connections_stay_open(
    postgres_dsn: str,
) -> None:
    # Leadership is a row the leader renews, not a lock held by one of its sessions: a
    # leader that stops renewing (hung, or cut off behind a half-open connection) loses it
    # after its time, whatever state its connections are in.
    first, second = (Store(PostgresEventStore(postgres_dsn, pool_size=2)) for _ in range(2))
    await first.open()
    await second.open()
    try:
        assert await first.acquire_leadership("maintenance", "first", 1.0)
        assert not await second.acquire_leadership("maintenance", "second", 1.0)
        await first.ping()  # its pool's connections are open and idle
        await asyncio.sleep(1.2)
        assert await second.acquire_leadership("maintenance", "second", 1.0)
        assert not await first.acquire_leadership("maintenance", "first", 1.0)
    finally:
        await first.close()
        await second.close()


async def test_recovery_leaves_a_worker_whose_heartbeat_is_being_written_alone(
    pg_store: Store, postgres_dsn: str
) -> None:
    await pg_store.heartbeat(WorkerBeat("worker-back", ("dispatch",), datetime.now(UTC)))
    held = await insert_and_claim(pg_store, "worker-back", 600.0)
    with psycopg.connect(postgres_dsn, autocommit=True) as clock:
        # Last heard of a minute ago: silent for longer than the 30 s that make it dead.
        clock.execute(
            "UPDATE timefuse_workers SET last_seen = now() - interval '1 minute'"
            " WHERE worker = 'worker-back'"
        )
    with psycopg.connect(postgres_dsn) as beating:
        # Its heartbeat is being written (not committed yet) while recovery runs.
        beating.execute(
            "UPDATE timefuse_workers SET last_seen = now() WHERE worker = 'worker-back'"
        )
        assert await pg_store.recover_expired_leases(["worker-back"], silent_seconds=30) == 0
        beating.rollback()
    # That heartbeat never landed: the worker is still silent.
    assert await pg_store.recover_expired_leases(["worker-back"], silent_seconds=30) == 1
    assert (await stored_event(pg_store, held)).locked_by is None
