"""Many ``timefuse dispatch`` processes against one PostgreSQL, as operators scale them out."""

from __future__ import annotations

import asyncio
import collections
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
from timefuse.testing import make_event

pytestmark = pytest.mark.postgres

Dispatchers = Callable[[int, dict[str, str]], list[TimefuseProcess]]


@pytest.fixture
def dispatchers(
    processes: Callable[..., TimefuseProcess], postgres_dsn: str
) -> Callable[[int, dict[str, str]], list[TimefuseProcess]]:
    def start(count: int, env: dict[str, str]) -> list[TimefuseProcess]:
        return [
            processes(
                {"DATABASE_URL": postgres_dsn, "TIMEFUSE_WORKER_ID": f"dispatch-{n}", **env},
                command="dispatch",
            )
            for n in range(count)
        ]

    return start


async def insert_due(store: Store, receiver: Receiver, count: int) -> set[str]:
    due = datetime.now(UTC) + timedelta(seconds=2)
    ids: set[str] = set()
    for start in range(0, count, 1000):
        batch = [
            make_event(scheduled_at=due, destination=receiver.url("/scaled"), payload=b"{}")
            for _ in range(min(1000, count - start))
        ]
        ids.update(await store.insert_many(batch))
    return ids


async def test_four_dispatchers_deliver_each_of_6000_events_exactly_once(
    store: Store, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    # Thousands: each process claims many batches while the others claim theirs (the claim
    # statement's SKIP LOCKED is what keeps them apart); more would only take longer.
    ids = await insert_due(store, receiver, 6_000)
    # A cap per process keeps the one in-test receiver from being overrun: requests it gets
    # but answers too late to count would be retried, and delivered twice, by design.
    dispatchers(4, {"TIMEFUSE_DESTINATION_CONCURRENCY": "50"})
    assert await receiver.wait_for(lambda: receiver.count("/scaled") >= 6_000, timeout=120)
    seen = collections.Counter(r.event_id for r in receiver.on("/scaled"))
    assert set(seen) == ids
    assert max(seen.values()) == 1, "an event was delivered twice without any crash"


async def test_kill_9_of_one_dispatcher_loses_nothing_and_duplicates_at_most_its_batch(
    store: Store, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    receiver.delay_seconds["/scaled"] = 0.05
    in_flight_cap = 200
    ids = await insert_due(store, receiver, 5_000)
    victim, *_ = dispatchers(
        4,
        {
            "TIMEFUSE_CONCURRENCY": str(in_flight_cap),
            "SCHEDULER_BATCH_SIZE": "100",
            "TIMEFUSE_LEASE_SECONDS": "3",
        },
    )
    assert await receiver.wait_for(lambda: receiver.count("/scaled") >= 1000, timeout=60)
    victim.kill()
    assert await receiver.wait_for(
        lambda: {r.event_id for r in receiver.on("/scaled")} >= ids, timeout=120
    )
    duplicates = receiver.count("/scaled") - len(ids)
    print(f"\nduplicates after kill -9 of one of four dispatchers: {duplicates}")
    assert duplicates <= in_flight_cap


async def test_a_dispatcher_stopping_gracefully_keeps_its_long_attempt_to_itself(
    store: Store, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    # An attempt of 6 s, the stop signal a moment into it, dead after 2 s of silence: the
    # stopping process waits for the attempt (its shutdown timeout is longer) and goes on
    # heartbeating meanwhile, so the other's maintenance doesn't take the claim back as a
    # dead worker's and send the event a second time.
    receiver.delay_seconds["/slow"] = 6.0
    env = {"TIMEFUSE_WORKER_DEAD_AFTER_SECONDS": "2", "TIMEFUSE_SHUTDOWN_TIMEOUT_SECONDS": "20"}
    started = dispatchers(2, env)
    (event_id,) = await store.insert_many(
        [make_event(scheduled_at=datetime.now(UTC), destination=receiver.url("/slow"))]
    )
    holder = await until_claimed(store, event_id)
    stopping = started[int(holder.removeprefix("dispatch-"))]
    assert stopping.proc is not None
    stopping.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        while stopping.proc.poll() is None:
            await asyncio.sleep(0.1)  # the process's own exit, not a guess at how long
    stored = await store.get(event_id)
    assert stopping.proc.returncode == 0
    assert stored is not None
    # COMPLETED with its one attempt: never taken back (that would have counted an attempt),
    # so nothing is left to send it again, and it arrived once.
    assert (stored.status, stored.attempts) == (EventStatus.COMPLETED, 1)
    assert receiver.arrivals("/slow", event_id) == 1


async def until_claimed(store: Store, event_id: str) -> str:
    async with asyncio.timeout(30):
        while True:
            stored = await store.get(event_id)
            if stored is not None and stored.locked_by is not None:
                return stored.locked_by
            await asyncio.sleep(0.05)
