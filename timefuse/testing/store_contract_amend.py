"""The store contract, part eight: changing a PENDING event in place."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AmendBasis, AmendResult, ClaimRef, EventQuery, MoveDueResult
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import (
    StoreTime,
    claim,
    expire_lease_of_one,
    insert_and_claim,
    insert_events,
    stored_event,
    utc_now,
)


def _changed(event: Event, **changes: object) -> Event:
    """``event`` as a change leaves it: the fields given, a later updated_at, the next version."""
    return replace(event, updated_at=utc_now(), version=event.version + 1, **changes)  # type: ignore[arg-type]


class AmendContract:
    async def test_changes_a_pending_events_fields_and_bumps_its_version(
        self, store: Store
    ) -> None:
        (event,) = await insert_events(
            store, make_event(scheduled_at=utc_now() + timedelta(hours=2))
        )
        later = event.scheduled_at - timedelta(hours=1)
        changed = _changed(
            event,
            scheduled_at=later,
            next_attempt_at=later,
            payload=b'{"v": 2}',
            http={"method": "PUT", "headers": {"X-A": "b"}},
            max_retries=5,
            extra={"changes": [{"version": 2}]},
        )

        assert await store.amend(changed, basis=AmendBasis.of(event)) is AmendResult.AMENDED

        stored = await stored_event(store, event)
        assert stored == changed
        assert stored.version == 2
        assert [e.id for e in await store.find_by_external_id(event.external_job_id)] == [event.id]
        page = await store.list_events(EventQuery(), 10)
        assert [e.scheduled_at for e in page.events] == [later]

    async def test_a_moved_event_is_claimed_at_its_new_time(self, store: Store) -> None:
        (event,) = await insert_events(
            store, make_event(scheduled_at=utc_now() + timedelta(days=40))
        )
        now = utc_now()
        changed = _changed(event, scheduled_at=now, next_attempt_at=now)

        assert await store.amend(changed, basis=AmendBasis.of(event)) is AmendResult.AMENDED

        assert [e.id for e in await claim(store)] == [event.id]

    async def test_a_stale_version_changes_nothing(self, store: Store) -> None:
        (event,) = await insert_events(store, make_event())
        read = AmendBasis.of(event)
        assert await store.amend(_changed(event, max_retries=1), basis=read) is (
            AmendResult.AMENDED
        )
        stale = _changed(event, max_retries=9)

        assert await store.amend(stale, basis=read) is AmendResult.NOT_AMENDABLE

        stored = await stored_event(store, event)
        assert (stored.max_retries, stored.version) == (1, 2)

    async def test_a_claimed_event_is_not_changed(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")

        result = await store.amend(_changed(claimed, max_retries=9), basis=AmendBasis.of(claimed))

        assert result is AmendResult.NOT_AMENDABLE
        stored = await stored_event(store, claimed)
        assert (stored.status, stored.max_retries, stored.version) == (
            EventStatus.PROCESSING,
            claimed.max_retries,
            1,
        )

    async def test_an_unknown_event_is_not_changed(self, store: Store) -> None:
        unknown = make_event()
        result = await store.amend(_changed(unknown), basis=AmendBasis.of(unknown))
        assert result is AmendResult.NOT_AMENDABLE

    async def test_a_time_taken_by_a_twin_is_a_duplicate(self, store: Store) -> None:
        at = utc_now() + timedelta(hours=1)
        first, second = await insert_events(
            store,
            make_event(external_job_id="job-twin", scheduled_at=at),
            make_event(external_job_id="job-twin", scheduled_at=at + timedelta(hours=1)),
        )

        moved = _changed(second, scheduled_at=at, next_attempt_at=at)

        assert await store.amend(moved, basis=AmendBasis.of(second)) is AmendResult.DUPLICATE
        assert (await stored_event(store, second)).scheduled_at == at + timedelta(hours=1)
        assert (await stored_event(store, first)).version == 1

    async def test_the_attempt_history_moves_with_the_event(
        self, store: Store, store_time: StoreTime
    ) -> None:
        retried = await expire_lease_of_one(store, store_time)
        assert len(await store.attempts(retried.id)) == 1
        later = retried.scheduled_at + timedelta(days=35)

        moved = _changed(retried, scheduled_at=later, next_attempt_at=later)
        assert await store.amend(moved, basis=AmendBasis.of(retried)) is AmendResult.AMENDED

        stored = await stored_event(store, retried)
        assert (stored.scheduled_at, stored.attempts, stored.retry_count) == (
            later,
            retried.attempts,
            retried.retry_count,
        )
        assert len(await store.attempts(retried.id)) == 1

    async def test_a_change_computed_before_an_attempt_changes_nothing(self, store: Store) -> None:
        (event,) = await insert_events(store, make_event())
        read = AmendBasis.of(event)
        (claimed,) = await claim(store, "worker-a")
        retry = make_outcome(claimed, status=EventStatus.PENDING)
        assert await store.record_outcomes([retry]) == {event.id}
        backoff = await stored_event(store, event)
        assert (backoff.status, backoff.version) == (EventStatus.PENDING, read.version)

        stale = _changed(event, max_retries=9)  # keeps the due time it read

        assert await store.amend(stale, basis=read) is AmendResult.NOT_AMENDABLE
        assert await stored_event(store, event) == backoff
        fresh = _changed(backoff, max_retries=9)
        assert await store.amend(fresh, basis=AmendBasis.of(backoff)) is AmendResult.AMENDED
        assert (await stored_event(store, event)).next_attempt_at == backoff.next_attempt_at

    async def test_a_change_computed_before_a_hand_back_or_a_move_changes_nothing(
        self, store: Store
    ) -> None:
        (event,) = await insert_events(store, make_event())
        read = AmendBasis.of(event)
        (claimed,) = await claim(store, "worker-a")
        assert await store.hand_back([ClaimRef.of(claimed)], 0.0) == 1
        assert await store.amend(_changed(event), basis=read) is AmendResult.NOT_AMENDABLE

        handed_back = await stored_event(store, event)
        read = AmendBasis.of(handed_back)
        later = utc_now() + timedelta(hours=1)
        assert await store.move_due(event.id, later, utc_now()) is MoveDueResult.MOVED
        stale = _changed(handed_back, max_retries=9)

        assert await store.amend(stale, basis=read) is AmendResult.NOT_AMENDABLE
        assert (await stored_event(store, event)).next_attempt_at == later
