"""The store contract, part four: an operator's cancels, moves and redeliveries."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from timefuse.domain.event import Event, new_event_id
from timefuse.domain.status import EventStatus
from timefuse.ports.store import CancelResult, MoveDueResult, RedeliverResult
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import (
    StoreTime,
    claim,
    expire_lease_of_one,
    insert_and_claim,
    insert_events,
    seed,
    stored_event,
    utc_now,
)

_FINISHED = [EventStatus.COMPLETED, EventStatus.DEAD_LETTER, EventStatus.FAILED]


class ActionsContract:
    # -- cancel ------------------------------------------------------------------------------

    async def test_cancels_a_pending_event(self, store: Store) -> None:
        (event,) = await insert_events(store, make_event())
        assert await store.cancel(event.id) is CancelResult.CANCELLED
        assert (await stored_event(store, event)).status is EventStatus.CANCELLED
        assert await claim(store) == []

    async def test_a_claimed_event_is_not_cancellable(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        assert await store.cancel(claimed.id) is CancelResult.NOT_PENDING
        assert await stored_event(store, claimed) == claimed

    async def test_cancelling_twice_reports_not_pending(self, store: Store) -> None:
        (event,) = await insert_events(store, make_event())
        await store.cancel(event.id)
        assert await store.cancel(event.id) is CancelResult.NOT_PENDING

    async def test_cancelling_an_unknown_event_reports_not_found(self, store: Store) -> None:
        assert await store.cancel(new_event_id(utc_now())) is CancelResult.NOT_FOUND

    async def test_cancel_within_sources_finds_nothing_of_another_source(
        self, store: Store
    ) -> None:
        (event,) = await insert_events(store, make_event(source="billing"))
        assert await store.cancel(event.id, sources=["shipping"]) is CancelResult.NOT_FOUND
        assert await store.cancel(event.id, sources=[]) is CancelResult.NOT_FOUND
        assert (await stored_event(store, event)).status is EventStatus.PENDING
        assert await store.cancel(event.id, sources=["billing"]) is CancelResult.CANCELLED

    async def test_cancel_by_external_id_cancels_only_pending_events(self, store: Store) -> None:
        now = utc_now()
        claimed_one = await insert_and_claim(store, external_job_id="job-1")
        pending = make_event(external_job_id="job-1", scheduled_at=now + timedelta(hours=1))
        elsewhere = make_event(external_job_id="job-2", scheduled_at=now + timedelta(hours=1))
        await insert_events(store, pending, elsewhere)
        (done,) = await seed(
            store, make_event(external_job_id="job-1", status=EventStatus.COMPLETED)
        )
        assert await store.cancel_by_external_id("job-1") == 1
        statuses = [(await stored_event(store, e)).status for e in (claimed_one, pending, done)]
        assert statuses == [EventStatus.PROCESSING, EventStatus.CANCELLED, EventStatus.COMPLETED]
        assert (await stored_event(store, elsewhere)).status is EventStatus.PENDING
        assert await store.cancel_by_external_id("job-unknown") == 0

    async def test_cancels_by_external_id_only_the_events_of_the_given_sources(
        self, store: Store
    ) -> None:
        later = utc_now() + timedelta(hours=1)

        def job(source: str, hours: int = 0, external: str = "job-1") -> Event:
            return make_event(
                external_job_id=external, source=source, scheduled_at=later + timedelta(hours=hours)
            )

        billing, billing_2, shipping, other = (
            job("billing"),
            job("billing", 1),
            job("shipping"),
            job("other"),
        )
        elsewhere = job("billing", external="job-2")
        await insert_events(store, billing, billing_2, shipping, other, elsewhere)
        assert await store.cancel_by_external_id("job-1", sources=[]) == 0
        assert await store.cancel_by_external_id("job-1", sources=["unknown"]) == 0
        with pytest.raises(TypeError):  # one string is not a collection of sources
            await store.cancel_by_external_id("job-1", sources="billing")
        assert await store.cancel_by_external_id("job-1", sources=["billing"]) == 2
        statuses = [
            (await stored_event(store, e)).status
            for e in (billing, billing_2, shipping, other, elsewhere)
        ]
        cancelled, pending = EventStatus.CANCELLED, EventStatus.PENDING
        assert statuses == [cancelled, cancelled, pending, pending, pending]
        assert await store.cancel_by_external_id("job-1", sources={"shipping", "other"}) == 2

    # -- moving a pending event's next attempt ----------------------------------------------

    async def test_moving_a_due_event_later_keeps_it_from_claims_until_then(
        self, store: Store
    ) -> None:
        (event,) = await insert_events(store, make_event())
        now = utc_now()
        later = now + timedelta(hours=1)

        assert await store.move_due(event.id, later, now) is MoveDueResult.MOVED

        # Only the next attempt moves: the time the sender asked for stays.
        assert await stored_event(store, event) == replace(
            event, next_attempt_at=later, updated_at=now
        )
        assert await claim(store) == []

    async def test_moving_a_later_event_to_now_makes_it_claimable(self, store: Store) -> None:
        scheduled = utc_now() + timedelta(days=2)
        (event,) = await insert_events(store, make_event(scheduled_at=scheduled))
        assert await claim(store) == []
        now = utc_now()

        assert await store.move_due(event.id, now, now) is MoveDueResult.MOVED

        (claimed,) = await claim(store)
        assert (claimed.id, claimed.scheduled_at) == (event.id, scheduled)

    async def test_a_claimed_or_finished_event_is_not_moved(self, store: Store) -> None:
        claimed = await insert_and_claim(store)
        (finished,) = await seed(store, make_event(status=EventStatus.COMPLETED))
        later = utc_now() + timedelta(hours=1)

        for event in (claimed, finished):
            result = await store.move_due(event.id, later, utc_now())
            assert result is MoveDueResult.NOT_PENDING
            assert await stored_event(store, event) == event

    async def test_moving_an_unknown_or_hidden_event_reports_not_found(self, store: Store) -> None:
        (event,) = await insert_events(store, make_event(source="billing"))
        later = utc_now() + timedelta(hours=1)

        unknown = await store.move_due(new_event_id(utc_now()), later, utc_now())
        other = await store.move_due(event.id, later, utc_now(), sources=["shipping"])
        none = await store.move_due(event.id, later, utc_now(), sources=[])

        assert (unknown, other, none) == (MoveDueResult.NOT_FOUND,) * 3
        assert await stored_event(store, event) == event
        assert await store.move_due(event.id, later, utc_now(), sources=["billing"]) is (
            MoveDueResult.MOVED
        )

    # -- redelivery --------------------------------------------------------------------------

    @pytest.mark.parametrize("status", _FINISHED)
    async def test_redelivers_a_finished_event_due_now_with_its_retries_reset(
        self, store: Store, status: EventStatus
    ) -> None:
        claimed = await insert_and_claim(store, max_retries=2)
        assert await store.record_outcomes([make_outcome(claimed, status=status)]) == {claimed.id}
        finished = await stored_event(store, claimed)
        now = utc_now()
        assert await store.redeliver(claimed.id, now) is RedeliverResult.REDELIVERED
        # last_error and executed_at stay: they tell what happened before the redelivery.
        assert await stored_event(store, claimed) == replace(
            finished,
            status=EventStatus.PENDING,
            next_attempt_at=now,
            attempts=0,
            retry_count=0,
            updated_at=now,
        )
        history = await store.attempts(claimed.id)
        assert [record.sequence for record in history] == [1], "the history is kept"
        (again,) = await claim(store, "worker-b")
        assert (again.id, again.attempts) == (claimed.id, 1)

    @pytest.mark.parametrize("status", [EventStatus.PENDING, EventStatus.CANCELLED])
    async def test_a_waiting_or_cancelled_event_is_not_redeliverable(
        self, store: Store, status: EventStatus
    ) -> None:
        (event,) = await seed(store, make_event(status=status))
        assert await store.redeliver(event.id, utc_now()) is RedeliverResult.NOT_REDELIVERABLE
        assert await stored_event(store, event) == event

    async def test_a_claimed_event_is_not_redeliverable(self, store: Store) -> None:
        event = await insert_and_claim(store)
        assert await store.redeliver(event.id, utc_now()) is RedeliverResult.NOT_REDELIVERABLE
        assert await stored_event(store, event) == event

    async def test_redelivering_an_unknown_or_hidden_event_reports_not_found(
        self, store: Store
    ) -> None:
        result = await store.redeliver(new_event_id(utc_now()), utc_now())
        assert result is RedeliverResult.NOT_FOUND
        (event,) = await seed(store, make_event(source="billing", status=EventStatus.FAILED))
        result = await store.redeliver(event.id, utc_now(), sources=["shipping"])
        assert result is RedeliverResult.NOT_FOUND
        assert (await stored_event(store, event)).status is EventStatus.FAILED

    async def test_a_redelivered_event_gets_max_retries_afresh_and_continues_its_history(
        self, store: Store, store_time: StoreTime
    ) -> None:
        # max_retries 1 allows two attempts; both leases expire, so the event dead-letters.
        first = await expire_lease_of_one(store, store_time, max_retries=1)
        assert first.status is EventStatus.PENDING
        (second,) = await claim(store, "worker-a", lease=0.05)
        await store_time.advance(0.3)
        assert await store.recover_expired_leases() == 1
        assert (await stored_event(store, second)).status is EventStatus.DEAD_LETTER
        assert await store.redeliver(second.id, utc_now()) is RedeliverResult.REDELIVERED
        # The first attempt after the redelivery is attempt 1 of 2 again.
        (third,) = await claim(store, "worker-b", lease=0.05)
        assert third.attempts == 1
        await store_time.advance(0.3)
        assert await store.recover_expired_leases() == 1
        stored = await stored_event(store, third)
        assert (stored.status, stored.retry_count) == (EventStatus.PENDING, 1)
        history = await store.attempts(third.id)
        numbering = [(record.sequence, record.attempt, record.worker) for record in history]
        assert numbering == [(1, 1, "worker-a"), (2, 2, "worker-a"), (3, 1, "worker-b")]

    # -- redelivery of dead letters in bulk --------------------------------------------------

    async def test_redelivers_the_dead_letters_of_the_given_sources_and_window(
        self, store: Store
    ) -> None:
        start = utc_now() - timedelta(days=1)
        end = start + timedelta(hours=1)

        def event(
            source: str, at: datetime, status: EventStatus = EventStatus.DEAD_LETTER
        ) -> Event:
            return make_event(source=source, scheduled_at=at, status=status)

        inside = [event("billing", start), event("shipping", end - timedelta(microseconds=1))]
        outside = [
            event("billing", end),  # the window is half-open
            event("billing", start - timedelta(microseconds=1)),
            event("other", start),
            event("billing", start, EventStatus.FAILED),
        ]
        await seed(store, *inside, *outside)
        now = utc_now()
        redelivered = await store.redeliver_dead_letters(
            sources=["billing", "shipping"], scheduled_from=start, scheduled_to=end, now=now
        )
        assert redelivered == 2
        for e in inside:
            stored = await stored_event(store, e)
            assert (stored.status, stored.next_attempt_at, stored.attempts) == (
                EventStatus.PENDING,
                now,
                0,
            )
        for e in outside:
            assert await stored_event(store, e) == e

    async def test_bulk_redelivery_takes_the_earliest_dead_letters_up_to_the_limit(
        self, store: Store
    ) -> None:
        start = utc_now() - timedelta(days=1)
        events = [
            make_event(scheduled_at=start + timedelta(minutes=m), status=EventStatus.DEAD_LETTER)
            for m in (4, 2, 0, 3, 1)
        ]
        await seed(store, *events)
        by_time = sorted(events, key=lambda event: event.scheduled_at)

        async def redeliver_two() -> int:
            return await store.redeliver_dead_letters(
                sources=None, scheduled_from=None, scheduled_to=None, now=utc_now(), limit=2
            )

        assert await redeliver_two() == 2
        statuses = [(await stored_event(store, event)).status for event in by_time]
        assert statuses == [EventStatus.PENDING] * 2 + [EventStatus.DEAD_LETTER] * 3
        assert [await redeliver_two() for _ in range(3)] == [2, 1, 0]

    async def test_bulk_redelivery_of_no_sources_redelivers_nothing(self, store: Store) -> None:
        (event,) = await seed(store, make_event(status=EventStatus.DEAD_LETTER))
        redelivered = await store.redeliver_dead_letters(
            sources=[], scheduled_from=None, scheduled_to=None, now=utc_now()
        )
        assert redelivered == 0
        assert await stored_event(store, event) == event
        with pytest.raises(ValueError, match="limit"):
            await store.redeliver_dead_letters(
                sources=None, scheduled_from=None, scheduled_to=None, now=utc_now(), limit=0
            )
