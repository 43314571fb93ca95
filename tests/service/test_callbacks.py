"""Completion callbacks: a child event tells a URL how its parent ended."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.service.conftest import World, answering, loop_time, registry_of
from timefuse.domain.callback import callback_event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import FieldError, ValidationFailed
from timefuse.ports.store import ClaimRequest, EventQuery, OutcomeUpdate, StoreUnavailable
from timefuse.service.gate import DestinationLimits
from timefuse.service.wakeup import DueSignal
from timefuse.service.writeback import OutcomeWriter
from timefuse.testing.factories import make_outcome

pytestmark = pytest.mark.looptime

DONE_HOOK = "https://client.example/done"
FAILED_HOOK = "https://client.example/failed"


def notices(world: World, url: str) -> list[dict[str, object]]:
    found = []
    for event in world.memory.snapshot().values():
        if event.destination == url:
            found.append({"event": event, **json.loads(event.payload)})
    return found


async def test_a_completed_event_calls_back_with_its_outcome(world: World) -> None:
    world.receivers.answer(
        "https://receiver.example/a",
        answering(DeliveryOutcome(OutcomeKind.SUCCESS, status_code=201, response_excerpt="thanks")),
    )
    (parent,) = await world.submit(
        world.event(
            destination="https://receiver.example/a",
            callback_url=DONE_HOOK,
            failure_callback_url=FAILED_HOOK,
        )
    )

    await world.run(
        10.0, world.dispatcher(), until=lambda: bool(world.receivers.received(DONE_HOOK))
    )

    [notice] = notices(world, DONE_HOOK)
    child = notice["event"]
    assert child.parent_id == parent.id  # type: ignore[attr-defined]
    assert child.status is EventStatus.COMPLETED  # type: ignore[attr-defined]
    assert {
        k: notice[k]
        for k in ("type", "event_id", "status", "attempts", "status_code", "response_excerpt")
    } == {
        "type": "event.completed",
        "event_id": parent.id,
        "status": "COMPLETED",
        "attempts": 1,
        "status_code": 201,
        "response_excerpt": "thanks",
    }
    assert notices(world, FAILED_HOOK) == []


async def test_a_dead_lettered_event_calls_its_failure_url(world: World) -> None:
    world.receivers.answer(
        "https://receiver.example/down",
        answering(DeliveryOutcome.retriable("HTTP 503", 503)),
    )
    (parent,) = await world.submit(
        world.event(
            destination="https://receiver.example/down",
            max_retries=1,
            callback_url=DONE_HOOK,
            failure_callback_url=FAILED_HOOK,
        )
    )

    await world.run(
        120.0, world.dispatcher(), until=lambda: bool(world.receivers.received(FAILED_HOOK))
    )

    assert (await world.stored(parent)).status is EventStatus.DEAD_LETTER
    [notice] = notices(world, FAILED_HOOK)
    assert (notice["type"], notice["status"], notice["attempts"], notice["retry_count"]) == (
        "event.dead_lettered",
        "DEAD_LETTER",
        2,
        2,
    )
    assert notice["error"] == "HTTP 503"
    assert notices(world, DONE_HOOK) == []


async def test_an_event_dead_lettered_by_lease_recovery_calls_its_failure_url_once(
    world: World,
) -> None:
    (parent,) = await world.submit(
        world.event(max_retries=0, callback_url=DONE_HOOK, failure_callback_url=FAILED_HOOK)
    )
    # A dispatcher claimed the event's only attempt and died before it reported anything.
    (lost,) = (await world.memory.claim(ClaimRequest("crashed", 10, 2.0))).events

    await world.run(
        30.0,
        world.dispatcher(),
        maintenance=world.maintenance(),
        until=lambda: bool(world.receivers.received(FAILED_HOOK)),
    )
    # The dead worker's outcome and notice, written late, are fenced out: nothing is added.
    writer = OutcomeWriter(world.store, DueSignal(), batch_size=10, monotonic=loop_time)
    late_notice = callback_event(
        lost,
        EventStatus.DEAD_LETTER,
        now=world.clock.now(),
        attempts=1,
        retry_count=1,
        status_code=503,
        response_excerpt=None,
        error="HTTP 503",
    )
    writer.add(replace(make_outcome(lost, status=EventStatus.DEAD_LETTER), callback=late_notice))
    assert await writer.flush()
    await world.run(5.0, world.dispatcher())

    assert (writer.written, writer.pending) == (0, 0)
    assert (await world.stored(parent)).status is EventStatus.DEAD_LETTER
    [notice] = notices(world, FAILED_HOOK)
    assert notice["event"].status is EventStatus.COMPLETED  # type: ignore[attr-defined]
    # Stored under its receiver's key, as any notice: found by a listing for that receiver.
    found = await world.store.list_events(EventQuery(destination_key="client.example:443"), 10)
    assert [event.id for event in found.events] == [notice["event"].id]  # type: ignore[attr-defined]
    assert list(world.receivers.received(FAILED_HOOK).values()) == [1]
    assert (notice["type"], notice["event_id"], notice["attempts"], notice["error"]) == (
        "event.dead_lettered",
        parent.id,
        1,
        LEASE_EXPIRED_ERROR,
    )
    assert notices(world, DONE_HOOK) == []


async def test_an_event_without_callbacks_makes_no_child(world: World) -> None:
    await world.submit(world.event())

    await world.run(5.0, world.dispatcher(), until=lambda: bool(world.receivers.requests))
    await world.run(1.0, world.dispatcher())

    assert len(world.memory.snapshot()) == 1


async def test_a_callback_is_written_with_its_outcome_so_losing_the_store_after_loses_none(
    world: World,
) -> None:
    world.receivers.answer("https://receiver.example/a", answering())
    (parent,) = await world.submit(
        world.event(destination="https://receiver.example/a", callback_url=DONE_HOOK)
    )
    record = world.memory.record_outcomes

    async def then_gone(updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        # The outcome is committed; then the store is gone before the answer arrives, and
        # stays gone until the process stops: it never writes anything else.
        await record(updates)
        world.memory.faults.down.add("*")
        raise StoreUnavailable("connection lost before the commit was acknowledged")

    world.memory.record_outcomes = then_gone  # type: ignore[method-assign]
    first = world.dispatcher("worker-1", shutdown_timeout_seconds=2.0)
    await world.run(
        10.0,
        first,
        until=lambda: world.memory.snapshot()[parent.id].status is EventStatus.COMPLETED,
    )
    assert first.writer.pending == 1  # stopped without knowing its outcome was written

    # The store is back; the next process finds the notice stored with the outcome.
    del world.memory.record_outcomes
    world.memory.faults.down.clear()
    [notice] = notices(world, DONE_HOOK)
    assert (notice["event"].parent_id, notice["status"]) == (parent.id, "COMPLETED")  # type: ignore[attr-defined]
    await world.run(
        10.0, world.dispatcher("worker-2"), until=lambda: bool(world.receivers.received(DONE_HOOK))
    )
    await world.run(5.0, world.dispatcher("worker-2"))
    assert list(world.receivers.received(DONE_HOOK).values()) == [1]
    assert len(notices(world, DONE_HOOK)) == 1


async def test_an_error_text_with_a_lone_surrogate_still_records_the_outcome_and_its_notice(
    world: World,
) -> None:
    url = "https://odd.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.permanent("a lone \ud83d here", 400)))
    events = await world.submit(
        *(
            world.event(destination=url, max_retries=0, failure_callback_url=FAILED_HOOK)
            for _ in range(3)
        )
    )
    dispatcher = world.dispatcher(limits=DestinationLimits(concurrency=2), lease_seconds=10.0)
    await world.run(30.0, dispatcher, maintenance=world.maintenance())

    stored = [await world.stored(e) for e in events]
    assert [(s.status, s.attempts) for s in stored] == [(EventStatus.FAILED, 1)] * 3
    assert all("lease" not in (s.last_error or "") for s in stored)
    assert dispatcher.gate.occupied == 0
    sent = notices(world, FAILED_HOOK)
    assert sorted(n["event"].parent_id for n in sent) == sorted(s.id for s in stored)
    assert {n["status"] for n in sent} == {"FAILED"}


async def test_a_callback_url_the_http_type_refuses_is_refused_with_its_reason(
    world: World,
) -> None:
    def refuse_failed_hook(destination: str) -> str | None:
        return "the receiver refuses it" if destination == FAILED_HOOK else None

    http = replace(world.receivers.delivery_type(), validate_destination=refuse_failed_hook)
    service = world.events(registry=registry_of(http))
    fields = {
        "external_job_id": "job-1",
        "source": "billing",
        "scheduled_at": (world.clock.now() + timedelta(minutes=1)).isoformat(),
        "delivery_type": "http",
        "destination": "https://receiver.example/a",
        "payload": b"{}",
        "callback_url": DONE_HOOK,
        "failure_callback_url": FAILED_HOOK,
    }
    with pytest.raises(ValidationFailed) as refused:
        service.build(fields)
    assert refused.value.errors == [FieldError("failure_callback_url", "the receiver refuses it")]
