"""The store contract's retention tests: part of the base suite, which imports them.

Run them through :mod:`timefuse.testing.store_contract` (``import *``), not on their own.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from timefuse.domain.status import TERMINAL_STATUSES, EventStatus
from timefuse.ports.store import EventStore
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import (
    insert_and_claim,
    insert_events,
    stored_event,
    utc_now,
)

pytestmark = [pytest.mark.timefuse_contract, pytest.mark.asyncio]


async def test_deletes_old_events_in_every_terminal_status(event_store: EventStore) -> None:
    old = utc_now() - timedelta(days=30)
    events = [make_event(status=s, updated_at=old) for s in sorted(TERMINAL_STATUSES)]
    await insert_events(event_store, *events)
    assert await event_store.delete_terminal_before(utc_now() - timedelta(days=7)) == len(events)
    for event in events:
        assert await event_store.get(event.id) is None


async def test_retention_never_deletes_pending_or_processing_events(
    event_store: EventStore,
) -> None:
    old, now = utc_now() - timedelta(days=30), utc_now()
    pending = make_event(scheduled_at=now + timedelta(days=1), updated_at=old)
    processing = make_event(
        status=EventStatus.PROCESSING,
        attempts=1,
        locked_by="worker-a",
        lock_expires_at=now + timedelta(minutes=1),
        updated_at=old,
    )
    recent = make_event(status=EventStatus.COMPLETED, updated_at=now - timedelta(days=1))
    await insert_events(event_store, pending, processing, recent)
    assert await event_store.delete_terminal_before(now - timedelta(days=7)) == 0
    assert await event_store.delete_terminal_before(now + timedelta(days=1)) == 1
    assert await event_store.get(recent.id) is None
    assert await stored_event(event_store, pending) == pending
    assert await stored_event(event_store, processing) == processing


async def test_retention_deletes_in_batches_until_done(event_store: EventStore) -> None:
    old = utc_now() - timedelta(days=30)
    await insert_events(
        event_store, *(make_event(status=EventStatus.COMPLETED, updated_at=old) for _ in range(7))
    )
    assert await event_store.delete_terminal_before(utc_now(), batch_size=3) == 7
    assert sum((await event_store.count_by_status()).values()) == 0


async def test_retention_deletes_the_attempts_of_deleted_events(event_store: EventStore) -> None:
    claimed = await insert_and_claim(event_store, "worker-a")
    await event_store.record_outcomes("worker-a", [make_outcome(claimed, "worker-a")])
    assert await event_store.delete_terminal_before(utc_now() + timedelta(minutes=1)) == 1
    assert await event_store.attempts(claimed.id) == []
