"""Several dispatchers on one store act as one: caps, rates and breakers hold for all of them.

The in-memory store keeps the shared limits here the way PostgreSQL keeps them for several
processes; each dispatcher stands for a process.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.service.conftest import World, answering, loop_time
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimRequest
from timefuse.service.gate import DestinationLimits, source_breaker_key

pytestmark = pytest.mark.looptime

URL = "https://shared.example/hook"
KEY = "shared.example:443"


async def test_a_cap_holds_for_every_dispatcher_together(cluster: World) -> None:
    cluster.receivers.answer(URL, answering(after=0.05))
    events = await cluster.submit(*(cluster.event(destination=URL) for _ in range(800)))
    limits = {KEY: DestinationLimits(concurrency=20)}
    dispatchers = [cluster.dispatcher(f"worker-{n}", overrides=limits) for n in range(4)]
    await cluster.run(60.0, *dispatchers, until=lambda: len(cluster.receivers.requests) >= 800)
    assert cluster.receivers.most_in_flight[URL] == 20
    assert cluster.receivers.received(URL) == {e.id: 1 for e in events}


async def test_a_rate_holds_for_every_dispatcher_together(cluster: World) -> None:
    await cluster.submit(*(cluster.event(destination=URL) for _ in range(100)))
    limits = {KEY: DestinationLimits(concurrency=0, rate=10.0, burst=10)}
    dispatchers = [cluster.dispatcher(f"worker-{n}", overrides=limits) for n in range(3)]
    start = loop_time()
    await cluster.run(15.0, *dispatchers)
    times = sorted(r.at - start for r in cluster.receivers.requests)
    assert len(times) >= 90
    # The burst, then 10 a second for all three together.
    for second in range(1, 9):
        in_window = [t for t in times if second <= t < second + 1]
        assert len(in_window) <= 11, (second, len(in_window))


async def test_a_breaker_opened_by_one_dispatcher_stops_them_all_with_one_probe(
    cluster: World,
) -> None:
    cluster.receivers.answer(URL, answering(DeliveryOutcome.retriable("HTTP 503", 503)))
    await cluster.submit(*(cluster.event(destination=URL, max_retries=10) for _ in range(300)))
    dispatchers = [
        cluster.dispatcher(
            f"worker-{n}",
            limits=DestinationLimits(concurrency=2),
            breaker_failures=3,
            breaker_cooldown=10.0,
        )
        for n in range(3)
    ]
    start = loop_time()
    await cluster.run(45.0, *dispatchers)
    times = sorted(r.at - start for r in cluster.receivers.requests)
    first_wave = [t for t in times if t < 5.0]
    assert len(first_wave) <= 3 * 3  # each dispatcher sees at most its threshold fail
    later = [t for t in times if t >= 5.0]
    # Then one probe a cool-down, for all dispatchers together (each fails and reopens it).
    assert 2 <= len(later) <= 5, later
    assert all(b - a >= 9.5 for a, b in itertools.pairwise(later))
    # Open for all of them: in the store, and in every dispatcher that met the receiver.
    # One source failed, so it is that source's own breaker (the others' events would flow).
    assert [b.key for b in await cluster.store.open_breakers()] == [
        source_breaker_key(KEY, "tests")
    ]
    for dispatcher in dispatchers:
        state = dispatcher.gate.snapshot().get(KEY)
        assert state is None or state["breaker"] in ("OPEN", "HALF_OPEN")


async def test_a_probes_success_reopens_the_destination_for_every_dispatcher(
    cluster: World,
) -> None:
    state = {"up": False}

    async def answer(event: object, attempt: int) -> DeliveryOutcome:
        return DeliveryOutcome.success(200) if state["up"] else DeliveryOutcome.retriable("503")

    cluster.receivers.answer(URL, answer)
    events = await cluster.submit(
        *(cluster.event(destination=URL, max_retries=20) for _ in range(60))
    )
    dispatchers = [
        cluster.dispatcher(f"worker-{n}", breaker_failures=2, breaker_cooldown=5.0)
        for n in range(3)
    ]

    async def recover() -> None:
        await asyncio.sleep(3.0)
        state["up"] = True

    task = asyncio.create_task(recover())
    await cluster.run(30.0, *dispatchers)
    await task
    statuses = {(await cluster.stored(e)).status.value for e in events}
    assert statuses == {"COMPLETED"}
    assert await cluster.store.open_breakers() == []
    for dispatcher in dispatchers:
        state = dispatcher.gate.snapshot().get(KEY)
        assert state is None or state["breaker"] == "CLOSED"


async def test_a_restarted_worker_takes_its_predecessors_claims_back_at_once(
    cluster: World,
) -> None:
    (event,) = await cluster.submit(cluster.event(max_retries=3))
    # The worker's previous run claimed it under a long lease, then was killed.
    await cluster.memory.claim(ClaimRequest("worker-1", 10, 600.0))
    start = loop_time()
    await cluster.run(5.0, cluster.dispatcher("worker-1"))
    (at,) = cluster.receivers.times(event.id)
    assert at - start < 0.5
    stored = await cluster.stored(event)
    assert (stored.status, stored.retry_count) == (EventStatus.COMPLETED, 1)


async def test_a_holder_that_may_run_less_than_the_cap_leaves_the_rest_to_the_others(
    cluster: World,
) -> None:
    # Each dispatcher may hold 3 events, the destination's cap is 6: the first one alone must
    # not hold the whole cap and keep the second from the other 3 slots.
    cluster.receivers.answer(URL, answering(after=1.0))
    await cluster.submit(*(cluster.event(destination=URL) for _ in range(1000)))
    limits = {KEY: DestinationLimits(concurrency=6)}
    first = cluster.dispatcher("worker-a", overrides=limits, concurrency=3)
    second = cluster.dispatcher("worker-b", overrides=limits, concurrency=3)
    stop = asyncio.Event()
    running = [asyncio.create_task(first.run(stop))]
    await asyncio.sleep(5.0)
    running.append(asyncio.create_task(second.run(stop)))
    joined = loop_time()
    await asyncio.sleep(30.0)
    stop.set()
    await asyncio.gather(*running)
    after = [r for r in cluster.receivers.requests if joined + 2 <= r.at < joined + 30]
    assert len(after) / 28 > 5.5  # both deliver: 6 at once, a second each
    assert cluster.receivers.most_in_flight[URL] == 6


async def test_attempts_ending_at_once_never_start_more_than_a_shared_rate_allows(
    cluster: World,
) -> None:
    # The receiver stalls with the cap's worth in flight, then answers them all at once: the
    # next claims must not start a burst past the shared bucket.
    started = loop_time()

    async def stall_then_answer(event: Event, attempt: int) -> DeliveryOutcome:
        elapsed = loop_time() - started
        await asyncio.sleep(10.0 - elapsed if 5.0 <= elapsed < 10.0 else 1.0)
        return DeliveryOutcome.success(200)

    cluster.receivers.answer(URL, stall_then_answer)
    await cluster.submit(*(cluster.event(destination=URL) for _ in range(400)))
    limits = {KEY: DestinationLimits(concurrency=20, rate=10.0, burst=10)}
    await cluster.run(20.0, cluster.dispatcher(overrides=limits))
    times = sorted(r.at - started for r in cluster.receivers.requests)
    busiest = max(sum(1 for t in times if at <= t < at + 0.5) for at in times)
    assert busiest <= 10 + 10 * 0.5


async def test_a_dispatcher_at_a_full_destination_claims_again_once_a_quarter_has_ended(
    cluster: World,
) -> None:
    arrivals = itertools.count(1)

    async def staggered(event: Event, attempt: int) -> DeliveryOutcome:
        n = next(arrivals)
        await asyncio.sleep(float(n) if n <= 6 else 1.0)  # the first six end 1 s apart
        return DeliveryOutcome.success(200)

    cluster.receivers.answer(URL, staggered)
    await cluster.submit(*(cluster.event(destination=URL) for _ in range(8)))
    limits = {KEY: DestinationLimits(concurrency=6)}
    dispatcher = cluster.dispatcher(overrides=limits, poll_interval_seconds=30.0)
    start = loop_time()
    await cluster.run(3.0, dispatcher)
    times = [r.at - start for r in cluster.receivers.requests]
    assert all(t < 0.01 for t in times[:6])
    # Six in flight: a quarter (one, rounded down) ending frees a slot and the next claim
    # takes it at once, not at the poll interval.
    assert 1.0 <= times[6] < 1.01
    assert 2.0 <= times[7] < 2.01


async def test_a_dispatcher_at_a_full_destination_claims_at_once_what_falls_due_meanwhile(
    cluster: World,
) -> None:
    cluster.receivers.answer(URL, answering(after=10.0))
    await cluster.submit(*(cluster.event(destination=URL) for _ in range(3)))
    dispatcher = cluster.dispatcher(
        overrides={KEY: DestinationLimits(concurrency=2)}, poll_interval_seconds=60.0
    )
    start = loop_time()

    async def submit_later() -> str:
        await asyncio.sleep(1.0)
        (other,) = await cluster.submit(cluster.event(destination="https://other.example/hook"))
        return other.id

    submitting = asyncio.create_task(submit_later())
    await cluster.run(5.0, dispatcher)
    (at,) = cluster.receivers.times(await submitting)
    assert 1.0 <= at - start < 1.01


async def test_a_dispatcher_follows_breakers_opened_elsewhere_twice_a_second(
    cluster: World,
) -> None:
    (known,) = await cluster.submit(cluster.event(destination=URL))
    dispatcher = cluster.dispatcher(poll_interval_seconds=30.0)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(1.0)
    assert cluster.receivers.received(URL) == {known.id: 1}
    await cluster.memory.publish_breaker(KEY, open=True)  # another process opened it
    await asyncio.sleep(0.6)
    assert dispatcher.gate.snapshot()[KEY]["breaker_for_all"] is True
    stop.set()
    await running


async def test_an_idle_dispatcher_claims_no_more_often_than_its_poll_interval(
    cluster: World,
) -> None:
    # Breakers are synced twice a second; that alone must not wake the claim loop.
    dispatcher = cluster.dispatcher(poll_interval_seconds=5.0)
    await cluster.run(20.0, dispatcher)
    assert cluster.memory.faults.calls["claim"] == 4  # at 0, 5, 10 and 15 s


async def test_an_attempt_ending_after_a_refill_wait_timed_out_does_not_wake_the_claim_loop(
    cluster: World,
) -> None:
    cluster.receivers.answer(URL, answering(after=12.0))
    await cluster.submit(cluster.event(destination=URL))
    dispatcher = cluster.dispatcher(
        overrides={KEY: DestinationLimits(concurrency=1)}, poll_interval_seconds=5.0
    )
    await cluster.run(20.0, dispatcher)
    # At 0 s (its one event), then one per poll interval: its end at 12 s claims nothing.
    assert cluster.memory.faults.calls["claim"] == 4


async def test_a_source_breaker_closed_by_its_probe_lets_its_events_be_claimed_at_once(
    cluster: World,
) -> None:
    cluster.receivers.answer(URL, answering(after=12.0))
    await cluster.memory.publish_breaker(source_breaker_key(KEY, "tests"), open=True)
    await cluster.submit(*(cluster.event(destination=URL) for _ in range(3)))
    dispatcher = cluster.dispatcher(poll_interval_seconds=5.0, breaker_cooldown=1.0)
    start = loop_time()
    await cluster.run(30.0, dispatcher)
    probe, *held = [r.at - start for r in cluster.receivers.requests]
    # The probe goes at the first claim after the cool-down; when it succeeds (12 s later) the
    # closed breaker is published and the source's other events are claimed at once, not at
    # the next poll.
    assert 5.0 <= probe < 5.1
    assert len(held) == 2
    assert all(probe + 12.0 <= at < probe + 12.1 for at in held)
