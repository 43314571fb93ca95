"""Changing a PENDING event in place, with a dispatcher running."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.service.conftest import World, loop_time
from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.domain.status import EventStatus
from timefuse.service.events import AmendAnswer, EventService

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
