"""What the dispatcher writes of an attempt: the event's error and execution time, the attempt's
record, and what it hands back at shutdown."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
import structlog

from tests.service.conftest import World, loop_time
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimBatch, ClaimRequest
from timefuse.service import dispatcher as dispatcher_module
from timefuse.service.gate import DestinationLimits

pytestmark = pytest.mark.looptime

URL = "https://flaky.example/hook"


def fails_then_succeeds(failures: int) -> Callable[[Event, int], Awaitable[DeliveryOutcome]]:
    answers = [DeliveryOutcome.retriable("HTTP 503", 503)] * failures

    async def answer(event: Event, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(0.25)
        return answers.pop(0) if answers else DeliveryOutcome.success(200)

    return answer


async def test_an_attempt_is_recorded_with_its_error_and_duration(world: World) -> None:
    world.receivers.answer(URL, fails_then_succeeds(1))
    (event,) = await world.submit(world.event(destination=URL, max_retries=1))
    await world.run(0.5, world.dispatcher(retry_policy=RetryPolicy(30.0, 30.0)))
    stored = await world.stored(event)
    assert (stored.status, stored.last_error, stored.executed_at) == (
        EventStatus.PENDING,
        "HTTP 503",
        None,  # not executed: it failed
    )
    (record,) = await world.store.attempts(event.id)
    assert (record.outcome, record.status_code, record.error) == (
        OutcomeKind.RETRIABLE,
        503,
        "HTTP 503",
    )
    assert record.duration_ms == pytest.approx(250.0, abs=0.01)


async def test_a_success_after_a_failure_keeps_the_last_error_and_records_when_it_ran(
    world: World,
) -> None:
    world.receivers.answer(URL, fails_then_succeeds(1))
    (event,) = await world.submit(world.event(destination=URL, max_retries=1))
    start, t0 = world.clock.now(), loop_time()
    await world.run(5.0, world.dispatcher(retry_policy=RetryPolicy(1.0, 1.0)))
    stored = await world.stored(event)
    assert (stored.status, stored.retry_count, stored.last_error) == (
        EventStatus.COMPLETED,
        1,
        "HTTP 503",  # the last failure's, kept: the success has no error of its own
    )
    (_, second) = world.receivers.times(event.id)
    assert stored.executed_at is not None
    # When the successful attempt ended (0.25 s after it started).
    ended = (stored.executed_at - start).total_seconds()
    assert ended == pytest.approx(second - t0 + 0.25, abs=0.001)
    first, last = await world.store.attempts(event.id)
    assert (first.error, last.error) == ("HTTP 503", None)


async def test_a_success_carrying_text_records_no_error(world: World) -> None:
    async def answer(event: Event, attempt: int) -> DeliveryOutcome:
        return DeliveryOutcome(OutcomeKind.SUCCESS, "accepted, queued", 202)

    world.receivers.answer(URL, answer)
    (event,) = await world.submit(world.event(destination=URL))
    await world.run(1.0, world.dispatcher())
    stored = await world.stored(event)
    assert (stored.status, stored.last_error) == (EventStatus.COMPLETED, None)
    (record,) = await world.store.attempts(event.id)
    assert (record.outcome, record.status_code, record.error) == (OutcomeKind.SUCCESS, 202, None)


async def test_events_waiting_at_a_destination_at_shutdown_are_due_again_at_once(
    world: World,
) -> None:
    url = "https://metered.example/hook"
    events = await world.submit(*(world.event(destination=url) for _ in range(5)))
    limits = DestinationLimits(concurrency=0, rate=1.0, burst=1)
    await world.run(0.5, world.dispatcher(limits=limits))
    stopped = world.clock.now()
    stored = [await world.stored(e) for e in events]
    assert Counter(e.status for e in stored) == Counter(
        {EventStatus.COMPLETED: 1, EventStatus.PENDING: 4}
    )
    for e in stored:
        if e.status is EventStatus.PENDING:
            assert e.next_attempt_at is not None
            assert e.next_attempt_at <= stopped


async def test_a_delivery_cut_off_at_shutdown_is_handed_back_though_it_takes_time_to_stop(
    world: World,
) -> None:
    url = "https://slow.example/hook"

    async def slow(event: Event, attempt: int) -> DeliveryOutcome:
        try:
            await asyncio.sleep(30.0)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # closing its connection
            raise
        return DeliveryOutcome.success(200)

    world.receivers.answer(url, slow)
    (event,) = await world.submit(world.event(destination=url))
    await world.run(1.0, world.dispatcher(shutdown_timeout_seconds=2.0))
    stored = await world.stored(event)
    assert (stored.status, stored.attempts, stored.locked_by) == (EventStatus.PENDING, 0, None)
    # Due again at once, in its old place among the due events: not delayed.
    assert stored.next_attempt_at == event.next_attempt_at


async def test_a_claimed_event_of_a_type_this_process_lacks_is_handed_back_for_a_minute(
    world: World,
) -> None:
    # A store that hands out due events of every type, not only those the claim names.
    claim = world.memory.claim

    async def any_type(request: ClaimRequest) -> ClaimBatch:
        return await claim(replace(request, due=replace(request.due, delivery_types=None)))

    world.memory.claim = any_type  # type: ignore[method-assign]
    pigeon, other = await world.submit(
        world.event(delivery_type="pigeon", destination="coop"), world.event()
    )
    submitted = world.clock.now()
    await world.run(10.0, world.dispatcher())
    stored = await world.stored(pigeon)
    # Not attempted, not counted, no longer claimed: due again a minute after its claim.
    assert (stored.status, stored.attempts, stored.retry_count, stored.locked_by) == (
        EventStatus.PENDING,
        0,
        0,
        None,
    )
    assert 60.0 <= (stored.next_attempt_at - submitted).total_seconds() < 60.1
    assert await world.store.attempts(pigeon.id) == []
    assert world.receivers.received() == Counter({other.id: 1})
    assert (await world.stored(other)).status is EventStatus.COMPLETED


async def test_a_notice_that_cannot_be_built_is_logged_and_the_outcome_written_without_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> Event | None:
        raise RuntimeError("no notice")

    monkeypatch.setattr(dispatcher_module, "callback_event", broken)
    world.receivers.answer(URL, fails_then_succeeds(0))
    (event,) = await world.submit(world.event(destination=URL))
    with structlog.testing.capture_logs() as logs:
        await world.run(1.0, world.dispatcher())
    stored = await world.stored(event)
    assert (stored.status, stored.attempts) == (EventStatus.COMPLETED, 1)
    assert list(world.memory.snapshot()) == [event.id]  # no notice stored with it
    errors = [(e["event"], e.get("event_id")) for e in logs if e["log_level"] == "error"]
    assert errors == [("completion callback could not be built", event.id)]


async def test_the_destinations_pace_follows_how_long_its_deliveries_took(world: World) -> None:
    world.receivers.answer(URL, fails_then_succeeds(0))  # each delivery takes 0.25 s
    await world.submit(world.event(destination=URL))
    dispatcher = world.dispatcher(limits=DestinationLimits(concurrency=2))
    await world.run(1.0, dispatcher)
    # 2 free slots, plus 2 per 0.25 s for 80 % of the 5 s hold time (not 2 per hold time,
    # the guess made before any delivery ended).
    assert dispatcher.gate.claim_budget().budgets["flaky.example:443"] == 2 + 32
