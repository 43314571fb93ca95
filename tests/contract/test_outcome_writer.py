"""The dispatcher's write-back buffer against a real store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventStore
from timefuse.service.wakeup import DueSignal
from timefuse.service.writeback import OutcomeWriter
from timefuse.testing import make_event
from timefuse.testing.factories import make_outcome


async def test_deferrals_added_while_a_flush_is_writing_are_not_lost(
    event_store: EventStore,
) -> None:
    now = datetime.now(UTC)
    first, second = make_event(scheduled_at=now), make_event(scheduled_at=now)
    await event_store.insert_many([first, second])
    claimed = await event_store.claim_due("w1", 10, 60)
    assert len(claimed) == 2
    written = asyncio.Event()
    resume = asyncio.Event()

    class SlowToAnswer:
        """The real store, answering only when the test says: a window for a race."""

        def __getattr__(self, name: str) -> object:
            return getattr(event_store, name)

        async def reschedule(self, worker_id: str, ids: list[str], due_at: datetime) -> int:
            count = await event_store.reschedule(worker_id, list(ids), due_at)
            written.set()
            await resume.wait()
            return count

    writer = OutcomeWriter(SlowToAnswer(), "w1", DueSignal(), batch_size=100)  # type: ignore[arg-type]
    due = now + timedelta(seconds=30)
    writer.defer(first.id, due)
    flushing = asyncio.create_task(writer.flush())
    await written.wait()  # the first deferral is stored; the flush has not returned yet
    writer.defer(second.id, due)
    resume.set()
    assert await flushing
    assert await writer.flush()
    for event_id in (first.id, second.id):
        stored = await event_store.get(event_id)
        assert stored is not None
        assert stored.status is EventStatus.PENDING
        assert stored.attempts == 0
        assert stored.next_attempt_at >= due


async def test_a_write_cancelled_midway_keeps_its_outcomes_for_the_next_flush(
    event_store: EventStore,
) -> None:
    now = datetime.now(UTC)
    event = make_event(scheduled_at=now)
    await event_store.insert_many([event])
    [claimed] = await event_store.claim_due("w1", 10, 60)
    started = asyncio.Event()

    class Stalling:
        def __getattr__(self, name: str) -> object:
            return getattr(event_store, name)

        async def record_outcomes(self, worker_id: str, updates: list[object]) -> int:
            started.set()
            await asyncio.sleep(3600)
            return 0

    writer = OutcomeWriter(Stalling(), "w1", DueSignal(), batch_size=100)  # type: ignore[arg-type]
    writer.add(make_outcome(claimed, "w1"))
    flushing = asyncio.create_task(writer.flush())
    await started.wait()
    flushing.cancel()
    await asyncio.gather(flushing, return_exceptions=True)
    assert writer.pending == 1
    real = OutcomeWriter(event_store, "w1", DueSignal(), batch_size=100)
    real.add(make_outcome(claimed, "w1"))
    assert await real.flush()
    stored = await event_store.get(event.id)
    assert stored is not None
    assert stored.status is EventStatus.COMPLETED
