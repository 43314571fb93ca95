"""Helpers shared by the store contract suites (``store_contract``, ``store_contract_ops``).

Stores guard leases with their own clock (PostgreSQL's, for one), so the suites use real time,
short leases and sleeps, never an injected clock; time assertions allow :data:`SLACK`.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from timefuse.domain.event import Event
from timefuse.ports.store import AttemptRecord, EventStore
from timefuse.testing.factories import make_event

SLACK = timedelta(seconds=5)  # between this process's clock and the store's
SHORT_LEASE = 0.05
PAST_SHORT_LEASE = 0.3


def utc_now() -> datetime:
    return datetime.now(UTC)


def assert_near(actual: datetime | None, expected: datetime) -> None:
    assert actual is not None
    assert abs(actual - expected) <= SLACK, f"{actual} is not near {expected}"


async def insert_events(store: EventStore, *events: Event) -> list[Event]:
    assert await store.insert_many(events) == {event.id: event.id for event in events}
    return list(events)


async def stored_event(store: EventStore, event: Event) -> Event:
    stored = await store.get(event.id)
    assert stored is not None, f"event {event.id} is not stored"
    return stored


async def insert_and_claim(
    store: EventStore, worker: str = "worker-a", lease: float = 30.0, **overrides: object
) -> Event:
    """Insert one due event (the only one due) and claim it."""
    await insert_events(store, make_event(**overrides))
    claimed = await store.claim_due(worker, 10, lease)
    assert len(claimed) == 1
    return claimed[0]


async def expire_lease_of_one(store: EventStore, **overrides: object) -> Event:
    """Insert and claim one event, let its lease expire, recover it; the event as stored."""
    claimed = await insert_and_claim(store, "worker-a", SHORT_LEASE, **overrides)
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert await store.recover_expired_leases() == 1
    return await stored_event(store, claimed)


async def recorded_attempts(store: EventStore, event_id: str) -> list[AttemptRecord]:
    """The event's history as its callers wrote it: without the store-assigned sequence."""
    return [replace(record, sequence=0) for record in await store.attempts(event_id)]
