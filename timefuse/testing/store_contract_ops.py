"""The event store contract for the operations added after the base suite.

Counts by source, finding and cancelling by external id within sources, the claim guard on
outcomes (a late outcome of an earlier claim by the same worker), listings (keyset pages),
redelivery (one event, or dead letters in bulk), rescheduling claimed events, and the attempt
record an expired lease leaves. An adapter that implements them runs this suite beside the
base one, with the same ``event_store`` fixture::

    from timefuse.testing.store_contract import *  # noqa: F403
    from timefuse.testing.store_contract_ops import *  # noqa: F403

The listing tests live in :mod:`timefuse.testing.store_contract_listing` and come along with
this module's import.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from timefuse.domain.event import Event, new_event_id
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import REDELIVERABLE_STATUSES, EventStatus
from timefuse.ports.store import EventStore, RedeliverResult
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_listing import *  # noqa: F403
from timefuse.testing.store_contract_support import (
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    expire_lease_of_one,
    insert_and_claim,
    insert_events,
    stored_event,
    utc_now,
)

pytestmark = [pytest.mark.timefuse_contract, pytest.mark.asyncio]

_NOT_REDELIVERABLE = sorted(set(EventStatus) - REDELIVERABLE_STATUSES)


# -- counts by source -----------------------------------------------------------------------


async def test_counts_only_the_events_of_the_given_sources(event_store: EventStore) -> None:
    await insert_events(
        event_store,
        make_event(source="billing"),
        make_event(source="billing", status=EventStatus.FAILED),
        make_event(source="shipping", status=EventStatus.FAILED),
        make_event(source="other"),
    )
    expected = dict.fromkeys(EventStatus, 0) | {EventStatus.PENDING: 1, EventStatus.FAILED: 2}
    assert await event_store.count_by_status(sources=["billing", "shipping"]) == expected
    assert sum((await event_store.count_by_status(sources={"unknown"})).values()) == 0
    assert await event_store.count_by_status(sources=[]) == dict.fromkeys(EventStatus, 0)
    assert sum((await event_store.count_by_status()).values()) == 4
    with pytest.raises(TypeError):  # one string is not a collection of sources
        await event_store.count_by_status(sources="billing")


# -- by external id, within sources ----------------------------------------------------------


async def test_finds_by_external_id_only_the_events_of_the_given_sources(
    event_store: EventStore,
) -> None:
    now = utc_now()

    def job(source: str, age: int) -> Event:
        return make_event(
            external_job_id="job-1",
            source=source,
            scheduled_at=now + timedelta(hours=age),
            created_at=now - timedelta(minutes=age),
        )

    # The other source's events are all newer: a limit applied before the source filter
    # would return only them.
    billing = [job("billing", 10), job("billing", 11)]
    shipping = job("shipping", 12)
    others = [job("other", age) for age in (1, 2, 3)]
    await insert_events(event_store, *billing, shipping, *others)
    found = await event_store.find_by_external_id("job-1", limit=2, sources=["billing"])
    assert [event.id for event in found] == [event.id for event in billing]
    both = await event_store.find_by_external_id("job-1", sources={"billing", "shipping"})
    assert [event.id for event in both] == [event.id for event in (*billing, shipping)]
    assert await event_store.find_by_external_id("job-1", sources=[]) == []
    assert await event_store.find_by_external_id("job-1", sources=["unknown"]) == []
    assert len(await event_store.find_by_external_id("job-1")) == 6
    with pytest.raises(TypeError):  # one string is not a collection of sources
        await event_store.find_by_external_id("job-1", sources="billing")


async def test_cancels_by_external_id_only_the_events_of_the_given_sources(
    event_store: EventStore,
) -> None:
    later = utc_now() + timedelta(hours=1)
    billing, billing_2, shipping, other, billing_done, elsewhere = (
        make_event(external_job_id="job-1", source="billing", scheduled_at=later),
        make_event(
            external_job_id="job-1", source="billing", scheduled_at=later + timedelta(hours=1)
        ),
        make_event(external_job_id="job-1", source="shipping", scheduled_at=later),
        make_event(external_job_id="job-1", source="other", scheduled_at=later),
        make_event(external_job_id="job-1", source="billing", status=EventStatus.COMPLETED),
        make_event(external_job_id="job-2", source="billing", scheduled_at=later),
    )
    await insert_events(event_store, billing, billing_2, shipping, other, billing_done, elsewhere)
    assert await event_store.cancel_by_external_id("job-1", sources=[]) == 0
    assert await event_store.cancel_by_external_id("job-1", sources=["unknown"]) == 0
    with pytest.raises(TypeError):  # one string is not a collection of sources
        await event_store.cancel_by_external_id("job-1", sources="billing")
    assert await event_store.cancel_by_external_id("job-1", sources=["billing"]) == 2
    statuses = {
        event.id: (await stored_event(event_store, event)).status
        for event in (billing, billing_2, shipping, other, billing_done, elsewhere)
    }
    assert statuses == {
        billing.id: EventStatus.CANCELLED,
        billing_2.id: EventStatus.CANCELLED,
        shipping.id: EventStatus.PENDING,
        other.id: EventStatus.PENDING,
        billing_done.id: EventStatus.COMPLETED,
        elsewhere.id: EventStatus.PENDING,
    }
    assert await event_store.cancel_by_external_id("job-1", sources={"shipping", "other"}) == 2
    assert (await stored_event(event_store, other)).status is EventStatus.CANCELLED


# -- the claim guard on outcomes ------------------------------------------------------------


async def test_a_late_outcome_cannot_apply_to_the_same_workers_newer_claim(
    event_store: EventStore,
) -> None:
    first = await insert_and_claim(event_store, "worker-a", SHORT_LEASE, max_retries=3)
    assert first.attempts == 1
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert await event_store.recover_expired_leases() == 1
    (second,) = await event_store.claim_due("worker-a", 10, 30.0)
    assert (second.id, second.attempts, second.locked_by) == (first.id, 2, "worker-a")
    late = make_outcome(first, "worker-a", EventStatus.COMPLETED)
    assert late.attempt.attempt == 1
    assert await event_store.record_outcomes("worker-a", [late]) == 0
    assert await stored_event(event_store, first) == second
    history = await event_store.attempts(first.id)
    assert [(record.attempt, record.error) for record in history] == [(1, LEASE_EXPIRED_ERROR)]
    current = make_outcome(second, "worker-a", EventStatus.COMPLETED)
    assert current.attempt.attempt == 2
    assert await event_store.record_outcomes("worker-a", [current]) == 1
    stored = await stored_event(event_store, first)
    assert (stored.status, stored.locked_by) == (EventStatus.COMPLETED, None)
    history = await event_store.attempts(first.id)
    assert [(record.sequence, record.attempt) for record in history] == [(1, 1), (2, 2)]
    assert history[-1].outcome is OutcomeKind.SUCCESS


# -- redelivery -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(REDELIVERABLE_STATUSES))
async def test_redelivers_a_finished_event_due_now_with_its_retries_reset(
    event_store: EventStore, status: EventStatus
) -> None:
    claimed = await insert_and_claim(event_store, max_retries=2)
    outcome = make_outcome(claimed, "worker-a", status)
    assert await event_store.record_outcomes("worker-a", [outcome]) == 1
    finished = await stored_event(event_store, claimed)
    now = utc_now()
    assert await event_store.redeliver(claimed.id, now) is RedeliverResult.REDELIVERED
    # last_error and executed_at stay: they tell what happened before the redelivery.
    assert await stored_event(event_store, claimed) == replace(
        finished,
        status=EventStatus.PENDING,
        next_attempt_at=now,
        attempts=0,
        retry_count=0,
        updated_at=now,
    )
    history = await event_store.attempts(claimed.id)
    assert [record.sequence for record in history] == [1], "the history is kept"
    (again,) = await event_store.claim_due("worker-b", 10, 30.0)
    assert (again.id, again.attempts) == (claimed.id, 1)


@pytest.mark.parametrize("status", _NOT_REDELIVERABLE)
async def test_an_event_not_finished_is_not_redeliverable(
    event_store: EventStore, status: EventStatus
) -> None:
    if status is EventStatus.PROCESSING:
        event = await insert_and_claim(event_store)
    else:
        (event,) = await insert_events(event_store, make_event(status=status))
    result = await event_store.redeliver(event.id, utc_now())
    assert result is RedeliverResult.NOT_REDELIVERABLE
    assert await stored_event(event_store, event) == event


async def test_redelivering_an_unknown_event_reports_not_found(event_store: EventStore) -> None:
    result = await event_store.redeliver(new_event_id(utc_now()), utc_now())
    assert result is RedeliverResult.NOT_FOUND


async def test_a_redelivered_event_gets_max_retries_afresh_and_continues_its_history(
    event_store: EventStore,
) -> None:
    # max_retries 1 allows two attempts; both leases expire, so the event dead-letters.
    first = await expire_lease_of_one(event_store, max_retries=1)
    assert first.status is EventStatus.PENDING
    (second,) = await event_store.claim_due("worker-a", 10, SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert await event_store.recover_expired_leases() == 1
    assert (await stored_event(event_store, second)).status is EventStatus.DEAD_LETTER
    assert await event_store.redeliver(second.id, utc_now()) is RedeliverResult.REDELIVERED
    # The first attempt after the redelivery is attempt 1 of 2 again: when its lease expires
    # too, the event is retried rather than dead-lettered.
    (third,) = await event_store.claim_due("worker-b", 10, SHORT_LEASE)
    assert third.attempts == 1
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert await event_store.recover_expired_leases() == 1
    stored = await stored_event(event_store, third)
    assert (stored.status, stored.retry_count) == (EventStatus.PENDING, 1)
    history = await event_store.attempts(third.id)
    numbering = [(record.sequence, record.attempt, record.worker) for record in history]
    assert numbering == [(1, 1, "worker-a"), (2, 2, "worker-a"), (3, 1, "worker-b")]


# -- redelivery of dead letters in bulk -----------------------------------------------------


def _scheduled_event(source: str, at: datetime, status: EventStatus) -> Event:
    return make_event(source=source, scheduled_at=at, status=status)


async def test_redelivers_the_dead_letters_of_the_given_sources_and_window(
    event_store: EventStore,
) -> None:
    start = utc_now() - timedelta(days=1)
    end = start + timedelta(hours=1)
    dead, failed = EventStatus.DEAD_LETTER, EventStatus.FAILED
    inside = [
        _scheduled_event("billing", start, dead),
        _scheduled_event("shipping", end - timedelta(microseconds=1), dead),
    ]
    outside = [
        _scheduled_event("billing", end, dead),  # the window is half-open
        _scheduled_event("billing", start - timedelta(microseconds=1), dead),
        _scheduled_event("other", start, dead),
        _scheduled_event("billing", start, failed),
    ]
    await insert_events(event_store, *inside, *outside)
    now = utc_now()
    redelivered = await event_store.redeliver_dead_letters(
        sources=["billing", "shipping"], scheduled_from=start, scheduled_to=end, now=now
    )
    assert redelivered == 2
    for event in inside:
        stored = await stored_event(event_store, event)
        assert (stored.status, stored.next_attempt_at, stored.attempts) == (
            EventStatus.PENDING,
            now,
            0,
        )
    for event in outside:
        assert await stored_event(event_store, event) == event


async def test_bulk_redelivery_takes_the_earliest_dead_letters_up_to_the_limit(
    event_store: EventStore,
) -> None:
    start = utc_now() - timedelta(days=1)
    events = [
        _scheduled_event("billing", start + timedelta(minutes=m), EventStatus.DEAD_LETTER)
        for m in (4, 2, 0, 3, 1)
    ]
    await insert_events(event_store, *events)
    by_time = sorted(events, key=lambda event: event.scheduled_at)

    async def redeliver_two() -> int:
        return await event_store.redeliver_dead_letters(
            sources=None, scheduled_from=None, scheduled_to=None, now=utc_now(), limit=2
        )

    assert await redeliver_two() == 2
    statuses = [(await stored_event(event_store, event)).status for event in by_time]
    assert statuses == [EventStatus.PENDING] * 2 + [EventStatus.DEAD_LETTER] * 3
    assert [await redeliver_two() for _ in range(3)] == [2, 1, 0]


async def test_bulk_redelivery_of_no_sources_redelivers_nothing(event_store: EventStore) -> None:
    (event,) = await insert_events(event_store, make_event(status=EventStatus.DEAD_LETTER))
    redelivered = await event_store.redeliver_dead_letters(
        sources=[], scheduled_from=None, scheduled_to=None, now=utc_now()
    )
    assert redelivered == 0
    assert await stored_event(event_store, event) == event
    with pytest.raises(ValueError, match="limit"):
        await event_store.redeliver_dead_letters(
            sources=None, scheduled_from=None, scheduled_to=None, now=utc_now(), limit=0
        )


# -- reschedule -----------------------------------------------------------------------------


async def test_reschedule_hands_events_back_due_later_without_the_attempt(
    event_store: EventStore,
) -> None:
    claimed = await insert_and_claim(event_store, "worker-a", retry_count=1, last_error="HTTP 503")
    due_at = utc_now() + timedelta(minutes=10)
    assert await event_store.reschedule("worker-a", [claimed.id], due_at) == 1
    stored = await stored_event(event_store, claimed)
    assert (stored.status, stored.attempts, stored.next_attempt_at) == (
        EventStatus.PENDING,
        0,
        due_at,
    )
    assert (stored.locked_by, stored.lock_expires_at) == (None, None)
    assert (stored.retry_count, stored.last_error) == (1, "HTTP 503")
    assert await event_store.attempts(claimed.id) == []
    assert await event_store.claim_due("worker-b", 10, 30.0) == []
    assert await event_store.next_due_at() == due_at


async def test_reschedule_applies_only_to_the_workers_claimed_events(
    event_store: EventStore,
) -> None:
    claimed = await insert_and_claim(event_store, "worker-a")
    (pending,) = await insert_events(event_store, make_event(scheduled_at=utc_now()))
    due_at = utc_now() + timedelta(minutes=10)
    assert await event_store.reschedule("worker-b", [claimed.id, pending.id], due_at) == 0
    assert await event_store.reschedule("worker-a", [pending.id], due_at) == 0
    assert await event_store.reschedule("worker-a", [], due_at) == 0
    assert await stored_event(event_store, claimed) == claimed
    assert await stored_event(event_store, pending) == pending


# -- the attempt record of an expired lease -------------------------------------------------


@pytest.mark.parametrize("max_retries", [3, 0], ids=["retried", "dead-lettered"])
async def test_an_expired_lease_leaves_an_attempt_record(
    event_store: EventStore, max_retries: int
) -> None:
    expired = await expire_lease_of_one(event_store, max_retries=max_retries)
    (record,) = await event_store.attempts(expired.id)
    assert (record.attempt, record.sequence, record.worker) == (1, 1, "worker-a")
    assert (record.outcome, record.status_code) == (OutcomeKind.RETRIABLE, None)
    assert record.error == LEASE_EXPIRED_ERROR
    # It started at the claim and lasted until the recovery, past the lease's end.
    assert record.duration_ms >= SHORT_LEASE * 1000
    recovered_at = record.started_at + timedelta(milliseconds=record.duration_ms)
    assert record.started_at < recovered_at <= utc_now()
    assert recovered_at - record.started_at >= timedelta(seconds=PAST_SHORT_LEASE / 2)
