"""The event store contract: every :class:`~timefuse.ports.store.EventStore` adapter passes it.

To run it against an adapter, provide a fixture named ``event_store`` that yields an opened,
empty store, and import the suite into a test module::

    from timefuse.testing.store_contract import *  # noqa: F403

The tests are coroutines run by pytest-asyncio; they carry its marker, so strict mode works
as well as ``asyncio_mode = "auto"`` (in strict mode, declare ``event_store`` with
``@pytest_asyncio.fixture``). The import brings ``pytestmark`` along: a module that sets its
own must include ``pytest.mark.asyncio``.

Operations added to the port later (listings, redelivery, rescheduling, the attempt record
of an expired lease) have their own suite, :mod:`timefuse.testing.store_contract_ops`, which
an adapter imports the same way once it implements them.

Stores guard leases with their own clock (PostgreSQL's, for one), so these tests use real
time, short leases and sleeps, never an injected clock; time assertions allow some slack
(:mod:`timefuse.testing.store_contract_support`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta, timezone

import pytest

from timefuse.domain.event import new_event_id
from timefuse.domain.lease import LEASE_EXPIRED_ERROR, expire_lease
from timefuse.domain.status import EventStatus
from timefuse.ports.store import CancelResult, EventStore
from timefuse.testing.factories import make_event, make_outcome

# The retention tests live in their own module (this one would pass 400 lines); importing
# them here keeps ``from timefuse.testing.store_contract import *`` the whole base suite.
from timefuse.testing.store_contract_retention import *
from timefuse.testing.store_contract_support import (
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    assert_near,
    expire_lease_of_one,
    insert_and_claim,
    insert_events,
    recorded_attempts,
    stored_event,
    utc_now,
)

pytestmark = [pytest.mark.timefuse_contract, pytest.mark.asyncio]


# -- insert and read ------------------------------------------------------------------------


async def test_round_trips_every_field_of_an_inserted_event(event_store: EventStore) -> None:
    now = utc_now()
    event = make_event(
        scheduled_at=(now + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))),
        next_attempt_at=now + timedelta(hours=1, seconds=7.25),
        payload='{ "text": "café ☃",  "n": 1.50, "list": [ ] }\n'.encode(),
        max_retries=7,
        attempts=2,
        retry_count=2,
        last_error="HTTP 503",
        executed_at=now - timedelta(minutes=5),
        delivery_window_seconds=30.0,
        retry_backoff_seconds=2.5,
        retry_backoff_max_seconds=600.0,
        extra={"trace_id": "abc123", "tenant": 42},
        created_at=now - timedelta(seconds=3),
        updated_at=now - timedelta(seconds=1),
    )
    await insert_events(event_store, event)
    stored = await stored_event(event_store, event)
    assert stored == event
    assert stored.payload == event.payload  # byte for byte: whitespace and all
    assert stored.scheduled_at.utcoffset() is not None


async def test_returns_none_for_an_unknown_id(event_store: EventStore) -> None:
    assert await event_store.get(new_event_id(utc_now())) is None


async def test_inserting_nothing_stores_nothing(event_store: EventStore) -> None:
    assert await event_store.insert_many([]) == {}
    assert sum((await event_store.count_by_status()).values()) == 0


async def test_skips_a_duplicate_id_and_keeps_the_first_event(event_store: EventStore) -> None:
    (first,) = await insert_events(event_store, make_event())
    again = make_event(id=first.id, destination="https://elsewhere.example/")
    assert await event_store.insert_many([again]) == {first.id: first.id}
    assert (await stored_event(event_store, first)).destination == first.destination


async def test_deduplicates_by_dedup_key_to_the_stored_id(event_store: EventStore) -> None:
    (first,) = await insert_events(event_store, make_event())
    again = make_event(
        source=first.source,
        external_job_id=first.external_job_id,
        scheduled_at=first.scheduled_at.astimezone(timezone(timedelta(hours=-5))),
    )
    assert await event_store.insert_many([again]) == {again.id: first.id}
    assert await event_store.get(again.id) is None


async def test_deduplicates_within_one_batch(event_store: EventStore) -> None:
    first, other = make_event(), make_event()
    twin = make_event(
        source=first.source,
        external_job_id=first.external_job_id,
        scheduled_at=first.scheduled_at,
    )
    mapping = await event_store.insert_many([first, twin, other])
    assert mapping == {first.id: first.id, twin.id: first.id, other.id: other.id}
    assert (await event_store.count_by_status())[EventStatus.PENDING] == 2


async def test_the_same_job_at_another_time_is_another_event(event_store: EventStore) -> None:
    first = make_event()
    later = make_event(
        source=first.source,
        external_job_id=first.external_job_id,
        scheduled_at=first.scheduled_at + timedelta(minutes=1),
    )
    await insert_events(event_store, first, later)


# -- claim ----------------------------------------------------------------------------------


async def test_claims_only_due_pending_events_earliest_first(event_store: EventStore) -> None:
    now = utc_now()
    late = make_event(scheduled_at=now - timedelta(seconds=1))
    early = make_event(scheduled_at=now - timedelta(seconds=10))
    future = make_event(scheduled_at=now + timedelta(hours=1))
    cancelled = make_event(scheduled_at=now - timedelta(seconds=20), status=EventStatus.CANCELLED)
    await insert_events(event_store, late, future, early, cancelled)
    claimed = await event_store.claim_due("worker-a", 10, 30.0)
    assert [event.id for event in claimed] == [early.id, late.id]


async def test_claim_honours_the_limit(event_store: EventStore) -> None:
    now = utc_now()
    events = [make_event(scheduled_at=now - timedelta(seconds=s)) for s in (5, 4, 3, 2, 1)]
    await insert_events(event_store, *events)
    first = await event_store.claim_due("worker-a", 2, 30.0)
    assert [event.id for event in first] == [events[0].id, events[1].id]
    rest = await event_store.claim_due("worker-a", 10, 30.0)
    assert [event.id for event in rest] == [event.id for event in events[2:]]


async def test_claim_sets_the_lease_and_counts_the_attempt(event_store: EventStore) -> None:
    claimed = await insert_and_claim(event_store, "worker-a", 30.0)
    assert claimed.status is EventStatus.PROCESSING
    assert claimed.locked_by == "worker-a"
    assert claimed.attempts == 1
    assert_near(claimed.lock_expires_at, utc_now() + timedelta(seconds=30))
    assert await stored_event(event_store, claimed) == claimed


async def test_a_leased_event_is_not_claimed_again(event_store: EventStore) -> None:
    await insert_and_claim(event_store, "worker-a")
    assert await event_store.claim_due("worker-b", 10, 30.0) == []


async def test_claims_each_due_event_once_across_concurrent_claimers(
    event_store: EventStore,
) -> None:
    now = utc_now()
    events = [make_event(scheduled_at=now - timedelta(milliseconds=i)) for i in range(60)]
    await insert_events(event_store, *events)
    workers = [f"worker-{i}" for i in range(6)]
    batches = await asyncio.gather(*(event_store.claim_due(w, 15, 30.0) for w in workers))
    claimed = [
        (event, worker) for worker, batch in zip(workers, batches, strict=True) for event in batch
    ]
    assert sorted(event.id for event, _ in claimed) == sorted(event.id for event in events)
    for event, worker in claimed:
        assert (await stored_event(event_store, event)).locked_by == worker


# -- outcomes, release, lease recovery -----------------------------------------------------


async def test_a_success_completes_the_event_and_keeps_the_attempt(
    event_store: EventStore,
) -> None:
    claimed = await insert_and_claim(event_store, "worker-a")
    outcome = make_outcome(claimed, "worker-a", EventStatus.COMPLETED)
    assert await event_store.record_outcomes("worker-a", [outcome]) == 1
    stored = await stored_event(event_store, claimed)
    assert stored.status is EventStatus.COMPLETED
    assert (stored.locked_by, stored.lock_expires_at) == (None, None)
    assert stored.executed_at == outcome.executed_at
    assert await recorded_attempts(event_store, claimed.id) == [outcome.attempt]


async def test_a_retry_makes_the_event_due_at_its_next_attempt(event_store: EventStore) -> None:
    claimed = await insert_and_claim(event_store, "worker-a")
    outcome = make_outcome(claimed, "worker-a", EventStatus.PENDING)
    assert await event_store.record_outcomes("worker-a", [outcome]) == 1
    stored = await stored_event(event_store, claimed)
    assert (stored.status, stored.retry_count, stored.last_error) == (
        EventStatus.PENDING,
        1,
        outcome.last_error,
    )
    assert stored.next_attempt_at == outcome.next_attempt_at
    assert await event_store.next_due_at() == outcome.next_attempt_at
    assert await event_store.claim_due("worker-a", 10, 30.0) == []


async def test_an_outcome_from_another_worker_does_not_apply(event_store: EventStore) -> None:
    claimed = await insert_and_claim(event_store, "worker-a")
    outcome = make_outcome(claimed, "worker-b")
    assert await event_store.record_outcomes("worker-b", [outcome]) == 0
    assert (await stored_event(event_store, claimed)).locked_by == "worker-a"
    assert await event_store.attempts(claimed.id) == []


async def test_a_late_outcome_cannot_overwrite_a_newer_claim(event_store: EventStore) -> None:
    stale = await insert_and_claim(event_store, "worker-a", SHORT_LEASE)
    await asyncio.sleep(PAST_SHORT_LEASE)
    assert await event_store.recover_expired_leases() == 1
    (newer,) = await event_store.claim_due("worker-b", 10, 30.0)
    assert await event_store.record_outcomes("worker-a", [make_outcome(stale, "worker-a")]) == 0
    assert await stored_event(event_store, stale) == newer
    # The history may hold the expiry's own record, never the late outcome's.
    history = await event_store.attempts(stale.id)
    assert all(record.error == LEASE_EXPIRED_ERROR for record in history)


async def test_applies_only_the_outcomes_under_the_workers_lease(event_store: EventStore) -> None:
    await insert_events(event_store, make_event(), make_event())
    mine = await event_store.claim_due("worker-a", 10, 30.0)
    theirs = await insert_and_claim(event_store, "worker-b")
    updates = [make_outcome(event, "worker-a") for event in [*mine, theirs]]
    assert await event_store.record_outcomes("worker-a", updates) == 2
    assert (await stored_event(event_store, theirs)).status is EventStatus.PROCESSING
    assert await event_store.attempts(theirs.id) == []
    for event in mine:
        assert len(await event_store.attempts(event.id)) == 1


async def test_release_hands_events_back_due_now_without_the_attempt(
    event_store: EventStore,
) -> None:
    claimed = await insert_and_claim(event_store, scheduled_at=utc_now() - timedelta(minutes=1))
    assert await event_store.release("worker-a", [claimed.id]) == 1
    stored = await stored_event(event_store, claimed)
    assert (stored.status, stored.attempts, stored.locked_by) == (EventStatus.PENDING, 0, None)
    assert stored.lock_expires_at is None
    assert_near(stored.next_attempt_at, utc_now())
    assert [event.id for event in await event_store.claim_due("worker-b", 10, 30.0)] == [claimed.id]


async def test_release_by_another_worker_does_nothing(event_store: EventStore) -> None:
    claimed = await insert_and_claim(event_store, "worker-a")
    assert await event_store.release("worker-b", [claimed.id]) == 0
    assert (await stored_event(event_store, claimed)).status is EventStatus.PROCESSING


async def test_an_expired_lease_returns_the_event_with_a_failed_attempt(
    event_store: EventStore,
) -> None:
    stored = await expire_lease_of_one(event_store, max_retries=3)
    expected = expire_lease(attempts=1, retry_count=0, max_retries=3, now=utc_now())
    assert (stored.status, stored.retry_count) == (expected.status, expected.retry_count)
    assert (stored.attempts, stored.last_error) == (1, LEASE_EXPIRED_ERROR)
    assert (stored.locked_by, stored.lock_expires_at) == (None, None)
    assert_near(stored.next_attempt_at, utc_now())
    assert len(await event_store.claim_due("worker-b", 10, 30.0)) == 1


async def test_an_expired_lease_on_the_last_attempt_dead_letters(
    event_store: EventStore,
) -> None:
    stored = await expire_lease_of_one(event_store, max_retries=0)
    expected = expire_lease(attempts=1, retry_count=0, max_retries=0, now=utc_now())
    assert (stored.status, stored.retry_count) == (expected.status, expected.retry_count)
    assert stored.status is EventStatus.DEAD_LETTER
    assert await event_store.claim_due("worker-b", 10, 30.0) == []
    assert await event_store.next_due_at() is None


async def test_a_live_lease_is_not_recovered(event_store: EventStore) -> None:
    claimed = await insert_and_claim(event_store, "worker-a", 60.0)
    assert await event_store.recover_expired_leases() == 0
    assert await stored_event(event_store, claimed) == claimed


# -- cancel ---------------------------------------------------------------------------------


async def test_cancels_a_pending_event(event_store: EventStore) -> None:
    (event,) = await insert_events(event_store, make_event())
    assert await event_store.cancel(event.id) is CancelResult.CANCELLED
    assert (await stored_event(event_store, event)).status is EventStatus.CANCELLED
    assert await event_store.claim_due("worker-a", 10, 30.0) == []


async def test_a_claimed_event_is_not_cancellable(event_store: EventStore) -> None:
    claimed = await insert_and_claim(event_store, "worker-a")
    assert await event_store.cancel(claimed.id) is CancelResult.NOT_PENDING
    assert await stored_event(event_store, claimed) == claimed


async def test_cancelling_twice_reports_not_pending(event_store: EventStore) -> None:
    (event,) = await insert_events(event_store, make_event())
    await event_store.cancel(event.id)
    assert await event_store.cancel(event.id) is CancelResult.NOT_PENDING


async def test_cancelling_an_unknown_event_reports_not_found(event_store: EventStore) -> None:
    assert await event_store.cancel(new_event_id(utc_now())) is CancelResult.NOT_FOUND


async def test_cancel_by_external_id_cancels_only_pending_events(
    event_store: EventStore,
) -> None:
    now = utc_now()
    claimed_one = await insert_and_claim(event_store, external_job_id="job-1")
    pending, done, elsewhere = (
        make_event(external_job_id="job-1", scheduled_at=now + timedelta(hours=1)),
        make_event(external_job_id="job-1", status=EventStatus.COMPLETED),
        make_event(external_job_id="job-2", scheduled_at=now + timedelta(hours=1)),
    )
    await insert_events(event_store, pending, done, elsewhere)
    assert await event_store.cancel_by_external_id("job-1") == 1
    statuses = [(await stored_event(event_store, e)).status for e in (claimed_one, pending, done)]
    assert statuses == [EventStatus.PROCESSING, EventStatus.CANCELLED, EventStatus.COMPLETED]
    assert (await stored_event(event_store, elsewhere)).status is EventStatus.PENDING
    assert await event_store.cancel_by_external_id("job-unknown") == 0


# -- queries --------------------------------------------------------------------------------


async def test_finds_events_by_external_id_most_recent_first(event_store: EventStore) -> None:
    now = utc_now()
    ages = (3, 1, 2)
    events = [
        make_event(
            external_job_id="job-1",
            scheduled_at=now + timedelta(hours=age),
            created_at=now - timedelta(minutes=age),
        )
        for age in ages
    ]
    await insert_events(event_store, *events, make_event(external_job_id="job-2"))
    by_age = [events[ages.index(age)].id for age in sorted(ages)]
    assert [e.id for e in await event_store.find_by_external_id("job-1")] == by_age
    assert [e.id for e in await event_store.find_by_external_id("job-1", limit=2)] == by_age[:2]
    assert await event_store.find_by_external_id("job-unknown") == []


async def test_counts_events_in_every_status(event_store: EventStore) -> None:
    assert await event_store.count_by_status() == dict.fromkeys(EventStatus, 0)
    await insert_and_claim(event_store)
    future = utc_now() + timedelta(hours=1)
    await insert_events(
        event_store,
        make_event(scheduled_at=future),
        make_event(scheduled_at=future),
        make_event(status=EventStatus.COMPLETED),
        make_event(status=EventStatus.CANCELLED),
    )
    expected = dict.fromkeys(EventStatus, 0)
    expected |= {EventStatus.PENDING: 2, EventStatus.PROCESSING: 1}
    expected |= {EventStatus.COMPLETED: 1, EventStatus.CANCELLED: 1}
    assert await event_store.count_by_status() == expected


async def test_next_due_at_is_the_earliest_pending_due_time(event_store: EventStore) -> None:
    assert await event_store.next_due_at() is None
    now = utc_now()
    await insert_and_claim(event_store)
    soonest = now + timedelta(minutes=2)
    await insert_events(
        event_store,
        make_event(scheduled_at=now + timedelta(minutes=5)),
        make_event(scheduled_at=soonest),
        make_event(scheduled_at=now + timedelta(minutes=1), status=EventStatus.CANCELLED),
    )
    assert await event_store.next_due_at() == soonest


async def test_an_unknown_event_has_no_attempts(event_store: EventStore) -> None:
    assert await event_store.attempts(new_event_id(utc_now())) == []


async def test_answers_a_ping(event_store: EventStore) -> None:
    await event_store.ping()
