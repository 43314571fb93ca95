"""Changing a PENDING event in place, with a dispatcher running."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from tests.service.conftest import Receivers, World, loop_time, registry_of
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import FieldError, ValidationFailed
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.store import ClaimRef, ClaimRequest
from timefuse.service.events import AmendAnswer, Amended, EventService
from timefuse.service.wakeup import DueSignal
from timefuse.testing.factories import make_outcome

pytestmark = pytest.mark.looptime

HOUR = 3600.0


def service_of(
    world: World, wakeup: object = None, registry: DeliveryRegistry | None = None
) -> EventService:
    return world.events(registry=registry or world.registry, wakeup=wakeup)


async def test_a_patch_moving_a_pending_event_an_hour_earlier_delivers_it_then(
    world: World,
) -> None:
    # No backstop poll within the run: the patch's wake-up alone makes it look in time.
    dispatcher = world.dispatcher(poll_interval_seconds=4 * HOUR)
    service = service_of(world, dispatcher.wakeup)
    (event,) = await world.submit(world.event(after=2 * HOUR))
    started = loop_time()
    patched_at = world.clock.now()
    earlier = (event.scheduled_at - timedelta(hours=1)).isoformat()

    outcome = await service.amend(event.id, {"scheduled_at": earlier}, if_version=1)
    assert outcome.answer is AmendAnswer.AMENDED
    await world.run(3 * HOUR, dispatcher, until=lambda: bool(world.receivers.requests), every=60)

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


async def test_an_event_of_a_source_the_caller_may_not_act_for_is_not_found_nor_changed(
    world: World,
) -> None:
    service = service_of(world)
    (event,) = await world.submit(world.event(after=HOUR, source="billing"))

    elsewhere = await service.amend(event.id, {"max_retries": 5}, sources={"shipping"})
    unknown = await service.amend("0190f0f0-0000-7000-8000-000000000001", {"max_retries": 5})
    own = await service.amend(event.id, {"max_retries": 5}, sources={"billing"})

    assert elsewhere == Amended(AmendAnswer.NOT_FOUND, None)
    assert unknown == Amended(AmendAnswer.NOT_FOUND, None)
    assert own.answer is AmendAnswer.AMENDED
    assert (await world.stored(event)).max_retries == 5


async def test_a_destination_the_delivery_type_refuses_is_named_with_its_reason(
    world: World,
) -> None:
    def internal_refused(destination: str) -> str | None:
        return "must not be an internal address" if ".internal" in destination else None

    checked = dataclasses.replace(
        Receivers().delivery_type(), validate_destination=internal_refused
    )
    service = service_of(world, registry=registry_of(checked))
    (event,) = await world.submit(world.event(after=HOUR))

    with pytest.raises(ValidationFailed) as raised:
        await service.amend(event.id, {"destination": "https://db.internal/hook"})

    assert raised.value.errors == [FieldError("destination", "must not be an internal address")]
    assert (await world.stored(event)).version == 1


async def test_a_change_that_does_not_bring_the_event_due_sooner_wakes_no_dispatcher(
    world: World,
) -> None:
    signal = DueSignal()
    service = service_of(world, signal)
    (event,) = await world.submit(world.event(after=HOUR))
    signal.plan(event.next_attempt_at)  # the dispatcher sleeps until the event is due

    later = (event.scheduled_at + timedelta(hours=1)).isoformat()
    assert (await service.amend(event.id, {"max_retries": 5})).answer is AmendAnswer.AMENDED
    assert (await service.amend(event.id, {"scheduled_at": later})).answer is AmendAnswer.AMENDED
    woken_by_later = await signal.wait(1.0)
    signal.plan(event.next_attempt_at + timedelta(hours=1))
    sooner = (event.scheduled_at + timedelta(minutes=30)).isoformat()
    assert (await service.amend(event.id, {"scheduled_at": sooner})).answer is AmendAnswer.AMENDED

    assert woken_by_later is False
    assert await signal.wait(1.0) is True


async def test_a_new_time_taken_by_a_twin_of_the_event_is_a_duplicate_leaving_it_as_it_was(
    world: World,
) -> None:
    service = service_of(world)
    first, second = await world.submit(
        world.event(after=HOUR, external_job_id="orders/1"),
        world.event(after=2 * HOUR, external_job_id="orders/1"),
    )

    outcome = await service.amend(second.id, {"scheduled_at": first.scheduled_at.isoformat()})

    assert outcome == Amended(AmendAnswer.DUPLICATE, await world.stored(second))
    assert outcome.event is not None
    assert (outcome.event.version, outcome.event.scheduled_at) == (1, second.scheduled_at)


Contender = Callable[[int], Awaitable[None]]


async def amend_contended(
    world: World, service: EventService, event: Event, contend: Contender
) -> Amended:
    """``service.amend`` while another writer changes the event between each read and write
    of the change: ``contend(n)`` runs while try ``n`` waits to write."""
    gate = asyncio.Event()
    world.memory.faults.stall["amend"] = gate
    patching = asyncio.create_task(service.amend(event.id, {"max_retries": 7}, if_version=1))
    for attempt in range(3):
        while world.memory.faults.calls.get("amend", 0) <= attempt:
            await asyncio.sleep(0)
        await contend(attempt)
        gate.set()
        gate = asyncio.Event()
        world.memory.faults.stall["amend"] = gate
    outcome = await patching
    del world.memory.faults.stall["amend"]
    assert world.memory.faults.calls["amend"] == 3  # every try found the event changed
    return outcome


async def claimed(world: World) -> Event:
    batch = await world.store.claim(ClaimRequest("worker-1", 1, 60.0))
    assert batch is not None
    (event,) = batch.events
    return event


async def test_a_change_losing_every_try_to_attempts_is_a_version_mismatch_with_the_event(
    world: World,
) -> None:
    service = service_of(world)
    (event,) = await world.submit(world.event())

    async def attempt_and_hand_back(_: int) -> None:
        assert await world.store.hand_back([ClaimRef.of(await claimed(world))]) == 1

    outcome = await amend_contended(world, service, event, attempt_and_hand_back)

    stored = await world.stored(event)
    assert outcome == Amended(AmendAnswer.VERSION_MISMATCH, stored)
    assert (stored.status, stored.max_retries, stored.claim_count) == (EventStatus.PENDING, 3, 3)


async def test_a_change_losing_its_last_try_to_a_delivery_is_not_pending(world: World) -> None:
    service = service_of(world)
    (event,) = await world.submit(world.event())

    async def attempt(n: int) -> None:
        ref = ClaimRef.of(await claimed(world))
        if n < 2:
            assert await world.store.hand_back([ref]) == 1

    outcome = await amend_contended(world, service, event, attempt)

    stored = await world.stored(event)
    assert outcome == Amended(AmendAnswer.NOT_PENDING, stored)
    assert stored.status is EventStatus.PROCESSING


async def test_a_change_losing_its_last_try_to_a_delivery_and_a_purge_is_not_found(
    world: World,
) -> None:
    service = service_of(world)
    (event,) = await world.submit(world.event())

    async def attempt(n: int) -> None:
        taken = await claimed(world)
        if n < 2:
            assert await world.store.hand_back([ClaimRef.of(taken)]) == 1
            return
        assert await world.store.record_outcomes([make_outcome(taken)]) == {event.id}
        cutoff = world.clock.now() + timedelta(days=1)
        assert await world.store.delete_terminal_before(cutoff) == 1

    outcome = await amend_contended(world, service, event, attempt)

    assert outcome == Amended(AmendAnswer.NOT_FOUND, None)
