"""At least once, for real: no accepted event dead-lettered unsent, stuck for good, or lost.

Each test reproduces a way the promise broke under ordinary configurations (a rate or a cap
on a destination, a slow receiver, a skewed clock, a plugin's odd error text, a store that
refuses or stalls) and holds the dispatcher to it: every attempt recorded is a request the
receiver got, and every event for a live receiver is delivered.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
import structlog

from tests.service.conftest import (
    LoopClock,
    Receivers,
    World,
    answering,
    loop_time,
    registry_of,
)
from timefuse.adapters.memory import MemoryStore
from timefuse.domain.event import Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import (
    ClaimBatch,
    ClaimRef,
    ClaimRequest,
    OutcomeUpdate,
    StoreRefused,
    StoreUnavailable,
)
from timefuse.service.gate import DestinationLimits
from timefuse.service.presence import Presence
from timefuse.service.store import Store

pytestmark = pytest.mark.looptime


async def assert_every_attempt_was_a_request(world: World, events: Sequence[Event]) -> None:
    """The attempt history of each event matches what its receiver got, one for one."""
    received = world.receivers.received()
    for event in events:
        history = await world.store.attempts(event.id)
        assert [r.error for r in history if r.error == LEASE_EXPIRED_ERROR] == [], (
            f"{event.id}: an attempt counted by lease recovery was never made"
        )
        assert len(history) == received[event.id], f"{event.id}: attempts != requests"


# -- 1. held events outlive their lease -------------------------------------------------------


async def test_a_rate_limited_backlog_is_delivered_without_a_lease_expiring(world: World) -> None:
    url = "https://metered.example/hook"
    events = await world.submit(*(world.event(destination=url) for _ in range(40)))
    dispatcher = world.dispatcher(
        lease_seconds=4.0, overrides={"metered.example:443": DestinationLimits(rate=1.0, burst=1)}
    )
    await world.run(120.0, dispatcher, maintenance=world.maintenance())
    assert await world.statuses() == Counter({"COMPLETED": 40})
    assert world.receivers.received(url) == Counter({e.id: 1 for e in events})
    await assert_every_attempt_was_a_request(world, events)
    times = sorted(r.at for r in world.receivers.requests)
    assert all(b - a >= 0.99 for a, b in itertools.pairwise(times))  # 1/s held


async def test_a_slow_destinations_backlog_does_not_starve_a_healthy_one(world: World) -> None:
    slow = "https://metered.example/hook"
    healthy = "https://healthy.example/hook"
    await world.submit(*(world.event(destination=slow) for _ in range(100)))
    fresh = await world.submit(*(world.event(after=2.0, destination=healthy) for _ in range(20)))
    dispatcher = world.dispatcher(
        lease_seconds=4.0, overrides={"metered.example:443": DestinationLimits(rate=1.0)}
    )
    start = loop_time()
    await world.run(10.0, dispatcher, maintenance=world.maintenance())
    for event in fresh:
        (at,) = world.receivers.times(event.id)
        assert at - start < 2.5, "the healthy destination's events waited"


async def test_tokens_are_spent_only_on_events_that_are_sent(world: World) -> None:
    url = "https://metered.example/hook"
    await world.submit(*(world.event(destination=url) for _ in range(300)))
    limits = {"metered.example:443": DestinationLimits(rate=10.0, burst=10)}
    dispatcher = world.dispatcher(lease_seconds=8.0, overrides=limits)
    await world.run(20.0, dispatcher, maintenance=world.maintenance())
    # 10 at once then 10 a second: about 200 in 19 s, whatever was claimed and handed back.
    assert 195 <= len(world.receivers.requests) <= 210
    assert world.receivers.received(url).most_common(1)[0][1] == 1


# -- 2. a destination queue that wedges -------------------------------------------------------


async def test_a_capped_destination_with_a_slow_receiver_never_wedges(world: World) -> None:
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=25.0))
    events = await world.submit(*(world.event(destination=url) for _ in range(10)))
    dispatcher = world.dispatcher(limits=DestinationLimits(concurrency=2))
    await world.run(200.0, dispatcher, maintenance=world.maintenance())
    assert await world.statuses() == Counter({"COMPLETED": 10})
    assert world.receivers.most_in_flight[url] == 2
    await assert_every_attempt_was_a_request(world, events)


# -- 4. one error string stops outcome writing ------------------------------------------------


@pytest.mark.parametrize("error", ["NUL \x00 in the middle", "a lone \ud83d surrogate"])
async def test_a_delivery_types_unstorable_error_text_is_made_storable(
    world: World, error: str
) -> None:
    url = "https://odd.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.retriable(error, 500)))
    odd = await world.submit(world.event(destination=url, max_retries=0))
    healthy = await world.submit(*(world.event() for _ in range(5)))
    await world.run(10.0, world.dispatcher())
    stored = await world.stored(odd[0])
    assert stored.status is EventStatus.DEAD_LETTER
    assert "\ufffd" in (stored.last_error or "")
    assert {(await world.stored(e)).status for e in healthy} == {EventStatus.COMPLETED}


class RefusingStore(MemoryStore):
    """Refuses any batch of outcomes holding one whose error text it dislikes."""

    def __init__(self, clock: LoopClock, poison: str) -> None:
        super().__init__(clock=clock)
        self.poison = poison

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        if any(u.last_error and self.poison in u.last_error for u in updates):
            raise StoreRefused("the store can't take this text")
        return await super().record_outcomes(updates)


async def test_an_outcome_the_store_refuses_does_not_hold_up_the_others() -> None:
    clock = LoopClock()
    memory = RefusingStore(clock, poison="\u2603")
    world = await _world_on(memory, clock)
    url = "https://snowman.example/hook"
    world.receivers.answer(url, answering(DeliveryOutcome.retriable("\u2603 melted", 503)))
    (odd,) = await world.submit(world.event(destination=url, max_retries=0))
    healthy = await world.submit(*(world.event() for _ in range(30)))
    await world.run(10.0, world.dispatcher())
    assert {(await world.stored(e)).status for e in healthy} == {EventStatus.COMPLETED}
    stored = await world.stored(odd)
    # Written without the text the store refused: the status is right, the reason says so.
    assert stored.status is EventStatus.DEAD_LETTER
    assert stored.last_error == "the delivery type's error text could not be stored"


async def _world_on(memory: MemoryStore, clock: LoopClock) -> World:
    receivers = Receivers()
    store = Store(memory)
    await store.open()
    return World(clock, memory, store, receivers, registry_of(receivers.delivery_type()))


async def test_a_dead_outcome_writer_ends_the_dispatcher(world: World) -> None:
    world.memory.faults.fail["record_outcomes"] = [RuntimeError("the writer's bug")]
    await world.submit(world.event())
    dispatcher = world.dispatcher()
    stop = asyncio.Event()
    with pytest.raises(RuntimeError, match=r"^timefuse-outcome-writer failed$"):
        await asyncio.wait_for(dispatcher.run(stop), 30.0)


async def test_a_dead_lease_keeper_ends_the_dispatcher(world: World) -> None:
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=60.0))
    world.registry = registry_of(world.receivers.delivery_type(timeout=120.0))
    world.memory.faults.fail["extend_leases"] = [RuntimeError("the keeper's bug")]
    await world.submit(world.event(destination=url))
    dispatcher = world.dispatcher(lease_seconds=8.0)
    with pytest.raises(RuntimeError, match=r"^timefuse-lease-keeper failed$"):
        await asyncio.wait_for(dispatcher.run(asyncio.Event()), 30.0)


async def test_a_claim_that_succeeds_ends_the_growing_pauses(world: World) -> None:
    tried: list[float] = []
    claim = world.memory.claim

    async def flaky_claim(request: ClaimRequest) -> ClaimBatch:
        tried.append(loop_time())
        if len(tried) != 4:  # refused, except the fourth time
            raise StoreUnavailable("down")
        return await claim(request)

    world.memory.claim = flaky_claim  # type: ignore[method-assign]
    await world.run(30.0, world.dispatcher(), until=lambda: len(tried) >= 8)
    pauses = [round(b - a, 3) for a, b in itertools.pairwise(tried)]
    # 1, 2, 3 s after the first three refusals; the poll interval after the success (nothing
    # was due); then 1, 2, 3 s again: the next outage starts from the shortest pause.
    assert pauses[:7] == [1.0, 2.0, 3.0, 1.0, 1.0, 2.0, 3.0]


async def test_claims_the_store_refuses_are_tried_again_after_growing_pauses(
    world: World,
) -> None:
    tried: list[float] = []
    logged: list[int] = []  # outage warnings logged before each try
    claim = world.memory.claim

    async def timed_claim(request: ClaimRequest) -> ClaimBatch:
        tried.append(loop_time())
        logged.append(sum(e["event"] == "claiming failed; retrying" for e in logs))
        return await claim(request)

    world.memory.claim = timed_claim  # type: ignore[method-assign]
    world.memory.faults.down.add("claim")
    (event,) = await world.submit(world.event())
    with structlog.testing.capture_logs() as logs:
        await world.run(200.0, world.dispatcher(), until=lambda: len(tried) >= 41)
    # One second more after each failure, up to five: the store isn't asked 100 times a
    # second while it is down, nor left alone for minutes once it is back.
    pauses = [round(b - a, 3) for a, b in itertools.pairwise(tried)]
    assert pauses == [1.0, 2.0, 3.0, 4.0] + [5.0] * 36
    # The outage is logged at its first failure and at every 30th, not at each.
    assert logged == [0] + [1] * 29 + [2] * 11
    assert {e["log_level"] for e in logs if e["event"] == "claiming failed; retrying"} == {
        "warning"
    }
    world.memory.faults.down.clear()
    await world.run(2.0, world.dispatcher())
    assert (await world.stored(event)).status is EventStatus.COMPLETED


async def test_outcomes_wait_out_a_store_outage_with_growing_pauses(world: World) -> None:
    events = await world.submit(*(world.event() for _ in range(5)))
    dispatcher = world.dispatcher()

    async def outage() -> None:
        await asyncio.sleep(0.5)
        world.memory.faults.down.add("record_outcomes")
        await asyncio.sleep(20.0)
        world.memory.faults.down.discard("record_outcomes")

    more = [world.event(after=1.0) for _ in range(5)]
    await world.submit(*more)
    task = asyncio.create_task(outage())
    await world.run(30.0, dispatcher)
    await task
    assert {(await world.stored(e)).status for e in (*events, *more)} == {EventStatus.COMPLETED}
    # Backing off up to 2 s: a 20 s outage costs about 15 tries, not a thousand.
    assert world.memory.faults.calls["record_outcomes"] < 30


# -- 5. clock skew ------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [35.0, -35.0, 600.0])
async def test_a_dispatcher_whose_clock_is_off_still_delivers_on_the_stores_time(
    world: World, skew: float
) -> None:
    events = await world.submit(*(world.event(after=2.0) for _ in range(20)))
    start = loop_time()
    dispatcher = world.dispatcher(clock=LoopClock(skew_seconds=skew))
    await world.run(10.0, dispatcher, maintenance=world.maintenance())
    for event in events:
        (at,) = world.receivers.times(event.id)
        assert 2.0 <= at - start < 2.2
    await assert_every_attempt_was_a_request(world, events)


# -- 8. a dead receiver's backlog -------------------------------------------------------------


async def test_a_dead_receivers_backlog_does_not_delay_healthy_events(world: World) -> None:
    dead = "https://dead.example/hook"
    world.receivers.answer(dead, answering(DeliveryOutcome.retriable("refused", None)))
    await world.submit(*(world.event(destination=dead, max_retries=10) for _ in range(5000)))
    healthy = []
    start = loop_time()
    for second in range(3, 60, 3):
        healthy.extend(await world.submit(world.event(after=float(second))))
    await world.run(62.0, world.dispatcher(breaker_cooldown=10.0), maintenance=world.maintenance())
    late = []
    for event in healthy:
        (at,) = world.receivers.times(event.id)
        due = (event.scheduled_at - world.clock.now()).total_seconds() + loop_time() - start
        late.append(at - start - due)
    assert max(late) < 0.5, late
    # The first round (the destination's cap of 100) fails, the breaker opens, then one
    # probe per 10 s cooldown: a few hundred requests at most, not 5,000 times the retries.
    assert len(world.receivers.requests) - len(healthy) < 300


# -- 9. attempts longer than the lease --------------------------------------------------------


async def test_an_attempt_longer_than_the_lease_keeps_its_claim(world: World) -> None:
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=80.0))
    world.registry = registry_of(world.receivers.delivery_type(timeout=120.0))
    (event,) = await world.submit(world.event(destination=url))
    await world.run(100.0, world.dispatcher(lease_seconds=20.0), maintenance=world.maintenance())
    assert len(world.receivers.times(event.id)) == 1
    stored = await world.stored(event)
    assert (stored.status, stored.retry_count) == (EventStatus.COMPLETED, 0)
    (record,) = await world.store.attempts(event.id)
    assert record.outcome is OutcomeKind.SUCCESS
    assert record.duration_ms == pytest.approx(80_000, rel=0.01)


# -- 11. an unknown delivery type -------------------------------------------------------------


async def test_an_event_of_a_type_this_process_lacks_waits_for_one_that_has_it(
    world: World,
) -> None:
    newer = world.event(delivery_type="pigeon", destination="coop")
    await world.submit(newer, world.event())
    await world.run(10.0, world.dispatcher(), maintenance=world.maintenance())
    waiting = await world.stored(newer)
    assert (waiting.status, waiting.attempts, waiting.retry_count) == (EventStatus.PENDING, 0, 0)
    assert await world.store.attempts(newer.id) == []
    # The maintenance leader's gauge shows it waiting.
    due = world.metrics.registry.get_sample_value(
        "timefuse_events_due", {"delivery_type": "pigeon"}
    )
    assert due == 1
    upgraded = registry_of(world.receivers.delivery_type(), world.receivers.delivery_type("pigeon"))
    await world.run(5.0, world.dispatcher("worker-2", registry=upgraded))
    assert (await world.stored(newer)).status is EventStatus.COMPLETED


# -- 12. lease recovery behind a long retention pass ------------------------------------------


async def test_lease_recovery_goes_on_while_retention_is_slow(world: World) -> None:
    world.memory.faults.stall["delete_finished_before"] = asyncio.Event()  # never set
    (event,) = await world.submit(world.event())
    await world.memory.claim(ClaimRequest("crashed-worker", 10, 2.0))
    await world.run(8.0, maintenance=world.maintenance())
    stored = await world.stored(event)
    assert (stored.status, stored.retry_count) == (EventStatus.PENDING, 1)


async def test_a_dead_workers_claims_come_back_in_seconds_not_at_lease_end(
    world: World,
) -> None:
    (event,) = await world.submit(world.event())
    # A worker that beat once, claimed the event, then vanished (SIGKILL) with a long lease.
    await _presence(world, "worker-dead").beat()
    await world.memory.claim(ClaimRequest("worker-dead", 10, 600.0))
    start = loop_time()
    await world.run(
        20.0, world.dispatcher("worker-live"), maintenance=world.maintenance(dead_after_seconds=5.0)
    )
    (at,) = world.receivers.times(event.id)
    assert 5.0 < at - start < 7.5


def _presence(world: World, worker: str) -> Presence:
    return Presence(world.store, worker=worker, roles=["dispatch"], started_at=datetime.now(UTC))


async def test_a_store_refusing_claims_leaves_everything_pending(world: World) -> None:
    world.memory.faults.down.add("claim")
    events = await world.submit(*(world.event() for _ in range(5)))
    await world.run(5.0, world.dispatcher())
    assert {(await world.stored(e)).status for e in events} == {EventStatus.PENDING}
    world.memory.faults.down.clear()
    await world.run(5.0, world.dispatcher())
    assert {(await world.stored(e)).status for e in events} == {EventStatus.COMPLETED}


async def test_a_running_attempts_lease_is_renewed_once_past_half_its_length(
    world: World,
) -> None:
    # Looked at every quarter of a lease, renewed at the first look past its half: every
    # three quarters of a lease while the attempt lasts, a full lease ahead each time.
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=20.0))
    renewed: list[tuple[float, float]] = []  # (when, seconds of lease left after)
    extend = world.memory.extend_leases

    async def timed(refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        count = await extend(refs, lease_seconds)
        stored = await world.stored(event)
        assert stored.lock_expires_at is not None
        left = (stored.lock_expires_at - world.clock.now()).total_seconds()
        renewed.append((round(loop_time(), 3), left))
        return count

    world.memory.extend_leases = timed  # type: ignore[method-assign]
    (event,) = await world.submit(world.event(destination=url))
    await world.run(25.0, world.dispatcher(lease_seconds=4.0))
    assert (await world.stored(event)).status is EventStatus.COMPLETED
    assert renewed == [(t, 4.0) for t in (3.0, 6.0, 9.0, 12.0, 15.0, 18.0)]


async def test_a_lease_renewal_the_store_refuses_is_tried_again_at_the_next_look(
    world: World,
) -> None:
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=8.0))
    tried: list[float] = []
    extend = world.memory.extend_leases

    async def refused_once(refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        tried.append(round(loop_time(), 3))
        if len(tried) == 1:
            raise StoreUnavailable("down")
        return await extend(refs, lease_seconds)

    world.memory.extend_leases = refused_once  # type: ignore[method-assign]
    (event,) = await world.submit(world.event(destination=url))
    await world.run(10.0, world.dispatcher(lease_seconds=4.0))
    assert (await world.stored(event)).status is EventStatus.COMPLETED
    # Refused at 3 s, tried again a quarter lease later, then every three quarters.
    assert tried == [3.0, 4.0, 7.0]


async def test_an_attempt_still_running_at_the_shutdown_timeout_is_cut_off_and_handed_back(
    world: World,
) -> None:
    url = "https://slow.example/hook"
    cut_off: list[float] = []

    async def slow(event: Event, attempt: int) -> DeliveryOutcome:
        try:
            await asyncio.sleep(30.0)
        except asyncio.CancelledError:
            cut_off.append(loop_time())
            raise
        return DeliveryOutcome.success(200)

    world.receivers.answer(url, slow)
    (event,) = await world.submit(world.event(destination=url))
    await world.run(1.0, world.dispatcher(shutdown_timeout_seconds=2.0))
    # Stopped at 1 s, waited 2 s for the attempt, then cut it off: it goes back uncounted.
    assert cut_off == [3.0]
    stored = await world.stored(event)
    assert (stored.status, stored.attempts, stored.locked_by) == (EventStatus.PENDING, 0, None)


@pytest.mark.parametrize(
    "stopped_at",
    [
        # The 8 s lease is past half spent at the stop: renewed on the keeper's way out.
        5.5,
        # Not yet half spent: nothing to renew at the stop; only a keeper that goes on while
        # the shutdown waits renews it before it runs out at 8 s.
        3.5,
    ],
)
async def test_an_attempt_finishing_during_shutdown_keeps_its_lease_until_it_ends(
    world: World, stopped_at: float
) -> None:
    # The attempt ends at 10 s, within the 10 s shutdown timeout but after the lease taken at
    # the claim would have run out. Its lease is renewed meanwhile, so lease recovery never
    # takes the event back from an attempt still running, and its success is what is stored.
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=10.0))
    (event,) = await world.submit(world.event(destination=url))
    dispatcher = world.dispatcher(lease_seconds=8.0, shutdown_timeout_seconds=10.0)
    maintenance = world.maintenance()
    stop, maintenance_stop = asyncio.Event(), asyncio.Event()
    dispatching = asyncio.create_task(dispatcher.run(stop))
    maintaining = asyncio.create_task(maintenance.run(maintenance_stop))
    await asyncio.sleep(stopped_at)
    stop.set()
    await dispatching
    await asyncio.sleep(2.0)
    maintenance_stop.set()
    await maintaining
    assert loop_time() == pytest.approx(12.0, abs=0.1)
    stored = await world.stored(event)
    assert (stored.status, stored.attempts) == (EventStatus.COMPLETED, 1)
    assert len(world.receivers.requests) == 1
