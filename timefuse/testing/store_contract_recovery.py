"""The store contract: lease recovery of dead workers' claims, and its failure notices.

A worker is judged dead from its heartbeats, and the judgement is the store's own, made in
the recovery's transaction: a worker heard of again between the caller's listing and the
recovery (it came back, and may have claimed again) keeps its claims.

A dispatcher that dies during an event's last allowed attempt never reports an outcome, so
the writer never makes the event's failure callback; lease recovery, which dead-letters the
event, inserts the notice in the same transaction instead (see
:func:`timefuse.domain.callback.lease_expiry_callback`).
"""

from __future__ import annotations

import json

from timefuse.domain.event import Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.status import EventStatus
from timefuse.ports.store import WorkerBeat
from timefuse.service.store import Store
from timefuse.testing.factories import make_outcome
from timefuse.testing.store_contract_support import (
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    StoreTime,
    assert_near,
    claim,
    insert_and_claim,
    stored_event,
    utc_now,
)

DONE_HOOK = "https://client.example/done"
FAILED_HOOK = "https://client.example/failed"
# Silence that makes a worker dead in these cases: less than PAST_SHORT_LEASE.
SILENCE = 0.2


async def notices_of(store: Store, parent: Event) -> list[Event]:
    """The callbacks stored for ``parent``, newest first."""
    return await store.find_by_external_id(f"callback/{parent.id}", limit=10)


class RecoveryCallbacksContract:
    async def test_a_claim_dead_lettered_by_recovery_gets_its_failure_notice_once(
        self, store: Store, store_time: StoreTime
    ) -> None:
        lost = await insert_and_claim(
            store,
            "worker-a",
            SHORT_LEASE,
            max_retries=0,
            source="billing",
            callback_url=DONE_HOOK,
            failure_callback_url=FAILED_HOOK,
        )
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1
        # Recovered already: a second pass, and the dead worker's late outcome, add nothing.
        assert await store.recover_expired_leases() == 0
        late = make_outcome(lost, status=EventStatus.DEAD_LETTER)
        assert await store.record_outcomes([late]) == frozenset()

        assert (await stored_event(store, lost)).status is EventStatus.DEAD_LETTER
        (notice,) = await notices_of(store, lost)
        assert (notice.destination, notice.delivery_type, notice.parent_id) == (
            FAILED_HOOK,
            "http",
            lost.id,
        )
        assert (notice.source, notice.max_retries) == ("billing", 0)
        assert (notice.status, notice.attempts, notice.claim_count) == (EventStatus.PENDING, 0, 0)
        assert_near(notice.next_attempt_at, utc_now())
        body = json.loads(notice.payload)
        assert {key: body[key] for key in body if key != "at"} == {
            "type": "event.dead_lettered",
            "event_id": lost.id,
            "external_job_id": lost.external_job_id,
            "source": "billing",
            "status": "DEAD_LETTER",
            "attempts": 1,
            "retry_count": 1,
            "status_code": None,
            "response_excerpt": None,
            "error": LEASE_EXPIRED_ERROR,
        }
        # It is an ordinary due event: a dispatcher claims it.
        assert [event.id for event in await claim(store, "worker-b")] == [notice.id]

    async def test_a_dead_workers_last_attempt_is_reported_too(self, store: Store) -> None:
        lost = await insert_and_claim(
            store, "worker-dead", 600.0, max_retries=0, failure_callback_url=FAILED_HOOK
        )
        assert await store.recover_expired_leases(["worker-dead"]) == 1
        (notice,) = await notices_of(store, lost)
        assert notice.destination == FAILED_HOOK

    async def test_each_dead_lettering_round_is_reported_once(
        self, store: Store, store_time: StoreTime
    ) -> None:
        first = await insert_and_claim(
            store, "worker-a", SHORT_LEASE, max_retries=0, failure_callback_url=FAILED_HOOK
        )
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1
        # Redelivered, and lost again on its new round's last attempt (the first notice, due
        # too, is claimed and lost beside it: it has no failure URL, so it reports nothing).
        await store.redeliver(first.id, utc_now())
        claimed = await claim(store, "worker-a", lease=SHORT_LEASE)
        assert len(claimed) == 2
        again = next(event for event in claimed if event.id == first.id)
        assert again.claim_count == first.claim_count + 1
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 2

        notices = await notices_of(store, first)
        assert len({notice.id for notice in notices}) == 2
        assert [json.loads(n.payload)["status"] for n in notices] == ["DEAD_LETTER"] * 2
        assert sum((await store.count_by_status()).values()) == 3

    async def test_no_notice_for_a_retry_or_without_a_failure_url(
        self, store: Store, store_time: StoreTime
    ) -> None:
        success_only = await insert_and_claim(
            store, "worker-a", SHORT_LEASE, max_retries=0, callback_url=DONE_HOOK
        )
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1
        retried = await insert_and_claim(
            store, "worker-a", SHORT_LEASE, max_retries=3, failure_callback_url=FAILED_HOOK
        )
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1

        assert (await stored_event(store, success_only)).status is EventStatus.DEAD_LETTER
        assert (await stored_event(store, retried)).status is EventStatus.PENDING
        assert await notices_of(store, success_only) == []
        assert await notices_of(store, retried) == []
        assert sum((await store.count_by_status()).values()) == 2


async def beat(store: Store, worker: str) -> None:
    await store.heartbeat(WorkerBeat(worker, ("dispatch",), utc_now()))


class DeadWorkersContract:
    async def test_a_worker_heard_of_since_it_was_judged_dead_keeps_its_claims(
        self, store: Store, store_time: StoreTime
    ) -> None:
        await beat(store, "worker-back")
        await beat(store, "worker-gone")
        held = await insert_and_claim(store, "worker-back", 600.0)
        lost = await insert_and_claim(store, "worker-gone", 600.0)
        await store_time.advance(PAST_SHORT_LEASE)
        # Both were listed as silent for longer than SILENCE. Before the recovery runs, one
        # heartbeats again and claims a new event.
        await beat(store, "worker-back")
        fresh = await insert_and_claim(store, "worker-back", 600.0)
        dead = ["worker-back", "worker-gone"]
        assert await store.recover_expired_leases(dead, silent_seconds=SILENCE) == 1

        for mine in (held, fresh):
            stored = await stored_event(store, mine)
            assert (stored.status, stored.locked_by, stored.claim_count, stored.retry_count) == (
                EventStatus.PROCESSING,
                "worker-back",
                mine.claim_count,
                0,
            )
            assert await store.attempts(mine.id) == []
        gone = await stored_event(store, lost)
        assert (gone.status, gone.locked_by, gone.retry_count) == (EventStatus.PENDING, None, 1)
        (record,) = await store.attempts(lost.id)
        assert (record.error, record.worker) == (LEASE_EXPIRED_ERROR, "worker-gone")
        # The worker that came back still owns its claims: its outcomes are taken.
        done = [make_outcome(held), make_outcome(fresh)]
        assert await store.record_outcomes(done) == frozenset({held.id, fresh.id})

    async def test_a_silent_worker_judged_again_later_loses_its_claims(
        self, store: Store, store_time: StoreTime
    ) -> None:
        await beat(store, "worker-a")
        held = await insert_and_claim(store, "worker-a", 600.0)
        assert await store.recover_expired_leases(["worker-a"], silent_seconds=SILENCE) == 0
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases(["worker-a"], silent_seconds=SILENCE) == 1
        assert (await stored_event(store, held)).status is EventStatus.PENDING

    async def test_a_worker_never_heard_of_is_left_to_its_leases(
        self, store: Store, store_time: StoreTime
    ) -> None:
        unheard = await insert_and_claim(store, "worker-unheard", 600.0)
        expiring = await insert_and_claim(store, "worker-unheard", SHORT_LEASE)
        await store_time.advance(PAST_SHORT_LEASE)
        recovered = await store.recover_expired_leases(["worker-unheard"], silent_seconds=SILENCE)
        assert recovered == 1
        assert (await stored_event(store, unheard)).status is EventStatus.PROCESSING
        assert (await stored_event(store, expiring)).status is EventStatus.PENDING

    async def test_without_a_silence_every_claim_of_the_workers_named_is_recovered(
        self, store: Store
    ) -> None:
        # A restarted process under the same worker id (its heartbeat is fresh: it is the
        # new process's) takes its predecessor's claims back.
        await beat(store, "worker-restarted")
        held = await insert_and_claim(store, "worker-restarted", 600.0)
        assert await store.recover_expired_leases(["worker-restarted"]) == 1
        assert (await stored_event(store, held)).status is EventStatus.PENDING
