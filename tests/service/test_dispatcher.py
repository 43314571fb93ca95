"""The dispatcher on the in-memory store with a fake clock: due times, retries, leases,
breakers and spreading, each in (fake) seconds that take milliseconds."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

import pytest

from tests.service.conftest import LongestWaits, World, answering, loop_time
from timefuse.domain.event import Event, new_event_id
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import SubmissionLimits, build_event
from timefuse.ports.store import ClaimBatch, ClaimRef, ClaimRequest
from timefuse.service.dispatcher import Dispatcher
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
    sample = world.metrics.registry.get_sample_value
    http = {"delivery_type": "http"}
    assert sample("timefuse_events_failed_total", {**http, "outcome": "RETRIABLE"}) == 4
    assert sample("timefuse_events_retried_total", http) == 3
    assert sample("timefuse_events_dead_lettered_total", http) == 1


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


async def test_the_nth_retry_waits_at_most_base_times_two_to_the_n_minus_one(
    world: World,
) -> None:
    url = "https://flaky.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.retriable("HTTP 503", 503)))
    (event,) = await world.submit(world.event(destination=url, max_retries=4))
    dispatcher = world.dispatcher(retry_policy=RetryPolicy(2.0, 600), rng=LongestWaits())
    await world.run(120.0, dispatcher)
    waits = [b - a for a, b in itertools.pairwise(world.receivers.times(event.id))]
    # The jitter drawn at its top: each wait is its ceiling, 2 * 2**(n-1) for the n-th.
    assert waits == pytest.approx([2.0, 4.0, 8.0, 16.0], abs=0.05)


@pytest.mark.parametrize(
    ("base", "cap", "waits"),
    [
        (7.0, 10.0, [7.0, 10.0, 10.0]),  # both the event's
        (5.0, None, [5.0, 10.0, 20.0]),  # its base, the service's cap
        (None, 3.0, [2.0, 3.0, 3.0]),  # the service's base, its cap
    ],
)
async def test_an_events_own_backoff_settings_decide_its_waits(
    world: World, base: float | None, cap: float | None, waits: list[float]
) -> None:
    url = "https://flaky.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.retriable("HTTP 500", 500)))
    (event,) = await world.submit(
        world.event(
            destination=url,
            max_retries=3,
            retry_backoff_seconds=base,
            retry_backoff_max_seconds=cap,
        )
    )
    dispatcher = world.dispatcher(retry_policy=RetryPolicy(2.0, 600.0), rng=LongestWaits())
    await world.run(60.0, dispatcher)
    times = world.receivers.times(event.id)
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx(waits, abs=0.05)


async def test_a_permanent_failure_fails_the_event_at_once(world: World) -> None:
    url = "https://strict.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.permanent("HTTP 400", 400)))
    (event,) = await world.submit(world.event(destination=url, max_retries=5))
    await world.run(30.0, world.dispatcher())
    assert len(world.receivers.times(event.id)) == 1
    assert (await world.stored(event)).status is EventStatus.FAILED
    failed = world.metrics.registry.get_sample_value(
        "timefuse_events_failed_total", {"delivery_type": "http", "outcome": "PERMANENT"}
    )
    assert failed == 1


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


def submitted(world: World, n: int, **fields: object) -> Event:
    """An event as the API builds it from a submission (``delivery_window_seconds``
    included), due a second from now."""
    now = world.clock.now()
    body = {
        "external_job_id": f"job-{n}",
        "source": "herd",
        "scheduled_at": (now + timedelta(seconds=1.0)).isoformat(),
        "delivery_type": "http",
        "destination": "https://herd.example/hook",
        "payload": b"{}",
        **fields,
    }
    return build_event(body, event_id=new_event_id(now), now=now, limits=SubmissionLimits())


async def test_a_delivery_window_spreads_a_herd_at_stable_offsets(world: World) -> None:
    events = [submitted(world, n, delivery_window_seconds=60.0) for n in range(300)]
    # Stable: the same submission (same id) is due at the same moment however often built.
    for event in events[:20]:
        again = build_event(
            {
                "external_job_id": event.external_job_id,
                "source": "herd",
                "scheduled_at": event.scheduled_at.isoformat(),
                "delivery_type": "http",
                "destination": event.destination,
                "payload": b"{}",
                "delivery_window_seconds": 60.0,
            },
            event_id=event.id,
            now=world.clock.now() + timedelta(seconds=0.5),
            limits=SubmissionLimits(),
        )
        assert again.next_attempt_at == event.next_attempt_at
    await world.submit(*events)
    start = loop_time()
    await world.run(70.0, world.dispatcher())
    offsets = []
    for event in events:
        (at,) = world.receivers.times(event.id)
        due = (event.next_attempt_at - event.scheduled_at).total_seconds()
        assert at - start - 1.0 == pytest.approx(due, abs=0.1)  # delivered at its due time
        offsets.append(due)
    assert all(0.0 <= offset < 60.0 for offset in offsets)
    # Spread over the whole window: each tenth of it holds about a tenth of the herd
    # (300 events: 30 expected per tenth), and hardly any at the scheduled time itself.
    per_tenth = Counter(int(offset // 6.0) for offset in offsets)
    assert sorted(per_tenth) == list(range(10))
    assert all(12 <= count <= 50 for count in per_tenth.values()), per_tenth
    assert sum(1 for offset in offsets if offset < 0.5) < 10


async def test_without_a_window_the_herd_is_due_at_its_scheduled_time(world: World) -> None:
    events = [submitted(world, n) for n in range(20)]
    assert {e.next_attempt_at for e in events} == {events[0].scheduled_at}


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


# -- events held at their destination ---------------------------------------------------------


async def most_held(world: World, dispatcher: Dispatcher, seconds: float) -> int:
    """The most claimed events the dispatcher held at once over ``seconds``: PROCESSING in
    the store, less those whose outcome or hand-back waits in the writer."""
    most = 0
    deadline = loop_time() + seconds
    while loop_time() < deadline:
        held = (await world.statuses())["PROCESSING"] - dispatcher.writer.pending
        most = max(most, held)
        await asyncio.sleep(0.05)
    return most


async def test_events_waiting_at_destinations_count_against_the_concurrency(
    world: World,
) -> None:
    hosts = [f"https://metered-{n}.example/hook" for n in range(20)]
    await world.submit(*(world.event(destination=host) for host in hosts for _ in range(5)))
    dispatcher = world.dispatcher(
        concurrency=5, batch_size=5, limits=DestinationLimits(concurrency=0, rate=1.0, burst=1)
    )
    sampling = asyncio.create_task(most_held(world, dispatcher, 10.0))
    await world.run(10.0, dispatcher)
    # Claimed means in flight or waiting at a destination: never more than 5 together.
    assert await sampling == 5
    assert len(world.receivers.requests) >= 40


async def test_events_waiting_at_a_destination_are_handed_back_at_shutdown(world: World) -> None:
    url = "https://metered.example/hook"
    events = await world.submit(*(world.event(destination=url) for _ in range(10)))
    dispatcher = world.dispatcher(limits=DestinationLimits(concurrency=0, rate=1.0, burst=1))
    sampling = asyncio.create_task(most_held(world, dispatcher, 0.5))
    await world.run(0.6, dispatcher)
    assert await sampling > 1  # some were claimed and waited for a token
    stored = [await world.stored(e) for e in events]
    assert Counter(e.status for e in stored) == Counter(
        {EventStatus.COMPLETED: 1, EventStatus.PENDING: 9}
    )
    assert all(e.attempts == 0 for e in stored if e.status is EventStatus.PENDING)
    start = loop_time()
    limits = DestinationLimits(concurrency=0, rate=1.0, burst=1)
    await world.run(0.5, world.dispatcher("worker-2", limits=limits))  # at once, not at lease end
    assert len(world.receivers.requests) == 2
    assert world.receivers.requests[-1].at - start < 0.1


async def test_every_attempt_starts_within_a_quarter_of_its_lease(world: World) -> None:
    metered, slow = "https://metered.example/hook", "https://slow.example/hook"
    world.receivers.answer(slow, answering(after=3.0))
    claimed_at: dict[tuple[str, int], float] = {}
    claim = world.memory.claim

    async def remembering_claim(request: ClaimRequest) -> ClaimBatch:
        batch = await claim(request)
        for event in batch.events:
            claimed_at[(event.id, event.attempts)] = loop_time()
        return batch

    world.memory.claim = remembering_claim  # type: ignore[method-assign]
    events = await world.submit(
        *(world.event(destination=metered) for _ in range(40)),
        *(world.event(destination=slow) for _ in range(12)),
    )
    dispatcher = world.dispatcher(
        lease_seconds=8.0,
        overrides={
            "metered.example:443": DestinationLimits(concurrency=0, rate=2.0, burst=1),
            "slow.example:443": DestinationLimits(concurrency=2),
        },
    )
    await world.run(60.0, dispatcher, maintenance=world.maintenance())
    assert await world.statuses() == Counter({"COMPLETED": 52})
    assert len(world.receivers.requests) == len(events)
    for request in world.receivers.requests:
        waited = request.at - claimed_at[(request.event_id, request.attempt)]
        assert 0.0 <= waited <= 2.0 + 0.01, "started with more than a quarter of its lease spent"


async def test_an_event_waiting_for_its_destination_goes_back_at_a_quarter_of_its_lease(
    world: World,
) -> None:
    slow = "https://slow.example/hook"
    fast, busy = answering(after=0.001), answering(after=30.0)

    async def answer(event: Event, attempt: int) -> DeliveryOutcome:
        return await (fast if event.external_job_id == "quick" else busy)(event, attempt)

    world.receivers.answer(slow, answer)
    # A quick delivery first, so the gate expects the destination's slot back soon and claims
    # two at once; then one takes the slot for 30 s and the other waits for it.
    await world.submit(world.event(external_job_id="quick", destination=slow))
    events = await world.submit(*(world.event(after=1.0, destination=slow) for _ in range(2)))
    handed_back: list[tuple[str, float]] = []
    hand_back = world.memory.hand_back

    async def remembering_hand_back(refs: Sequence[ClaimRef], delay_seconds: float) -> int:
        handed_back.extend((ref.event_id, loop_time()) for ref in refs)
        return await hand_back(refs, delay_seconds)

    world.memory.hand_back = remembering_hand_back  # type: ignore[method-assign]
    # An 8 s lease: a claimed event waits a quarter of it, 2 s, for the destination's slot.
    dispatcher = world.dispatcher(lease_seconds=8.0, limits=DestinationLimits(concurrency=1))
    await world.run(4.0, dispatcher)

    (running,) = [e for e in events if world.receivers.times(e.id)]
    (waiting,) = [e for e in events if e is not running]
    (started,) = world.receivers.times(running.id)
    (back_id, back_at), *_ = handed_back
    assert back_id == waiting.id
    assert 2.0 <= back_at - started < 2.1
    stored = await world.stored(waiting)
    assert (stored.status, stored.attempts) == (EventStatus.PENDING, 0)


async def test_a_destination_takes_its_events_in_the_order_they_fell_due(world: World) -> None:
    url = "https://metered.example/hook"
    events = await world.submit(*(world.event(after=n * 0.05, destination=url) for n in range(40)))
    dispatcher = world.dispatcher(limits=DestinationLimits(concurrency=0, rate=4.0, burst=1))
    await world.run(30.0, dispatcher)
    assert [r.event_id for r in world.receivers.requests] == [e.id for e in events]
