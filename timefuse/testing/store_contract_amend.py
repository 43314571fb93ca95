"""The store contract, part eight: changing a PENDING event in place."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AmendResult, EventQuery
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
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

        assert await store.amend(changed, expected_version=1) is AmendResult.AMENDED

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

        assert await store.amend(changed, expected_version=1) is AmendResult.AMENDED

        assert [e.id for e in await claim(store)] == [event.id]

    async def test_a_stale_version_changes_nothing(self, store: Store) -> None:
        (event,) = await insert_events(store, make_event())
        assert await store.amend(_changed(event, max_retries=1), expected_version=1) is (
            AmendResult.AMENDED
        )
        stale = _changed(event, max_retries=9)

        assert await store.amend(stale, expected_version=1) is AmendResult.NOT_AMENDABLE

        stored = await stored_event(store, event)
        assert (stored.max_retries, stored.version) == (1, 2)

    async def test_a_claimed_event_is_not_changed(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")

        result = await store.amend(_changed(claimed, max_retries=9), expected_version=1)

        assert result is AmendResult.NOT_AMENDABLE
        stored = await stored_event(store, claimed)
        assert (stored.status, stored.max_retries, stored.version) == (
            EventStatus.PROCESSING,
            claimed.max_retries,
            1,
        )

    async def test_an_unknown_event_is_not_changed(self, store: Store) -> None:
        result = await store.amend(_changed(make_event()), expected_version=1)
        assert result is AmendResult.NOT_AMENDABLE

    async def test_a_time_taken_by_a_twin_is_a_duplicate(self, store: Store) -> None:
        at = utc_now() + timedelta(hours=1)
        first, second = await insert_events(
            store,
            make_event(external_job_id="job-twin", scheduled_at=at),
            make_event(external_job_id="job-twin", scheduled_at=at + timedelta(hours=1)),
        )

        moved = _changed(second, scheduled_at=at, next_attempt_at=at)

        assert await store.amend(moved, expected_version=1) is AmendResult.DUPLICATE
        assert (await stored_event(store, second)).scheduled_at == at + timedelta(hours=1)
        assert (await stored_event(store, first)).version == 1

    async def test_the_attempt_history_moves_with_the_event(
        self, store: Store, store_time: StoreTime
    ) -> None:
        retried = await expire_lease_of_one(store, store_time)
        assert len(await store.attempts(retried.id)) == 1
        later = retried.scheduled_at + timedelta(days=35)

        moved = _changed(retried, scheduled_at=later, next_attempt_at=later)
        assert await store.amend(moved, expected_version=1) is AmendResult.AMENDED

        stored = await stored_event(store, retried)
        assert (stored.scheduled_at, stored.attempts, stored.retry_count) == (
            later,
            retried.attempts,
            retried.retry_count,
        )
        assert len(await store.attempts(retried.id)) == 1
