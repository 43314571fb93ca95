"""The store contract, part two: claims, outcomes, hand-backs, leases, and their fencing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus, IllegalTransition
from timefuse.ports.store import ClaimRef, ClaimRequest, DueFilter
from timefuse.service.gate import source_breaker_key
from timefuse.service.store import Store
from timefuse.testing.factories import RETRY_DELAY_SECONDS, make_event, make_outcome
from timefuse.testing.store_contract_support import (
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    StoreTime,
    assert_near,
    claim,
    expire_lease_of_one,
    insert_and_claim,
    insert_events,
    recorded_attempts,
    stored_event,
    utc_now,
)


class ClaimsContract:
    # -- claim -------------------------------------------------------------------------------

    async def test_claims_only_due_pending_events_earliest_first(self, store: Store) -> None:
        now = utc_now()
        late = make_event(scheduled_at=now - timedelta(seconds=1))
        early = make_event(scheduled_at=now - timedelta(seconds=10))
        future = make_event(scheduled_at=now + timedelta(hours=1))
        await insert_events(store, late, future, early)
        assert [event.id for event in await claim(store)] == [early.id, late.id]

    async def test_claim_honours_the_limit(self, store: Store) -> None:
        now = utc_now()
        events = [make_event(scheduled_at=now - timedelta(seconds=s)) for s in (5, 4, 3, 2, 1)]
        await insert_events(store, *events)
        first = await claim(store, limit=2)
        assert [event.id for event in first] == [events[0].id, events[1].id]
        rest = await claim(store)
        assert [event.id for event in rest] == [event.id for event in events[2:]]

    async def test_claim_sets_the_lease_counts_the_attempt_and_the_claim(
        self, store: Store
    ) -> None:
        claimed = await insert_and_claim(store, "worker-a", 30.0)
        assert claimed.status is EventStatus.PROCESSING
        assert (claimed.locked_by, claimed.attempts, claimed.claim_count) == ("worker-a", 1, 1)
        assert_near(claimed.lock_expires_at, utc_now() + timedelta(seconds=30))
        assert await stored_event(store, claimed) == claimed

    async def test_a_claim_tells_the_stores_time(self, store: Store) -> None:
        await insert_events(store, make_event())
        batch = await store.claim(ClaimRequest("worker-a", 10, 30.0))
        assert batch is not None
        assert_near(batch.store_now, utc_now())
        (event,) = batch.events
        assert event.lock_expires_at == batch.store_now + timedelta(seconds=30)

    async def test_a_leased_event_is_not_claimed_again(self, store: Store) -> None:
        await insert_and_claim(store, "worker-a")
        assert await claim(store, "worker-b") == []

    async def test_claims_each_due_event_once_across_concurrent_claimers(
        self, store: Store
    ) -> None:
        now = utc_now()
        events = [make_event(scheduled_at=now - timedelta(milliseconds=i)) for i in range(60)]
        await insert_events(store, *events)
        workers = [f"worker-{i}" for i in range(6)]
        batches = await asyncio.gather(*(claim(store, w, 15) for w in workers))
        claimed = [(e, w) for w, batch in zip(workers, batches, strict=True) for e in batch]
        assert sorted(event.id for event, _ in claimed) == sorted(event.id for event in events)
        for event, worker in claimed:
            assert (await stored_event(store, event)).locked_by == worker

    async def test_claims_only_the_delivery_types_asked_for(self, store: Store) -> None:
        known = make_event(delivery_type="http")
        unknown = make_event(delivery_type="smoke-signal", destination="hill")
        await insert_events(store, known, unknown)
        only_http = DueFilter(delivery_types=frozenset({"http"}))
        assert [e.id for e in await claim(store, due=only_http)] == [known.id]
        assert (await stored_event(store, unknown)).status is EventStatus.PENDING
        assert (await stored_event(store, unknown)).attempts == 0
        assert await claim(store, due=DueFilter(delivery_types=frozenset())) == []

    async def test_claims_nothing_of_the_destinations_left_out(self, store: Store) -> None:
        now = utc_now()
        blocked = [
            make_event(destination="https://down.example/", scheduled_at=now - timedelta(seconds=9))
            for _ in range(3)
        ]
        healthy = make_event(destination="https://up.example/", scheduled_at=now)
        await insert_events(store, *blocked, healthy)
        due = DueFilter(excluded_destinations=frozenset({"down.example:443"}))
        assert [e.id for e in await claim(store, limit=1, due=due)] == [healthy.id]
        assert (await store.next_due(due)).at is None
        assert (await store.next_due(DueFilter())).at == blocked[0].next_attempt_at

    async def test_claims_nothing_of_a_source_left_out_at_a_destination(self, store: Store) -> None:
        # "<destination key>\x1f<source>": that source's events there, held by its own breaker.
        now = utc_now()
        url = "https://shared.example/hook"
        held = [
            make_event(destination=url, source="tenant-a", scheduled_at=now - timedelta(seconds=9))
            for _ in range(3)
        ]
        other = make_event(
            destination=url, source="tenant-b", scheduled_at=now - timedelta(seconds=5)
        )
        elsewhere = make_event(
            destination="https://up.example/", source="tenant-a", scheduled_at=now
        )
        await insert_events(store, *held, other, elsewhere)
        due = DueFilter(
            excluded_destinations=frozenset({source_breaker_key("shared.example:443", "tenant-a")})
        )
        assert (await store.next_due(due)).at == other.next_attempt_at
        assert sorted(e.id for e in await claim(store, due=due)) == sorted([other.id, elsewhere.id])
        assert {(await stored_event(store, e)).status for e in held} == {EventStatus.PENDING}

    async def test_claims_at_most_a_destinations_budget(self, store: Store) -> None:
        now = utc_now()
        slow = [
            make_event(
                destination="https://slow.example/", scheduled_at=now - timedelta(seconds=9 - i)
            )
            for i in range(5)
        ]
        fast = [
            make_event(
                destination="https://fast.example/", scheduled_at=now - timedelta(seconds=4 - i)
            )
            for i in range(3)
        ]
        other = make_event(destination="https://other.example/", scheduled_at=now)
        await insert_events(store, *slow, *fast, other)
        claimed = await claim(
            store,
            limit=10,
            budgets={"slow.example:443": 2, "fast.example:443": 3},
            default_budget=0,
        )
        assert [e.id for e in claimed] == [e.id for e in (*slow[:2], *fast)]
        rest = await claim(store, limit=10, default_budget=1)
        assert [e.id for e in rest] == [slow[2].id, other.id]

    # -- outcomes ----------------------------------------------------------------------------

    async def test_a_success_completes_the_event_and_keeps_the_attempt(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        outcome = make_outcome(claimed, status=EventStatus.COMPLETED)
        assert await store.record_outcomes([outcome]) == {claimed.id}
        stored = await stored_event(store, claimed)
        assert stored.status is EventStatus.COMPLETED
        assert (stored.locked_by, stored.lock_expires_at) == (None, None)
        assert stored.executed_at == outcome.executed_at
        assert await recorded_attempts(store, claimed.id) == [outcome.attempt]

    async def test_a_retry_is_due_its_delay_after_the_stores_now(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        outcome = make_outcome(claimed, status=EventStatus.PENDING)
        assert await store.record_outcomes([outcome]) == {claimed.id}
        stored = await stored_event(store, claimed)
        assert (stored.status, stored.retry_count, stored.last_error) == (
            EventStatus.PENDING,
            1,
            outcome.last_error,
        )
        assert_near(stored.next_attempt_at, utc_now() + timedelta(seconds=RETRY_DELAY_SECONDS))
        assert (await store.next_due(DueFilter())).at == stored.next_attempt_at
        assert await claim(store) == []

    async def test_an_outcome_from_another_worker_does_not_apply(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        outcome = make_outcome(claimed, "worker-b")
        assert await store.record_outcomes([outcome]) == frozenset()
        assert await stored_event(store, claimed) == claimed
        assert await store.attempts(claimed.id) == []

    async def test_applies_only_the_outcomes_under_their_claims(self, store: Store) -> None:
        await insert_events(store, make_event(), make_event())
        mine = await claim(store, "worker-a")
        theirs = await insert_and_claim(store, "worker-b")
        updates = [make_outcome(event, "worker-a") for event in [*mine, theirs]]
        assert await store.record_outcomes(updates) == {event.id for event in mine}
        assert (await stored_event(store, theirs)).status is EventStatus.PROCESSING
        assert await store.attempts(theirs.id) == []
        for event in mine:
            assert len(await store.attempts(event.id)) == 1

    async def test_a_fenced_out_outcomes_event_is_not_among_those_that_applied(
        self, store: Store, store_time: StoreTime
    ) -> None:
        lost = await insert_and_claim(store, "worker-a", SHORT_LEASE)
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1
        (retaken,) = await claim(store, "worker-b")
        held = await insert_and_claim(store, "worker-a")
        late = make_outcome(lost, status=EventStatus.DEAD_LETTER)

        applied = await store.record_outcomes([late, make_outcome(held)])

        assert applied == {held.id}
        assert await stored_event(store, lost) == retaken
        assert (await stored_event(store, held)).status is EventStatus.COMPLETED

    async def test_the_rules_refuse_an_outcome_the_status_machine_forbids(
        self, store: Store
    ) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        for status in (EventStatus.PROCESSING, EventStatus.CANCELLED):
            with pytest.raises(IllegalTransition):
                await store.record_outcomes([make_outcome(claimed, status=status)])
        with pytest.raises(ValueError, match="retry"):
            await store.record_outcomes(
                [make_outcome(claimed, status=EventStatus.COMPLETED, retry_delay_seconds=5.0)]
            )
        assert await stored_event(store, claimed) == claimed

    async def test_storable_text_is_kept_whatever_a_delivery_type_reports(
        self, store: Store
    ) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        poison = "refused\x00 by \ud800 the receiver"
        outcome = make_outcome(claimed, status=EventStatus.PENDING, last_error=poison)
        outcome = replace(outcome, attempt=replace(outcome.attempt, error=poison))
        assert await store.record_outcomes([outcome]) == {claimed.id}
        stored = await stored_event(store, claimed)
        assert stored.last_error == "refused\ufffd by \ufffd the receiver"
        (record,) = await store.attempts(claimed.id)
        assert record.error == stored.last_error

    # -- the claim token ---------------------------------------------------------------------

    async def test_a_stale_claims_outcome_hand_back_and_extension_never_touch_a_newer_claim(
        self, store: Store, store_time: StoreTime
    ) -> None:
        stale = await insert_and_claim(store, "worker-a", SHORT_LEASE, max_retries=5)
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1
        for worker in ("worker-b", "worker-a"):  # another worker, then the same one again
            (newer,) = await claim(store, worker)
            assert newer.claim_count == stale.claim_count + (1 if worker == "worker-b" else 2)
            ref = ClaimRef.of(stale)
            assert await store.record_outcomes([make_outcome(stale)]) == frozenset()
            assert await store.hand_back([ref], 0.0) == 0
            assert await store.extend_leases([ref], 300.0) == 0
            assert await stored_event(store, stale) == newer
            assert await store.hand_back([ClaimRef.of(newer)], 0.0) == 1
        history = await store.attempts(stale.id)
        assert [record.error for record in history] == [LEASE_EXPIRED_ERROR]

    async def test_a_redelivered_events_old_claim_does_not_pass_for_the_new_round(
        self, store: Store, store_time: StoreTime
    ) -> None:
        hung = await insert_and_claim(store, "worker-a", SHORT_LEASE, max_retries=0)
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1
        assert (await stored_event(store, hung)).status is EventStatus.DEAD_LETTER
        await store.redeliver(hung.id, utc_now())
        (again,) = await claim(store, "worker-a")
        assert again.attempts == hung.attempts == 1  # the round restarts; the token doesn't
        assert await store.record_outcomes([make_outcome(hung)]) == frozenset()
        assert await store.record_outcomes([make_outcome(again)]) == {again.id}

    async def test_of_two_outcomes_for_one_event_the_latest_claims_applies(
        self, store: Store, store_time: StoreTime
    ) -> None:
        first = await insert_and_claim(store, "worker-a", SHORT_LEASE)
        await store_time.advance(PAST_SHORT_LEASE)
        await store.recover_expired_leases()
        (second,) = await claim(store, "worker-a")
        late, current = make_outcome(first), make_outcome(second)
        assert await store.record_outcomes([current, late]) == {second.id}
        assert (await stored_event(store, second)).status is EventStatus.COMPLETED

    # -- hand-backs and leases ---------------------------------------------------------------

    async def test_a_hand_back_returns_the_event_due_after_its_delay_uncounted(
        self, store: Store
    ) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        assert await store.hand_back([ClaimRef.of(claimed)], 600.0) == 1
        stored = await stored_event(store, claimed)
        assert (stored.status, stored.attempts) == (EventStatus.PENDING, 0)
        assert (stored.locked_by, stored.lock_expires_at) == (None, None)
        assert (stored.retry_count, stored.last_error) == (claimed.retry_count, None)
        assert_near(stored.next_attempt_at, utc_now() + timedelta(minutes=10))
        assert await store.attempts(claimed.id) == []
        assert await claim(store, "worker-b") == []

    async def test_a_hand_back_without_delay_keeps_the_events_place_among_the_due(
        self, store: Store
    ) -> None:
        claimed = await insert_and_claim(store, scheduled_at=utc_now() - timedelta(minutes=1))
        later = await insert_events(
            store, make_event(scheduled_at=utc_now() - timedelta(seconds=1))
        )
        assert await store.hand_back([ClaimRef.of(claimed)]) == 1
        assert (await stored_event(store, claimed)).next_attempt_at == claimed.next_attempt_at
        taken = await claim(store, "worker-b")
        assert [event.id for event in taken] == [claimed.id, later[0].id]

    async def test_a_hand_back_by_another_worker_does_nothing(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a")
        other = ClaimRef(claimed.id, claimed.claim_count, "worker-b")
        (pending,) = await insert_events(
            store, make_event(scheduled_at=utc_now() + timedelta(hours=1))
        )
        assert await store.hand_back([other, ClaimRef(pending.id, 0, "worker-a")]) == 0
        assert await stored_event(store, claimed) == claimed
        assert await stored_event(store, pending) == pending

    async def test_an_extended_lease_is_not_recovered(
        self, store: Store, store_time: StoreTime
    ) -> None:
        claimed = await insert_and_claim(store, "worker-a", SHORT_LEASE)
        assert await store.extend_leases([ClaimRef.of(claimed)], 60.0) == 1
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 0
        stored = await stored_event(store, claimed)
        assert_near(stored.lock_expires_at, utc_now() + timedelta(seconds=60))
        assert await store.record_outcomes([make_outcome(claimed)]) == {claimed.id}

    # -- lease recovery ----------------------------------------------------------------------

    async def test_an_expired_lease_returns_the_event_with_a_failed_attempt(
        self, store: Store, store_time: StoreTime
    ) -> None:
        stored = await expire_lease_of_one(store, store_time, max_retries=3)
        assert (stored.status, stored.retry_count, stored.attempts) == (EventStatus.PENDING, 1, 1)
        assert stored.last_error == LEASE_EXPIRED_ERROR
        assert (stored.locked_by, stored.lock_expires_at) == (None, None)
        assert_near(stored.next_attempt_at, utc_now())
        assert len(await claim(store, "worker-b")) == 1

    async def test_an_expired_lease_keeps_the_events_place_among_the_due(
        self, store: Store, store_time: StoreTime
    ) -> None:
        stored = await expire_lease_of_one(
            store, store_time, scheduled_at=utc_now() - timedelta(minutes=5)
        )
        assert stored.status is EventStatus.PENDING
        assert stored.next_attempt_at == stored.scheduled_at

    async def test_an_expired_lease_on_the_last_attempt_dead_letters(
        self, store: Store, store_time: StoreTime
    ) -> None:
        stored = await expire_lease_of_one(store, store_time, max_retries=0)
        assert (stored.status, stored.retry_count) == (EventStatus.DEAD_LETTER, 1)
        assert await claim(store, "worker-b") == []
        assert (await store.next_due(DueFilter())).at is None

    @pytest.mark.parametrize("max_retries", [3, 0], ids=["retried", "dead-lettered"])
    async def test_an_expired_lease_leaves_an_attempt_record(
        self, store: Store, store_time: StoreTime, max_retries: int
    ) -> None:
        expired = await expire_lease_of_one(store, store_time, max_retries=max_retries)
        (record,) = await store.attempts(expired.id)
        assert (record.attempt, record.sequence, record.worker) == (1, 1, "worker-a")
        assert (record.outcome, record.status_code) == (OutcomeKind.RETRIABLE, None)
        assert record.error == LEASE_EXPIRED_ERROR
        # It started at the claim and lasted until the recovery, past the lease's end.
        assert record.duration_ms >= PAST_SHORT_LEASE * 1000 / 2

    async def test_a_live_lease_is_not_recovered(self, store: Store) -> None:
        claimed = await insert_and_claim(store, "worker-a", 60.0)
        assert await store.recover_expired_leases() == 0
        assert await stored_event(store, claimed) == claimed

    async def test_a_dead_workers_claims_are_recovered_at_once(self, store: Store) -> None:
        dead = await insert_and_claim(store, "worker-dead", 600.0)
        alive = await insert_and_claim(store, "worker-alive", 600.0)
        assert await store.recover_expired_leases(["worker-dead"]) == 1
        stored = await stored_event(store, dead)
        assert (stored.status, stored.retry_count, stored.locked_by) == (
            EventStatus.PENDING,
            1,
            None,
        )
        assert (await store.attempts(dead.id))[0].worker == "worker-dead"
        assert await stored_event(store, alive) == alive
