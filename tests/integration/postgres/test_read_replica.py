"""A read replica (TIMEFUSE_DATABASE_READ_URL): listings, searches by external id and
statistics are read from a real streaming standby; writes and reads by id stay on the primary;
readiness shows the replica's lag and fails past the limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio

from tests.support.postgres_replica import StandbyServer
from tests.support.postgres_server import LocalServer
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.runner import replica_readiness
from timefuse.ports.store import EventQuery
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Replication on one machine takes milliseconds; this is only how long a test waits for it.
CATCH_UP_SECONDS = 30.0


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[LocalServer, StandbyServer]]:
    """A private primary and a hot standby streaming from it."""
    primary = LocalServer.create()
    try:
        standby = StandbyServer.replicate(primary)
        try:
            yield primary, standby
        finally:
            standby.close()
    finally:
        primary.close()


@pytest_asyncio.fixture
async def store(servers: tuple[LocalServer, StandbyServer]) -> AsyncIterator[Store]:
    primary, standby = servers
    standby.resume_replay()
    store = Store(PostgresEventStore(primary.dsn, pool_size=2, read_url=standby.dsn))
    await store.open()
    try:
        yield store
    finally:
        await store.close()
        standby.resume_replay()


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while not await check():
        assert time.monotonic() < deadline, "the standby did not catch up"
        await asyncio.sleep(0.05)


async def listed(store: Store, source: str) -> int:
    page = await store.list_events(EventQuery(sources=[source]), limit=100)
    return len(page.events)


async def test_reads_follow_the_replica_and_writes_and_reads_by_id_the_primary(
    store: Store, servers: tuple[LocalServer, StandbyServer]
) -> None:
    _, standby = servers
    first = [make_event(source="replica-a") for _ in range(3)]
    await store.insert_many(first)  # the standby is read-only: this went to the primary

    async def replicated() -> bool:
        return await listed(store, "replica-a") == 3

    await until(replicated)
    assert (await store.count_by_status(["replica-a"]))[EventStatus.PENDING] == 3

    standby.pause_replay()
    later = make_event(source="replica-a")
    await store.insert_many([later])

    # By id: the primary, which has it. Listings, searches and statistics: the paused replica.
    found = await store.get(later.id)
    assert found is not None
    assert found.id == later.id
    assert await listed(store, "replica-a") == 3
    assert await store.find_by_external_id(later.external_job_id) == []
    assert (await store.count_by_status(["replica-a"]))[EventStatus.PENDING] == 3

    standby.resume_replay()

    async def caught_up() -> bool:
        return await listed(store, "replica-a") == 4

    await until(caught_up)
    [seen] = await store.find_by_external_id(later.external_job_id)
    assert seen.id == later.id


async def test_readiness_shows_the_replica_lag_and_fails_past_the_limit(
    store: Store, servers: tuple[LocalServer, StandbyServer]
) -> None:
    _, standby = servers
    replica = store.adapter.capabilities.replica
    assert replica is not None
    await store.insert_many([make_event(source="replica-b")])

    async def replayed_all() -> bool:
        return await replica.replica_lag() == 0.0

    await until(replayed_all)
    assert await replica_readiness(replica, max_lag=30.0) == "ok, 0.0 s behind the primary"

    standby.pause_replay()
    await store.insert_many([make_event(source="replica-b")])
    await asyncio.sleep(0.3)  # the lag to measure: time passing with WAL left unreplayed

    async def lagging() -> bool:
        return await replica.replica_lag() >= 0.3

    await until(lagging)
    lag = await replica.replica_lag()
    assert lag < CATCH_UP_SECONDS + 5
    assert (await replica_readiness(replica, max_lag=60.0)).startswith("ok, ")
    state = await replica_readiness(replica, max_lag=0.1)
    assert "s behind the primary (TIMEFUSE_DATABASE_READ_MAX_LAG_SECONDS is 0.1)" in state
    assert not state.startswith("ok")


async def test_an_unreachable_replica_fails_readiness_and_the_primary_answers_its_reads(
    servers: tuple[LocalServer, StandbyServer],
) -> None:
    primary, standby = servers
    adapter = PostgresEventStore(primary.dsn, pool_size=1, read_url=standby.dsn)
    store = Store(adapter)
    await store.open()
    try:
        event = make_event(source="replica-d")
        await store.insert_many([event])
        standby.stop()
        replica = adapter.capabilities.replica
        assert replica is not None
        state = await replica_readiness(replica, max_lag=30.0)
        assert not state.startswith("ok"), state
        # Reads don't fail with it: the primary answers them, from its own, current rows.
        assert await listed(store, "replica-d") == 1
        [found] = await store.find_by_external_id(event.external_job_id)
        assert found.id == event.id
        assert (await store.count_by_status(["replica-d"]))[EventStatus.PENDING] == 1
        assert await store.attempts(event.id) == []
    finally:
        standby.start()
        await store.close()


async def test_without_a_read_url_there_is_no_replica_and_reads_use_the_primary(
    servers: tuple[LocalServer, StandbyServer],
) -> None:
    primary, _ = servers
    store = Store(PostgresEventStore(primary.dsn, pool_size=1))
    await store.open()
    try:
        assert store.adapter.capabilities.replica is None
        event = make_event(source="replica-c")
        await store.insert_many([event])
        assert await listed(store, "replica-c") == 1  # at once: no replication in between
    finally:
        await store.close()
