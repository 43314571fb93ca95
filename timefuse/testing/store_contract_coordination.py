"""The store contract, part three: leadership and heartbeats across processes."""

from __future__ import annotations

import asyncio

from timefuse.ports.store import WorkerBeat
from timefuse.service.store import Store
from timefuse.testing.store_contract_support import StoreTime, assert_near, utc_now


class CoordinationContract:
    async def test_one_holder_leads_a_role_and_keeps_it_while_it_renews(self, store: Store) -> None:
        assert await store.acquire_leadership("maintenance", "worker-a", 30.0)
        assert not await store.acquire_leadership("maintenance", "worker-b", 30.0)
        assert await store.acquire_leadership("maintenance", "worker-a", 30.0)  # renewed
        assert await store.acquire_leadership("other-role", "worker-b", 30.0)

    async def test_leadership_passes_on_when_its_holder_stops_renewing(
        self, store: Store, store_time: StoreTime
    ) -> None:
        assert await store.acquire_leadership("maintenance", "worker-a", 0.05)
        await store_time.advance(0.3)
        assert await store.acquire_leadership("maintenance", "worker-b", 30.0)
        assert not await store.acquire_leadership("maintenance", "worker-a", 30.0)

    async def test_a_released_leadership_is_free_at_once(self, store: Store) -> None:
        assert await store.acquire_leadership("maintenance", "worker-a", 30.0)
        await store.release_leadership("maintenance", "worker-b")  # not the holder: no effect
        assert not await store.acquire_leadership("maintenance", "worker-b", 30.0)
        await store.release_leadership("maintenance", "worker-a")
        assert await store.acquire_leadership("maintenance", "worker-b", 30.0)

    async def test_of_many_contenders_at_once_one_leads(self, store: Store) -> None:
        results = await asyncio.gather(
            *(store.acquire_leadership("maintenance", f"worker-{i}", 30.0) for i in range(8))
        )
        assert sum(results) == 1

    async def test_workers_are_listed_with_how_long_they_have_been_silent(
        self, store: Store, store_time: StoreTime
    ) -> None:
        started = utc_now()
        await store.heartbeat(WorkerBeat("worker-a", ("api", "dispatch"), started, 7))
        await store_time.advance(0.3)
        await store.heartbeat(WorkerBeat("worker-b", ("dispatch",), started, 0))
        b, a = await store.workers()
        assert (a.worker, a.roles, a.in_flight) == ("worker-a", ("api", "dispatch"), 7)
        assert (b.worker, b.roles) == ("worker-b", ("dispatch",))
        assert a.silent_seconds >= 0.25 > b.silent_seconds >= 0
        assert abs((a.started_at - started).total_seconds()) < 1e-3
        assert_near(a.last_seen, utc_now())

    async def test_a_heartbeat_refreshes_a_worker(
        self, store: Store, store_time: StoreTime
    ) -> None:
        await store.heartbeat(WorkerBeat("worker-a", ("dispatch",), utc_now(), 0))
        await store_time.advance(0.3)
        await store.heartbeat(WorkerBeat("worker-a", ("dispatch",), utc_now(), 3))
        (worker,) = await store.workers()
        assert (worker.silent_seconds < 0.25, worker.in_flight) == (True, 3)

    async def test_silent_workers_are_forgotten(self, store: Store, store_time: StoreTime) -> None:
        await store.heartbeat(WorkerBeat("worker-a", ("dispatch",), utc_now(), 0))
        await store_time.advance(0.3)
        await store.heartbeat(WorkerBeat("worker-b", ("dispatch",), utc_now(), 0))
        assert await store.forget_workers(0.2) == 1
        assert [w.worker for w in await store.workers()] == ["worker-b"]
