"""What clients and operators do to events already stored, through the event service on the
in-memory store: moving a PENDING event's due time, redelivering dead letters in bulk,
looking events up by external id; and how a batch names an item its source's quota refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import datetime, timedelta

import pytest

from tests.service.conftest import World
from timefuse.domain.event import Event
from timefuse.domain.quota import QuotaTable, SourceQuota
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import FieldError, ValidationFailed
from timefuse.ports.store import MoveDueResult
from timefuse.service.events import EventService
from timefuse.service.quotas import QuotaReason, SourceQuotas
from timefuse.service.wakeup import DueSignal
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import seed

pytestmark = pytest.mark.looptime


def service_of(
    world: World, wakeup: DueSignal | None = None, quotas: SourceQuotas | None = None
) -> EventService:
    return world.events(wakeup=wakeup, quotas=quotas)


async def wakes(wakeup: DueSignal, planned: datetime | None, action: Awaitable[object]) -> bool:
    """Whether ``action`` wakes a dispatcher sleeping on ``wakeup`` until ``planned``."""
    wakeup.plan(planned)
    sleeping = asyncio.create_task(wakeup.wait(86_400.0))
    await asyncio.sleep(0)
    await action
    await asyncio.sleep(0.001)  # fake time: a woken wait has returned by then
    woken = sleeping.done()
    sleeping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sleeping
    return woken


# -- moving a PENDING event's due time -----------------------------------------------------------


def moved_to(world: World, seconds: float) -> datetime:
    return world.clock.now() + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("due_at", "message"),
    [
        (lambda w: moved_to(w, 60.0).replace(tzinfo=None), "needs a time zone or offset"),
        (lambda w: moved_to(w, -5.001), "is in the past"),
        (lambda w: moved_to(w, 3650 * 86_400.0 + 0.001), "is more than 3650 days ahead"),
    ],
    ids=["naive", "past the grace", "past the horizon"],
)
async def test_a_due_time_out_of_bounds_is_refused_naming_due_at(
    world: World, due_at: object, message: str
) -> None:
    (event,) = await world.submit(world.event(after=60.0))
    with pytest.raises(ValidationFailed) as refused:
        await service_of(world).move_due(event.id, due_at(world))  # type: ignore[operator]
    assert refused.value.errors == [FieldError("due_at", message)]
    assert (await world.stored(event)).next_attempt_at == event.next_attempt_at


@pytest.mark.parametrize(
    ("seconds", "due_in"),
    [(-5.0, 0.0), (-1.0, 0.0), (3650 * 86_400.0, 3650 * 86_400.0)],
    ids=["at the edge of the grace", "within the grace", "at the horizon"],
)
async def test_a_due_time_at_the_edge_of_the_bounds_is_taken_the_past_meaning_now(
    world: World, seconds: float, due_in: float
) -> None:
    (event,) = await world.submit(world.event(after=60.0))
    assert await service_of(world).move_due(event.id, moved_to(world, seconds)) is (
        MoveDueResult.MOVED
    )
    assert (await world.stored(event)).next_attempt_at == moved_to(world, due_in)


async def test_an_event_of_a_source_the_caller_may_not_act_for_is_not_found_nor_moved(
    world: World,
) -> None:
    (event,) = await world.submit(world.event(after=60.0, source="beta"))
    service = service_of(world)
    assert await service.move_due(event.id, moved_to(world, 600.0), sources={"alpha"}) is (
        MoveDueResult.NOT_FOUND
    )
    assert (await world.stored(event)).next_attempt_at == event.next_attempt_at
    assert await service.move_due(event.id, moved_to(world, 600.0), sources={"beta"}) is (
        MoveDueResult.MOVED
    )


async def test_a_move_wakes_the_dispatcher_only_when_it_makes_an_event_due_sooner(
    world: World,
) -> None:
    wakeup = DueSignal(world.clock)
    service = service_of(world, wakeup)
    (event,) = await world.submit(world.event(after=7200.0))
    hour = moved_to(world, 3600.0)

    # Moved, but after the dispatcher's planned wake-up: it sleeps on.
    assert not await wakes(wakeup, hour, service.move_due(event.id, moved_to(world, 5400.0)))
    # Nothing moved: nobody woken, however soon the time asked for.
    assert not await wakes(wakeup, hour, service.move_due("no-such-event", moved_to(world, 60.0)))
    # Moved before the planned wake-up: woken.
    assert await wakes(wakeup, hour, service.move_due(event.id, moved_to(world, 600.0)))
    # Without a dispatcher to wake, a move is just a move.
    assert await service_of(world).move_due(event.id, moved_to(world, 300.0)) is (
        MoveDueResult.MOVED
    )


# -- redelivering dead letters in bulk -----------------------------------------------------------


async def dead_letters(world: World, *sources: str) -> list[Event]:
    return await seed(
        world.store,
        *(
            make_event(
                source=source,
                status=EventStatus.DEAD_LETTER,
                scheduled_at=world.clock.now() - timedelta(hours=1),
            )
            for source in sources
        ),
    )


async def test_bulk_redelivery_takes_only_the_callers_sources(world: World) -> None:
    alpha, beta = await dead_letters(world, "alpha", "beta")
    service = service_of(world)

    assert await service.redeliver_dead_letters(sources={"alpha"}) == 1
    assert (await world.stored(alpha)).status is EventStatus.PENDING
    assert (await world.stored(beta)).status is EventStatus.DEAD_LETTER

    # A source asked for that the caller may not act for: nothing to redeliver.
    assert await service.redeliver_dead_letters(source="beta", sources={"alpha"}) == 0
    assert (await world.stored(beta)).status is EventStatus.DEAD_LETTER


async def test_bulk_redelivery_wakes_the_dispatcher_unless_it_wakes_by_then_anyway(
    world: World,
) -> None:
    await dead_letters(world, "alpha", "alpha")
    wakeup = DueSignal(world.clock)
    service = service_of(world, wakeup)
    now = world.clock.now()
    assert not await wakes(wakeup, now, service.redeliver_dead_letters(limit=1))
    assert await wakes(wakeup, now + timedelta(hours=1), service.redeliver_dead_letters(limit=1))


# -- look-ups by external id --------------------------------------------------------------------


async def test_a_lookup_by_external_id_returns_the_newest_100_by_default(world: World) -> None:
    events = [
        world.event(after=60.0 + n, external_job_id="many", created_at=moved_to(world, -float(n)))
        for n in range(101)
    ]
    await world.submit(*events)
    found = await service_of(world).find_by_external_id("many")
    assert [e.id for e in found] == [e.id for e in events[:100]]


# -- a batch item its source's quota refuses ------------------------------------------------------


async def test_a_batch_item_over_its_sources_quota_is_rejected_naming_the_source(
    world: World,
) -> None:
    quotas = SourceQuotas(
        QuotaTable({"billing": SourceQuota(max_pending=0)}), world.store, world.metrics
    )
    service = service_of(world, quotas=quotas)
    result = await service.submit_batch(
        [
            {
                "external_job_id": "job-1",
                "source": "billing",
                "scheduled_at": "2030-01-01T01:00:00+00:00",
                "delivery_type": "http",
                "destination": "https://receiver.example/hook",
                "payload": b"{}",
            }
        ]
    )
    message = (
        "source 'billing' holds its quota of 0 PENDING events; "
        "more are accepted as those are delivered or cancelled"
    )
    assert result.accepted == []
    (rejection,) = result.rejected
    assert (rejection.index, rejection.external_job_id, rejection.reason) == (0, "job-1", message)
    assert rejection.errors == [FieldError("source", message)]
    assert rejection.quota is not None
    assert (rejection.quota.reason, rejection.quota.entry) == (QuotaReason.PENDING, "billing")
