"""The store contract, part six: retention."""

from __future__ import annotations

from datetime import timedelta

from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import (
    insert_and_claim,
    seed,
    stored_event,
    utc_now,
)

_FINISHED = [
    EventStatus.CANCELLED,
    EventStatus.COMPLETED,
    EventStatus.DEAD_LETTER,
    EventStatus.FAILED,
]


class RetentionContract:
    async def test_deletes_old_events_in_every_terminal_status(self, store: Store) -> None:
        old = utc_now() - timedelta(days=30)
        events = [make_event(status=s, updated_at=old) for s in _FINISHED]
        await seed(store, *events)
        assert await store.delete_terminal_before(utc_now() - timedelta(days=7)) == len(events)
        for event in events:
            assert await store.get(event.id) is None

    async def test_retention_never_deletes_pending_or_processing_events(self, store: Store) -> None:
        old, now = utc_now() - timedelta(days=30), utc_now()
        pending = make_event(scheduled_at=now + timedelta(days=1), updated_at=old)
        processing = make_event(
            status=EventStatus.PROCESSING,
            attempts=1,
            claim_count=1,
            locked_by="worker-a",
            lock_expires_at=now + timedelta(minutes=1),
            updated_at=old,
        )
        recent = make_event(status=EventStatus.COMPLETED, updated_at=now - timedelta(days=1))
        await seed(store, pending, processing, recent)
        assert await store.delete_terminal_before(now - timedelta(days=7)) == 0
        assert await store.delete_terminal_before(now + timedelta(days=1)) == 1
        assert await store.get(recent.id) is None
        assert await stored_event(store, pending) == pending
        assert await stored_event(store, processing) == processing

    async def test_retention_deletes_in_batches_until_done(self, store: Store) -> None:
        old = utc_now() - timedelta(days=30)
        await seed(
            store, *(make_event(status=EventStatus.COMPLETED, updated_at=old) for _ in range(7))
        )
        assert await store.delete_terminal_before(utc_now(), batch_size=3) == 7
        assert sum((await store.count_by_status()).values()) == 0

    async def test_retention_deletes_the_attempts_of_deleted_events(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        await store.record_outcomes([make_outcome(claimed)])
        assert await store.delete_terminal_before(utc_now() + timedelta(minutes=1)) == 1
        assert await store.attempts(claimed.id) == []
