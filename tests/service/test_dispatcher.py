"""The dispatcher on the in-memory store with a fake clock: due times, retries, leases,
breakers and spreading, each in (fake) seconds that take milliseconds."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest

from tests.service.conftest import World, answering, loop_time
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.spread import spread_offset
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimRequest
from timefuse.service.gate import DestinationLimits

pytestmark = pytest.mark.looptime


async def test_an_event_is_delivered_at_its_time_not_before(world: World) -> None:
    (event,) = await world.submit(world.event(after=10.0))
    start = loop_time()
    await world.run(20.0, world.dispatcher())
    (at,) = world.receivers.times(event.id)
    assert 10.0 <= at - start < 10.1
    stored = await world.stored(event)
    assert (stored.status, stored.attempts, stored.retry_count) == (EventStatus.COMPLETED, 1, 0)
    (record,) = await world.store.attempts(event.id)
    assert (record.outcome, record.status_code, record.worker) == (
        OutcomeKind.SUCCESS,
        200,
        "worker-1",
    )


async def test_a_newly_submitted_event_due_sooner_wakes_a_sleeping_dispatcher(
    world: World,
) -> None:
    await world.submit(world.event(after=3600.0))
    dispatcher = world.dispatcher(poll_interval_seconds=600.0)
    start = loop_time()

    async def submit_later() -> str:
        await asyncio.sleep(1.0)
        (soon,) = await world.submit(world.event(after=2.0))
        return soon.id

    submitting = asyncio.create_task(submit_later())
    await world.run(10.0, dispatcher)
    (at,) = world.receivers.times(await submitting)
    assert 3.0 <= at - start < 3.1  # submitted at +1 s, due 2 s later


async def test_retries_back_off_exponentially_until_retries_run_out(world: World) -> None:
    url = "https://flaky.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.retriable("HTTP 503", 503)))
    (event,) = await world.submit(world.event(destination=url, max_retries=3))
    dispatcher = world.dispatcher(retry_policy=RetryPolicy(2.0, 600))
    await world.run(120.0, dispatcher)
    times = world.receivers.times(event.id)
    assert len(times) == 4  # max_retries 3: four attempts in all
    waits = [b - a for a, b in itertools.pairwise(times)]
    # Full jitter: the n-th wait is at most base * 2**(n-1) (2, 4, 8 s), never above.
    for n, wait in enumerate(waits, start=1):
        assert 0.0 <= wait <= 2.0 * 2 ** (n - 1) + 0.2
    stored = await world.stored(event)
    assert (stored.status, stored.retry_count, stored.last_error) == (
        EventStatus.DEAD_LETTER,
        4,
        "HTTP 503",
    )
    assert [r.outcome for r in await world.store.attempts(event.id)] == [OutcomeKind.RETRIABLE] * 4


async def test_a_receivers_retry_after_decides_the_next_attempt(world: World) -> None:
    url = "https://busy.example/hook"
    answers = iter(
        [DeliveryOutcome.retriable("HTTP 429", 429, retry_after=30.0), DeliveryOutcome.success(200)]
    )

    async def answer(event: object, attempt: int) -> DeliveryOutcome:
        return next(answers)

    world.receivers.answer(url, answer)
    (event,) = await world.submit(world.event(destination=url))
    await world.run(60.0, world.dispatcher())
    first, second = world.receivers.times(event.id)
    assert 30.0 <= second - first < 30.2


async def test_an_events_own_backoff_settings_are_used(world: World) -> None:
    url = "https://flaky.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.retriable("HTTP 500", 500)))
    (event,) = await world.submit(
        world.event(
            destination=url,
            max_retries=2,
            retry_backoff_seconds=100.0,
            retry_backoff_max_seconds=100.0,
        )
    )
    await world.run(30.0, world.dispatcher())
    # The service default (1 s base) would have retried twice within 30 s; the event's 100 s
    # base lets a retry come later than that with near certainty, never within 1 s.
    times = world.receivers.times(event.id)
    assert all(b - a <= 100.2 for a, b in itertools.pairwise(times))
    stored = await world.stored(event)
    assert stored.retry_count >= 1


async def test_a_permanent_failure_fails_the_event_at_once(world: World) -> None:
    url = "https://strict.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.permanent("HTTP 400", 400)))
    (event,) = await world.submit(world.event(destination=url, max_retries=5))
    await world.run(30.0, world.dispatcher())
    assert len(world.receivers.times(event.id)) == 1
    assert (await world.stored(event)).status is EventStatus.FAILED


async def test_a_crashed_dispatchers_lease_expires_and_counts_an_attempt(world: World) -> None:
    (event,) = await world.submit(world.event(max_retries=3))
    # Claimed by a process that then died without a word.
    await world.memory.claim(ClaimRequest("crashed-worker", 10, 5.0))
    start = loop_time()
    await world.run(30.0, world.dispatcher(), maintenance=world.maintenance())
    (at,) = world.receivers.times(event.id)
    assert 5.0 <= at - start < 7.5  # the lease ran out; recovery every second
    stored = await world.stored(event)
    assert (stored.status, stored.attempts, stored.retry_count) == (EventStatus.COMPLETED, 2, 1)
    first, second = await world.store.attempts(event.id)
    assert (first.error, first.worker, first.outcome) == (
        LEASE_EXPIRED_ERROR,
        "crashed-worker",
        OutcomeKind.RETRIABLE,
    )
    assert (second.outcome, second.attempt) == (OutcomeKind.SUCCESS, 2)


async def test_a_breaker_opens_after_consecutive_failures_then_one_probe_tests_it(
    world: World,
) -> None:
    url = "https://down.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.retriable("HTTP 503", 503)))
    events = await world.submit(*(world.event(destination=url, max_retries=10) for _ in range(20)))
    dispatcher = world.dispatcher(
        limits=DestinationLimits(concurrency=1), breaker_failures=3, breaker_cooldown=20.0
    )
    start = loop_time()
    await world.run(50.0, dispatcher)
    times = sorted(r.at - start for r in world.receivers.requests)
    before_open = [t for t in times if t < 10.0]
    assert len(before_open) == 3, times  # the third failure opens it
    # Open for 20 s: nothing, then exactly one probe per cooldown (each fails, reopening it).
    assert [t for t in times if 10.0 <= t < times[2] + 20.0] == []
    probes = [t for t in times if t >= times[2] + 20.0]
    assert len(probes) == 2
    assert probes[1] - probes[0] == pytest.approx(20.0, abs=0.2)
    assert all(e.status is EventStatus.PENDING for e in [await world.stored(e) for e in events])
    snapshot = dispatcher.gate.snapshot()["down.example:443"]
    assert (snapshot["breaker"], snapshot["trips"]) == ("OPEN", 3)


async def test_a_reset_breaker_releases_the_events_it_held_back_at_once(world: World) -> None:
    url = "https://flaky.example/hook"
    state = {"up": False}

    async def answer(event: object, attempt: int) -> DeliveryOutcome:
        await asyncio.sleep(0.01)
        if state["up"]:
            return DeliveryOutcome.success(200)
        return DeliveryOutcome.retriable("HTTP 503", 503)

    world.receivers.answer(url, answer)
    events = await world.submit(*(world.event(destination=url, max_retries=10) for _ in range(30)))
    dispatcher = world.dispatcher(
        limits=DestinationLimits(concurrency=4), breaker_failures=2, breaker_cooldown=600.0
    )
    key = "flaky.example:443"

    async def operator() -> None:
        await asyncio.sleep(5.0)
        assert dispatcher.gate.snapshot()[key]["breaker"] == "OPEN"
        state["up"] = True
        assert dispatcher.gate.reset_breaker(key)

    start = loop_time()
    task = asyncio.create_task(operator())
    await world.run(60.0, dispatcher, until=lambda: world.receivers.received(url).total() >= 30 + 2)
    await task
    # Every event, those claimed and held back by the open breaker included, is delivered
    # within seconds of the reset, not after the 600 s cool-down.
    assert {(await world.stored(e)).status for e in events} == {EventStatus.COMPLETED}
    assert loop_time() - start < 15.0


async def test_a_successful_probe_closes_the_breaker_and_the_backlog_flows(world: World) -> None:
    url = "https://recovers.example/hook"
    state = {"up": False}

    async def answer(event: object, attempt: int) -> DeliveryOutcome:
        if state["up"]:
            return DeliveryOutcome.success(200)
        return DeliveryOutcome.retriable("HTTP 503", 503)

    world.receivers.answer(url, answer)
    events = await world.submit(*(world.event(destination=url, max_retries=10) for _ in range(10)))
    dispatcher = world.dispatcher(
        limits=DestinationLimits(concurrency=1), breaker_failures=2, breaker_cooldown=10.0
    )

    async def come_back() -> None:
        await asyncio.sleep(5.0)
        state["up"] = True

    task = asyncio.create_task(come_back())
    await world.run(40.0, dispatcher)
    await task
    assert {(await world.stored(e)).status for e in events} == {EventStatus.COMPLETED}
    assert dispatcher.gate.snapshot()["recovers.example:443"]["breaker"] == "CLOSED"


async def test_a_delivery_window_spreads_a_herd_at_stable_offsets(world: World) -> None:
    events = [world.event(after=1.0, delivery_window_seconds=60.0) for _ in range(200)]
    for event in events:
        # What build_event does with a window: the due time moves by the event's offset.
        event.next_attempt_at = event.scheduled_at + timedelta(
            seconds=spread_offset(event.id, 60.0)
        )
    await world.submit(*events)
    start = loop_time()
    await world.run(70.0, world.dispatcher())
    offsets = {e.id: spread_offset(e.id, 60.0) for e in events}
    for event in events:
        (at,) = world.receivers.times(event.id)
        assert at - start - 1.0 == pytest.approx(offsets[event.id], abs=0.1)
    assert max(offsets.values()) - min(offsets.values()) > 50.0  # spread over the window
    assert sum(1 for offset in offsets.values() if offset > 1.0) > 190  # not all at the start


async def test_a_cap_holds_what_a_destination_receives_at_once(world: World) -> None:
    url = "https://capped.example/hook"
    world.receivers.answer(url, answering(after=0.5))
    await world.submit(*(world.event(destination=url) for _ in range(50)))
    await world.run(60.0, world.dispatcher(limits=DestinationLimits(concurrency=3)))
    assert world.receivers.most_in_flight[url] == 3
    assert len(world.receivers.received(url)) == 50


async def test_a_rate_limit_spaces_deliveries(world: World) -> None:
    url = "https://metered.example/hook"
    await world.submit(*(world.event(destination=url) for _ in range(30)))
    start = loop_time()
    await world.run(
        40.0, world.dispatcher(limits=DestinationLimits(concurrency=0, rate=2.0, burst=2))
    )
    times = sorted(r.at - start for r in world.receivers.requests)
    assert len(times) == 30
    # 2 at once (the burst), then 2 a second: the 30th near 14 s.
    assert times[-1] == pytest.approx(14.0, abs=0.5)
    for window_start in range(int(times[-1])):
        in_window = [t for t in times if window_start <= t < window_start + 1]
        assert len(in_window) <= 3
