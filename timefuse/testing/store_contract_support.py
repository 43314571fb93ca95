"""Helpers shared by the store contract suites, and the clocks they run on.

A store guards leases with its own clock. Adapters that take a clock (the in-memory and SQLite
ones) run the suites on a :class:`ShiftedClock`, so "the lease expires" is an instant step; a
store on its server's clock (PostgreSQL) runs them on :class:`RealTime`, with short leases and
real waits. Time assertions allow :data:`SLACK` between the test's clock and the store's.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from timefuse.domain.event import Event
from timefuse.ports.store import AttemptRecord, ClaimRequest, DueFilter
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

SLACK = timedelta(seconds=5)  # between this process's clock and the store's
SHORT_LEASE = 0.05
PAST_SHORT_LEASE = 0.3


class StoreTime(Protocol):
    """Moves the store's clock forward: instantly for a fake clock, by waiting for a real one."""

    async def advance(self, seconds: float) -> None: ...


class RealTime:
    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ShiftedClock:
    """A :class:`~timefuse.ports.clock.Clock` on real time, shifted forward at will: a test
    "waits" for a lease to expire by shifting the store's clock, in no time at all."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.shift

    async def advance(self, seconds: float) -> None:
        self.shift += timedelta(seconds=seconds)


def utc_now() -> datetime:
    return datetime.now(UTC)


def assert_near(actual: datetime | None, expected: datetime) -> None:
    assert actual is not None
    assert abs(actual - expected) <= SLACK, f"{actual} is not near {expected}"


async def insert_events(store: Store, *events: Event) -> list[Event]:
    """Insert new PENDING events as the API does, through the rules."""
    assert await store.insert_many(events) == {event.id: event.id for event in events}
    return list(events)


async def seed(store: Store, *events: Event) -> list[Event]:
    """Store events as they are, whatever their status: test data past the rules (which let
    only new PENDING events in), straight into the adapter."""
    assert await store.adapter.insert_many(events) == {event.id: event.id for event in events}
    return list(events)


async def stored_event(store: Store, event: Event) -> Event:
    stored = await store.get(event.id)
    assert stored is not None, f"event {event.id} is not stored"
    return stored


async def claim(
    store: Store,
    worker: str = "worker-a",
    limit: int = 10,
    lease: float = 30.0,
    *,
    due: DueFilter | None = None,
    budgets: dict[str, int] | None = None,
    default_budget: int | None = None,
) -> list[Event]:
    """What one claim takes (empty when the rules let no call through)."""
    request = ClaimRequest(
        worker=worker,
        limit=limit,
        lease_seconds=lease,
        due=due or DueFilter(),
        budgets=budgets or {},
        default_budget=default_budget,
    )
    batch = await store.claim(request)
    return [] if batch is None else batch.events


async def insert_and_claim(
    store: Store, worker: str = "worker-a", lease: float = 30.0, **overrides: object
) -> Event:
    """Insert one due event (the only one due) and claim it."""
    await insert_events(store, make_event(**overrides))
    claimed = await claim(store, worker, 10, lease)
    assert len(claimed) == 1
    return claimed[0]


async def expire_lease_of_one(store: Store, time: StoreTime, **overrides: object) -> Event:
    """Insert and claim one event, let its lease expire, recover it; the event as stored."""
    claimed = await insert_and_claim(store, "worker-a", SHORT_LEASE, **overrides)
    await time.advance(PAST_SHORT_LEASE)
    assert await store.recover_expired_leases() == 1
    return await stored_event(store, claimed)


async def recorded_attempts(store: Store, event_id: str) -> list[AttemptRecord]:
    """The event's history as its callers wrote it: without the store-assigned sequence."""
    return [replace(record, sequence=0) for record in await store.attempts(event_id)]
