"""The store contract: an outcome's completion callback is written with it, or not at all.

The writer hands each outcome its notice (``OutcomeUpdate.callback``, built by
:func:`timefuse.domain.callback.callback_event`); the store inserts it in the outcome's own
transaction exactly when the outcome applies, so no crash can come between the two, and an
outcome written again (its first answer lost) stores no second notice.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from timefuse.domain.callback import callback_event
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import OutcomeUpdate
from timefuse.service.store import Store
from timefuse.testing.factories import make_outcome
from timefuse.testing.store_contract_support import (
    claim,
    insert_and_claim,
    insert_events,
    stored_event,
    utc_now,
)

DONE_HOOK = "https://client.example/done"
FAILED_HOOK = "https://client.example/failed"


def reported(
    event: Event, status: EventStatus = EventStatus.COMPLETED, worker: str | None = None
) -> OutcomeUpdate:
    """The outcome of ``event``'s attempt (quoting ``worker``), carrying its notice."""
    update = make_outcome(event, worker, status)
    notice = callback_event(
        event,
        status,
        now=utc_now(),
        attempts=event.attempts,
        retry_count=update.retry_count,
        status_code=update.attempt.status_code,
        response_excerpt="ok",
        error=update.last_error,
    )
    assert notice is not None
    return replace(update, callback=notice)


async def notices_of(store: Store, parent: Event) -> list[Event]:
    return await store.find_by_external_id(f"callback/{parent.id}", limit=10)


async def stored_count(store: Store) -> int:
    return sum((await store.count_by_status()).values())


class OutcomeCallbacksContract:
    async def test_an_outcome_stores_its_callback_exactly_when_it_applies(
        self, store: Store
    ) -> None:
        held = await insert_and_claim(
            store,
            "worker-a",
            source="billing",
            callback_url=DONE_HOOK,
            failure_callback_url=FAILED_HOOK,
        )
        theirs = await insert_and_claim(store, "worker-b", failure_callback_url=FAILED_HOOK)
        plain = await insert_and_claim(store, "worker-a")
        done = reported(held)
        fenced = reported(theirs, EventStatus.FAILED, worker="worker-a")
        batch = [done, fenced, make_outcome(plain)]

        assert await store.record_outcomes(batch) == {held.id, plain.id}

        (notice,) = await notices_of(store, held)
        assert done.callback is not None
        assert notice.id == done.callback.id
        assert (notice.destination, notice.delivery_type, notice.parent_id) == (
            DONE_HOOK,
            "http",
            held.id,
        )
        assert (notice.source, notice.status, notice.attempts) == (
            "billing",
            EventStatus.PENDING,
            0,
        )
        body = json.loads(notice.payload)
        assert (body["type"], body["event_id"], body["status"]) == (
            "event.completed",
            held.id,
            "COMPLETED",
        )
        # Fenced out: the event stays the other worker's, and nothing reports on it.
        assert (await stored_event(store, theirs)).status is EventStatus.PROCESSING
        assert await notices_of(store, theirs) == []
        assert await stored_count(store) == 4

        # The same outcomes written again (their answer lost, say): none applies, nothing is
        # added, the notice stored stays as it was.
        assert await store.record_outcomes(batch) == frozenset()
        assert await notices_of(store, held) == [notice]
        assert await stored_count(store) == 4
        # The notice is an ordinary due event: a dispatcher claims it.
        assert [event.id for event in await claim(store, "worker-c")] == [notice.id]

    async def test_a_callback_already_stored_stays_and_its_outcome_still_applies(
        self, store: Store
    ) -> None:
        parent = await insert_and_claim(store, "worker-a", failure_callback_url=FAILED_HOOK)
        update = reported(parent, EventStatus.DEAD_LETTER)
        assert update.callback is not None
        earlier = replace(update.callback, payload=b'{"written":"earlier"}')
        await insert_events(store, earlier)

        assert await store.record_outcomes([update]) == {parent.id}

        assert (await stored_event(store, parent)).status is EventStatus.DEAD_LETTER
        (notice,) = await notices_of(store, parent)
        assert (notice.id, notice.payload) == (earlier.id, earlier.payload)
        assert await stored_count(store) == 2

    async def test_a_callback_the_rules_refuse_writes_nothing(self, store: Store) -> None:
        parent = await insert_and_claim(
            store, "worker-a", callback_url=DONE_HOOK, failure_callback_url=FAILED_HOOK
        )
        other = await insert_and_claim(store, "worker-a", callback_url=DONE_HOOK)
        failed = reported(parent, EventStatus.FAILED)
        # A retry ends nothing, so it reports nothing.
        retry = replace(make_outcome(parent, status=EventStatus.PENDING), callback=failed.callback)
        # A notice names the event of its outcome as its parent.
        misfiled = replace(make_outcome(parent), callback=reported(other).callback)

        for refused, reason in ((retry, "an event's end"), (misfiled, "as its parent")):
            with pytest.raises(ValueError, match=reason):
                await store.record_outcomes([refused])

        assert (await stored_event(store, parent)).status is EventStatus.PROCESSING
        assert await store.attempts(parent.id) == []
        assert await stored_count(store) == 2
