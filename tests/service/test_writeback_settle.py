"""What the outcome writer makes of the store's answer: which outcome of several for one event
applied, what is kept when a write is cut off midway, and whom it wakes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import structlog.testing

from tests.service.conftest import World, loop_time
from tests.service.test_writeback import HOOK, RefusingOneStore, claimed
from timefuse.domain.callback import callback_event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimRef, OutcomeUpdate, StoreRefused, StoreUnavailable
from timefuse.service.wakeup import DueSignal
from timefuse.service.writeback import OutcomeWriter
from timefuse.testing.factories import make_outcome

pytestmark = pytest.mark.looptime


class HeardSignal(DueSignal):
    """A due signal that remembers what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.after: list[float] = []
        self.at: list[datetime | None] = []

    def notify_after(self, seconds: float) -> None:
        self.after.append(seconds)
        super().notify_after(seconds)

    def notify(self, due_at: datetime | None = None) -> None:
        self.at.append(due_at)
        super().notify(due_at)


class ApplyingStore(RefusingOneStore):
    """Says every event in a write applied (as a store does for the latest claim's outcome)."""

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        self.batches.append(len(updates))
        return frozenset(u.event_id for u in updates)


async def test_of_several_outcomes_for_one_event_the_latest_claims_last_one_applies(
    world: World,
) -> None:
    (event,) = await claimed(world, 1)
    signal = HeardSignal()
    writer = OutcomeWriter(ApplyingStore(world, ""), signal, batch_size=100, monotonic=loop_time)
    retry = make_outcome(event, status=EventStatus.PENDING)
    for claim, delay in ((2, 3.0), (2, 5.0), (1, 1.0)):
        ref = ClaimRef(event.id, claim, retry.ref.worker)
        writer.add(replace(retry, ref=ref, retry_delay_seconds=delay))
    assert await writer.flush()
    assert writer.written == 1
    assert signal.after == [5.0]  # claim 2's later outcome, not the first nor claim 1's


async def test_a_written_callback_wakes_the_dispatcher_for_its_own_due_time(
    world: World,
) -> None:
    (event,) = await claimed(world, 1)
    signal = HeardSignal()
    writer = OutcomeWriter(ApplyingStore(world, ""), signal, batch_size=100, monotonic=loop_time)
    due = world.clock.now() + timedelta(seconds=30)
    notice = callback_event(
        replace(event, callback_url=HOOK),
        EventStatus.COMPLETED,
        now=due,
        attempts=1,
        retry_count=0,
        status_code=200,
        response_excerpt=None,
        error=None,
    )
    assert notice is not None
    writer.add(replace(make_outcome(event), callback=notice))
    assert await writer.flush()
    assert signal.at == [notice.next_attempt_at]


async def test_outcomes_kept_through_an_outage_past_one_batch_are_all_kept(
    world: World,
) -> None:
    events = await claimed(world, 3)
    writer = OutcomeWriter(world.store, DueSignal(world.clock), batch_size=1, monotonic=loop_time)
    for event in events:
        writer.add(make_outcome(event))
    world.memory.faults.down.add("record_outcomes")
    assert not await writer.flush()
    assert writer.pending == 3
    world.memory.faults.down.clear()
    assert await writer.flush()
    assert (writer.written, writer.pending) == (3, 0)
    assert {(await world.stored(e)).status for e in events} == {EventStatus.COMPLETED}


async def test_an_outage_midway_through_a_split_write_keeps_only_what_was_not_answered(
    world: World,
) -> None:
    written, cut_off = await claimed(world, 2)

    class RefusingThenDown(RefusingOneStore):
        async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
            self.batches.append(len(updates))
            if len(updates) > 1:
                raise StoreRefused("one of these")
            if updates[0].event_id == self.poisoned:
                raise StoreUnavailable("down")
            return await self.world.store.record_outcomes(updates)

    store = RefusingThenDown(world, poisoned=cut_off.id)
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    writer.add(make_outcome(written))
    writer.add(make_outcome(cut_off))
    assert not await writer.flush()
    assert (writer.written, writer.pending) == (1, 1)
    store.poisoned = ""
    assert await writer.flush()
    assert (writer.written, writer.pending) == (2, 0)
    assert store.batches[-1] == 1  # only the one left unanswered was written again


async def test_an_outcome_the_store_refuses_is_logged_with_the_stores_reason(
    world: World,
) -> None:
    (event,) = await claimed(world, 1)
    refusals = iter(["value too long"])

    class RefusingOnce(RefusingOneStore):
        async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
            reason = next(refusals, None)
            if reason is not None:
                raise StoreRefused(reason)
            return await self.world.store.record_outcomes(updates)

    writer = OutcomeWriter(
        RefusingOnce(world, ""), DueSignal(world.clock), batch_size=100, monotonic=loop_time
    )
    writer.add(make_outcome(event, status=EventStatus.FAILED))
    with structlog.testing.capture_logs() as logs:
        assert await writer.flush()
    refused = [e for e in logs if e["event"] == "an outcome was refused by the store"]
    assert [(e["event_id"], e["error"]) for e in refused] == [(event.id, "value too long")]
    assert (writer.written, writer.dropped) == (1, 0)
