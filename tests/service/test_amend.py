"""Changing a PENDING event in place, with a dispatcher running."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.service.conftest import World, loop_time
from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimRequest
from timefuse.service.events import AmendAnswer, EventService
from timefuse.testing.factories import make_outcome

pytestmark = pytest.mark.looptime

HOUR = 3600.0


def service_of(world: World, wakeup: object = None) -> EventService:
    return EventService(
        buffer=InlineIngestBuffer(world.store.adapter),
        store=world.store,
        registry=world.registry,
        clock=world.clock,
        metrics=world.metrics,
        wakeup=wakeup,  # type: ignore[arg-type]
    )


async def test_a_patch_moving_a_pending_event_an_hour_earlier_delivers_it_then(
    world: World,
) -> None:
    dispatcher = world.dispatcher()
    service = service_of(world, dispatcher.wakeup)
    (event,) = await world.submit(world.event(after=2 * HOUR))
    started = loop_time()
    patched_at = world.clock.now()
    earlier = (event.scheduled_at - timedelta(hours=1)).isoformat()

    outcome = await service.amend(event.id, {"scheduled_at": earlier}, if_version=1)
    assert outcome.answer is AmendAnswer.AMENDED
    await world.run(3 * HOUR, dispatcher, until=lambda: bool(world.receivers.requests))

    [delivered_at] = world.receivers.times(event.id)
    assert delivered_at - started == pytest.approx(HOUR, abs=2.0)
    stored = await world.stored(event)
    assert (stored.status, stored.version) == (EventStatus.COMPLETED, 2)
    assert stored.extra["changes"] == [
        {"version": 2, "at": patched_at.isoformat(), "fields": ["scheduled_at"]}
    ]


async def test_a_delivered_event_is_not_changed_and_a_stale_version_is_refused(
    world: World,
) -> None:
    service = service_of(world)
    done, waiting = await world.submit(world.event(), world.event(after=HOUR))
    await world.run(5.0, world.dispatcher(), until=lambda: bool(world.receivers.requests))
    assert await service.amend(waiting.id, {"max_retries": 5}) is not None

    finished = await service.amend(done.id, {"max_retries": 5})
    stale = await service.amend(waiting.id, {"max_retries": 6}, if_version=1)

    assert finished.answer is AmendAnswer.NOT_PENDING
    assert finished.event is not None
    assert finished.event.status is EventStatus.COMPLETED
    assert stale.answer is AmendAnswer.VERSION_MISMATCH
    assert (await world.stored(waiting)).max_retries == 5


async def test_a_retrying_event_keeps_its_backoff_when_only_its_payload_changes(
    world: World,
) -> None:
    service = service_of(world)
    (event,) = await world.submit(world.event(after=HOUR))
    due = (await world.stored(event)).next_attempt_at

    outcome = await service.amend(event.id, {"payload": b'{"v":2}'})

    assert outcome.answer is AmendAnswer.AMENDED
    stored = await world.stored(event)
    assert (stored.payload, stored.next_attempt_at) == (b'{"v":2}', due)


async def test_a_patch_racing_a_retry_applies_to_the_retrying_event_keeping_its_backoff(
    world: World,
) -> None:
    service = service_of(world)
    (event,) = await world.submit(world.event())
    stalled = asyncio.Event()
    world.memory.faults.stall["amend"] = stalled
    patching = asyncio.create_task(service.amend(event.id, {"max_retries": 7}, if_version=1))
    while not world.memory.faults.calls.get("amend"):
        await asyncio.sleep(0)  # the change is computed from the event as read, not yet written
    # Meanwhile a dispatcher claims the event and its attempt fails: a retry, backed off.
    batch = await world.store.claim(ClaimRequest("worker-1", 1, 60.0))
    assert batch is not None
    (claimed,) = batch.events
    retry = make_outcome(claimed, status=EventStatus.PENDING, retry_delay_seconds=30.0)
    assert await world.store.record_outcomes([retry]) == {event.id}
    retrying = await world.stored(event)
    del world.memory.faults.stall["amend"]
    stalled.set()

    outcome = await patching

    # An attempt is no new version: the client's if_version still holds, and the change is
    # made afresh on the event as the retry left it.
    assert outcome.answer is AmendAnswer.AMENDED
    stored = await world.stored(event)
    assert (stored.max_retries, stored.version) == (7, 2)
    assert stored.next_attempt_at == retrying.next_attempt_at
    assert (stored.retry_count, stored.last_error) == (1, retry.last_error)
    assert world.memory.faults.calls["amend"] == 2
