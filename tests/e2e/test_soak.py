"""A small soak of the delivery promise: two dispatch processes on PostgreSQL, a short lease,
receivers that are rate-limited, capped and slow, refusing, or healthy.

Every event for a live receiver is delivered; every attempt the store counts is a request its
receiver got (no attempt recorded that was never made); the healthy receiver's events arrive
on time whatever the others' backlogs do.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.process import TimefuseProcess, free_port
from tests.support.receiver import Receiver
from timefuse.domain.event import Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventQuery
from timefuse.service.store import Store
from timefuse.testing import make_event

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HEALTHY, METERED, CAPPED, REFUSING = 1400, 400, 40, 160


@pytest.fixture
async def receivers() -> AsyncIterator[dict[str, Receiver]]:
    started = {name: Receiver() for name in ("healthy", "metered", "capped")}
    for receiver in started.values():
        await receiver.start()
    started["capped"].delay_seconds["/hook"] = 1.0
    yield started
    for receiver in started.values():
        await receiver.stop()


async def until_heard_of(store: Store, workers: set[str], timeout: float = 60.0) -> None:
    """Wait until every worker has heartbeat (the processes are up and dispatching)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while {w.worker for w in await store.workers()} < workers:
        assert asyncio.get_running_loop().time() < deadline, "the dispatchers did not start"
        await asyncio.sleep(0.2)


async def until_none_in_flight(store: Store, timeout: float = 30.0) -> None:
    """Wait until no event is PROCESSING (every outcome of the attempts made is written)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await store.count_by_status())[EventStatus.PROCESSING]:
        assert asyncio.get_running_loop().time() < deadline, "events stayed PROCESSING"
        await asyncio.sleep(0.1)


async def every_event(store: Store) -> AsyncIterator[Event]:
    page = await store.list_events(EventQuery(), 1000)
    while True:
        for event in page.events:
            yield event
        if page.next_cursor is None:
            return
        page = await store.list_events(EventQuery(), 1000, page.next_cursor)


def events_for(url: str, count: int, due: Callable[[int], datetime]) -> list[Event]:
    return [make_event(destination=url, scheduled_at=due(n), payload=b"{}") for n in range(count)]


async def test_two_dispatchers_keep_the_promise_for_every_kind_of_receiver(
    store: Store,
    receivers: dict[str, Receiver],
    processes: Callable[..., TimefuseProcess],
    postgres_dsn: str,
) -> None:
    urls = {name: receiver.url("/hook") for name, receiver in receivers.items()}
    refusing = f"http://127.0.0.1:{free_port()}/hook"
    limits = {
        f"127.0.0.1:{receivers['metered'].port}": {"rate": 20, "burst": 20},
        f"127.0.0.1:{receivers['capped'].port}": {"concurrency": 2},
    }
    env = {
        "DATABASE_URL": postgres_dsn,
        "TIMEFUSE_LEASE_SECONDS": "5",
        "TIMEFUSE_DESTINATION_LIMITS": json.dumps(limits),
        "TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TIMEFUSE_RETRY_BASE_MS": "200",
        "TIMEFUSE_RETRY_CAP_MS": "1000",
        "TIMEFUSE_BREAKER_COOLDOWN_SECONDS": "2",
    }
    for n in range(2):
        processes({**env, "TIMEFUSE_WORKER_ID": f"soak-{n}"}, command="dispatch")
    await until_heard_of(store, {"soak-0", "soak-1"})

    start = datetime.now(UTC) + timedelta(seconds=2)
    healthy = events_for(urls["healthy"], HEALTHY, lambda n: start + timedelta(seconds=n / 70))
    others = [
        *events_for(urls["metered"], METERED, lambda n: start),
        *events_for(urls["capped"], CAPPED, lambda n: start),
        *events_for(refusing, REFUSING, lambda n: start),
    ]
    everything = others + healthy
    for batch in range(0, len(everything), 500):
        await store.insert_many(everything[batch : batch + 500])

    live = {"healthy": HEALTHY, "metered": METERED, "capped": CAPPED}
    for name, count in live.items():
        receiver = receivers[name]
        assert await receiver.wait_for(
            lambda r=receiver, c=count: len({x.event_id for x in r.on("/hook")}) >= c,
            timeout=90,
        ), f"{name}: {len({x.event_id for x in receiver.on('/hook')})} of {count} delivered"

    healthy_late = [
        min(r.at for r in receivers["healthy"].on("/hook") if r.event_id == event.id)
        - event.scheduled_at.timestamp()
        for event in healthy
    ]
    assert max(healthy_late) < 2.0, f"a healthy event arrived {max(healthy_late):.2f} s late"

    # An outcome is written a little after its receiver answered: compare histories once no
    # attempt is in flight any more.
    await until_none_in_flight(store)

    # Every attempt the store counted for a live receiver's event is a request it got; every
    # attempt counted for the refusing receiver's is a connection it refused, none a lease
    # that ran out while the event waited.
    requests = collections.Counter(
        r.event_id for receiver in receivers.values() for r in receiver.on("/hook")
    )
    checked = refused_attempts = 0
    async for event in every_event(store):
        history = await store.attempts(event.id)
        checked += 1
        if event.destination == refusing:
            for attempt in history:
                assert attempt.error != LEASE_EXPIRED_ERROR, (event.id, history)
                assert attempt.outcome is OutcomeKind.RETRIABLE, (event.id, attempt)
                assert (attempt.error or "").startswith("connection failed: "), (event.id, attempt)
            refused_attempts += len(history)
            continue
        assert len(history) == requests[event.id], (event.id, history)
        assert event.status is EventStatus.COMPLETED, event
    assert checked == HEALTHY + METERED + CAPPED + REFUSING
    assert refused_attempts > 0, "no attempt was made at the refusing receiver"
