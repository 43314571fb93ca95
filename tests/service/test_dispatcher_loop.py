"""The dispatcher's claim loop: how much one claim takes, when an idle dispatcher looks again,
what wakes it, and what it leaves behind when it stops or fails."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.service.conftest import (
    LoopClock,
    Receivers,
    World,
    answering,
    loop_time,
    registry_of,
)
from timefuse.adapters.memory import MemoryStore
from timefuse.ports.store import (
    Capabilities,
    ClaimBatch,
    ClaimRef,
    ClaimRequest,
    StoreUnavailable,
)
from timefuse.service.dispatcher import Dispatcher, DispatcherSettings
from timefuse.service.gate import DestinationLimits
from timefuse.service.store import Store

pytestmark = pytest.mark.looptime

SLOW = "https://slow.example/hook"
OTHER = "https://other.example/hook"


async def world_on(memory: MemoryStore, clock: LoopClock) -> World:
    store = Store(memory)
    await store.open()
    receivers = Receivers()
    return World(clock, memory, store, receivers, registry_of(receivers.delivery_type()))


@asynccontextmanager
async def dispatching(dispatcher: Dispatcher) -> AsyncIterator[asyncio.Task[None]]:
    """The dispatcher running in the background until the block ends; then stopped."""
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await task


# -- what one claim takes ---------------------------------------------------------------------


async def test_a_dispatcher_with_room_for_one_delivers_one_at_a_time(world: World) -> None:
    events = await world.submit(*(world.event(external_job_id=f"job-{n}") for n in range(3)))
    world.receivers.answer(world.event().destination, answering(after=1.0))

    await world.run(10.0, world.dispatcher(concurrency=1))

    assert (await world.statuses())["COMPLETED"] == 3
    starts = sorted(t for e in events for t in world.receivers.times(e.id))
    assert [b - a for a, b in itertools.pairwise(starts)] == [pytest.approx(1.0, abs=0.05)] * 2


class ClaimSizes(MemoryStore):
    """The in-memory store, noting how many events each claim took."""

    def __init__(self, clock: LoopClock) -> None:
        super().__init__(clock=clock)
        self.sizes: list[int] = []
        self.times: list[float] = []

    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        batch = await super().claim(request)
        self.sizes.append(len(batch.events))
        self.times.append(loop_time())
        return batch


@pytest.mark.parametrize(
    ("limits", "overrides", "first"),
    [
        (DestinationLimits(concurrency=2), {}, 2),
        (DestinationLimits(), {"slow.example:443": DestinationLimits(concurrency=1)}, 1),
    ],
    ids=["the default cap", "its own cap"],
)
async def test_a_first_claim_takes_no_more_of_a_destination_than_its_cap(
    limits: DestinationLimits, overrides: dict[str, DestinationLimits], first: int
) -> None:
    clock = LoopClock()
    memory = ClaimSizes(clock)
    world = await world_on(memory, clock)
    await world.submit(
        *(world.event(external_job_id=f"job-{n}", destination=SLOW) for n in range(6))
    )
    world.receivers.answer(SLOW, answering(after=30.0))

    async with dispatching(world.dispatcher(limits=limits, overrides=overrides)):
        await asyncio.sleep(1.0)

    assert memory.sizes[0] == first


async def test_a_claim_that_filled_its_batch_claims_again_at_once() -> None:
    clock = LoopClock()
    memory = ClaimSizes(clock)
    world = await world_on(memory, clock)
    await world.submit(*(world.event(external_job_id=f"job-{n}") for n in range(5)))
    world.receivers.answer(world.event().destination, answering(after=30.0))

    async with dispatching(world.dispatcher(batch_size=2)):
        await asyncio.sleep(1.0)

    assert memory.sizes[:3] == [2, 2, 1]
    assert memory.times[1:3] == [memory.times[0]] * 2


class SlowClaims(MemoryStore):
    """The in-memory store, taking a quarter of a second to answer each claim."""

    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        await asyncio.sleep(0.25)
        return await super().claim(request)


async def test_the_claim_latency_metric_is_how_long_each_claim_took_the_store() -> None:
    clock = LoopClock()
    world = await world_on(SlowClaims(clock=clock), clock)
    await world.submit(world.event())
    await asyncio.sleep(10.0)  # (the loop's clock is well past zero)

    async with dispatching(world.dispatcher()):
        await asyncio.sleep(2.0)

    samples = {s.name: s.value for s in world.metrics.claim_latency.collect()[0].samples}
    count = samples["timefuse_dispatcher_claim_seconds_count"]
    assert count >= 2
    assert samples["timefuse_dispatcher_claim_seconds_sum"] == pytest.approx(0.25 * count)


# -- short of room: a finished delivery makes it claim at once --------------------------------


async def _found_at(world: World, already: int) -> float:
    """Nine slots, batches of nine, polls a minute apart. ``already`` slow deliveries (10 s)
    start at 0 s; one more, signalled, at 1 s (the dispatcher wakes with ``9 - already``
    slots free, claims it and sleeps again); at 2 s an event becomes due that nobody
    signals. When is it delivered?"""
    world.receivers.answer(SLOW, answering(after=10.0))
    dispatcher = world.dispatcher(concurrency=9, batch_size=9, poll_interval_seconds=60.0)
    slow = [world.event(external_job_id=f"slow-{n}", destination=SLOW) for n in range(already)]
    unsignalled = world.event(external_job_id="quiet", destination=OTHER)
    async with dispatching(dispatcher):
        await world.submit(*slow)
        dispatcher.wakeup.notify()
        await asyncio.sleep(1.0)
        await world.submit(world.event(external_job_id="signalled", destination=SLOW))
        dispatcher.wakeup.notify()
        await asyncio.sleep(1.0)
        assert await world.memory.insert_many([unsignalled]) == {unsignalled.id: unsignalled.id}
        await asyncio.sleep(70.0)
    (at,) = world.receivers.times(unsignalled.id)
    return at


async def test_with_room_for_less_than_half_a_batch_a_finished_delivery_claims_at_once(
    world: World,
) -> None:
    # Three slots free of nine (less than half a batch of nine, 4): the first slow delivery
    # to end, at 10 s, makes the dispatcher claim, and it finds the unsignalled event.
    assert await _found_at(world, already=6) == pytest.approx(10.0, abs=0.1)


async def test_with_room_for_half_a_batch_the_dispatcher_waits_for_its_poll(world: World) -> None:
    # Four slots free of nine (half a batch, rounded down): deliveries ending wake nothing;
    # the poll a minute after the last look finds the event.
    assert await _found_at(world, already=5) == pytest.approx(61.0, abs=0.1)


# -- idle: when it looks again -----------------------------------------------------------------


class TakenElsewhere(MemoryStore):
    """A store whose due events are always taken by another process: every claim comes
    back empty (and is noted), while the due query keeps reporting them due."""

    def __init__(self, clock: LoopClock) -> None:
        super().__init__(clock=clock)
        self.claims: list[float] = []

    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        self.claims.append(loop_time())
        return ClaimBatch([], self._now())


@pytest.mark.parametrize(
    ("poll", "first", "then"),
    [
        # 5 ms times 2 ** (empty claims in a row), up to the poll interval.
        (1.0, [0.005 * 2**k for k in range(1, 8)], [1.0, 1.0]),
        # The doubling stops at 2 ** 16 (about 5.5 minutes), however long the poll interval.
        (1000.0, [0.005 * 2**k for k in range(1, 17)], [327.68, 327.68]),
    ],
    ids=["up to the poll interval", "up to 2**16 times 5 ms"],
)
async def test_empty_claims_back_off_doubling_from_10_ms(
    poll: float, first: list[float], then: list[float]
) -> None:
    clock = LoopClock()
    memory = TakenElsewhere(clock)
    world = await world_on(memory, clock)
    await world.submit(world.event())
    expected = [*first, *then]

    async with dispatching(world.dispatcher(poll_interval_seconds=poll)):
        await asyncio.sleep(sum(expected) + 0.001)

    gaps = [b - a for a, b in itertools.pairwise(memory.claims)]
    assert gaps[: len(expected)] == pytest.approx(expected, abs=0.001)


class ClaimsOneThenNone(TakenElsewhere):
    """The first claim takes one due event; the later ones come back empty, while the due
    query keeps reporting the others due."""

    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        if self.claims:
            return await super().claim(request)
        self.claims.append(loop_time())
        return await MemoryStore.claim(self, replace(request, limit=1))


async def test_after_a_claim_that_took_events_the_back_off_starts_again_from_5_ms() -> None:
    clock = LoopClock()
    memory = ClaimsOneThenNone(clock)
    world = await world_on(memory, clock)
    await world.submit(world.event(external_job_id="a"), world.event(external_job_id="b"))
    world.receivers.answer(world.event().destination, answering(after=30.0))

    async with dispatching(world.dispatcher(poll_interval_seconds=1.0)):
        await asyncio.sleep(0.1)

    gaps = [b - a for a, b in itertools.pairwise(memory.claims)]
    assert gaps[:3] == pytest.approx([0.005, 0.01, 0.02], abs=0.001)


async def test_a_failing_due_query_is_retried_at_the_next_poll(world: World) -> None:
    (event,) = await world.submit(world.event(after=5.0))
    world.memory.faults.fail["next_due"] = [StoreUnavailable("down")]

    await world.run(10.0, world.dispatcher())

    assert world.memory.faults.calls["next_due"] > 1
    (at,) = world.receivers.times(event.id)
    assert at == pytest.approx(5.0, abs=0.1)


async def test_news_of_an_event_due_after_the_next_known_one_does_not_wake_it(
    world: World,
) -> None:
    await world.submit(world.event(after=10.0))
    dispatcher = world.dispatcher(poll_interval_seconds=60.0)

    async with dispatching(dispatcher):
        await asyncio.sleep(1.0)
        claims = world.memory.faults.calls["claim"]
        dispatcher.wakeup.notify(world.clock.now() + timedelta(seconds=30))
        await asyncio.sleep(5.0)
        assert world.memory.faults.calls["claim"] == claims  # still asleep until 10 s
        dispatcher.wakeup.notify(world.clock.now() + timedelta(seconds=1))
        await asyncio.sleep(0.5)
        assert world.memory.faults.calls["claim"] == claims + 1  # sooner news wakes it


async def test_a_dispatcher_given_no_wake_up_signal_keeps_its_own_on_the_stores_clock(
    world: World,
) -> None:
    await world.submit(world.event(after=10.0))
    dispatcher = Dispatcher(
        store=world.store,
        registry=world.registry,
        clock=world.clock,
        metrics=world.metrics,
        settings=DispatcherSettings(worker_id="worker-1", poll_interval_seconds=60.0),
        monotonic=loop_time,
    )

    async with dispatching(dispatcher):
        await asyncio.sleep(1.0)
        claims = world.memory.faults.calls["claim"]
        dispatcher.wakeup.notify_after(30.0)  # due after the event it knows of, at 10 s
        await asyncio.sleep(5.0)
        assert world.memory.faults.calls["claim"] == claims  # still asleep until 10 s
        dispatcher.wakeup.notify_after(1.0)
        await asyncio.sleep(0.5)
        assert world.memory.faults.calls["claim"] == claims + 1  # sooner news wakes it


async def test_a_destination_at_its_cap_is_claimed_again_as_soon_as_a_delivery_there_ends(
    world: World,
) -> None:
    events = await world.submit(
        *(world.event(external_job_id=f"job-{n}", destination=SLOW) for n in range(2))
    )
    world.receivers.answer(SLOW, answering(after=2.0))
    dispatcher = world.dispatcher(
        overrides={"slow.example:443": DestinationLimits(concurrency=1)},
        poll_interval_seconds=60.0,
    )

    async with dispatching(dispatcher):
        await asyncio.sleep(10.0)

    # Left out of claims while full, the destination is claimed when its delivery ends, not
    # at the next poll a minute later.
    starts = sorted(t for e in events for t in world.receivers.times(e.id))
    assert starts == [pytest.approx(0.0, abs=0.01), pytest.approx(2.0, abs=0.1)]


# -- what wakes it from outside, what it leaves behind ----------------------------------------


class WatchedStore(MemoryStore):
    """A store that tells of events other processes make due (as PostgreSQL's notifications
    do): each item put on ``news`` is relayed to the watcher's ``notify``."""

    def __init__(self, clock: LoopClock) -> None:
        super().__init__(clock=clock)
        self.news: asyncio.Queue[datetime | None] = asyncio.Queue()

    @property
    def capabilities(self) -> Capabilities:
        return replace(super().capabilities, due_watcher=self)

    async def watch_due(
        self, notify: Callable[[datetime | None], None], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            news = asyncio.ensure_future(self.news.get())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({news, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if news.done():
                notify(news.result())
            else:
                news.cancel()


async def test_events_another_process_makes_due_wake_the_dispatcher_through_the_store() -> None:
    clock = LoopClock()
    memory = WatchedStore(clock)
    world = await world_on(memory, clock)
    event = world.event(after=2.0)

    async with dispatching(world.dispatcher(poll_interval_seconds=60.0)):
        await asyncio.sleep(1.0)
        # Stored by another process: only the store's notification tells of it.
        assert await memory.insert_many([event]) == {event.id: event.id}
        memory.news.put_nowait(event.next_attempt_at)
        await asyncio.sleep(5.0)

    (at,) = world.receivers.times(event.id)
    assert at == pytest.approx(2.0, abs=0.1)  # at its due time, not at the next poll


async def test_a_failing_breaker_sharer_stops_the_dispatcher_and_is_named(cluster: World) -> None:
    cluster.memory.faults.fail["open_breakers"] = [RuntimeError("unexpected")]
    stop = asyncio.Event()

    with pytest.raises(RuntimeError, match=r"^timefuse-breakers failed$") as caught:
        await asyncio.wait_for(cluster.dispatcher().run(stop), timeout=10.0)

    assert str(caught.value.__cause__) == "unexpected"


async def test_a_stopped_dispatcher_leaves_no_task_behind(world: World) -> None:
    await world.submit(world.event())
    before = asyncio.all_tasks()

    await world.run(2.0, world.dispatcher())

    assert asyncio.all_tasks() == before
    assert (await world.statuses())["COMPLETED"] == 1


class StuckLeaseExtensions(MemoryStore):
    """The in-memory store, whose lease extensions never answer (noted when asked)."""

    def __init__(self, clock: LoopClock) -> None:
        super().__init__(clock=clock)
        self.extensions: list[float] = []

    async def extend_leases(self, refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        self.extensions.append(loop_time())
        await asyncio.Event().wait()
        return 0


async def test_a_lease_extension_the_store_never_answers_does_not_hold_the_shutdown() -> None:
    clock = LoopClock()
    memory = StuckLeaseExtensions(clock)
    world = await world_on(memory, clock)
    await world.submit(world.event())
    world.receivers.answer(world.event().destination, answering(after=8.0))
    stop = asyncio.Event()
    started = loop_time()
    task = asyncio.create_task(world.dispatcher(lease_seconds=10.0).run(stop))
    await asyncio.sleep(7.9)  # past half its lease (5 s) the attempt's lease is extended
    assert memory.extensions

    stop.set()
    await asyncio.wait_for(task, 60.0)

    # it ends once the attempt has (at 8 s), leaving the extension unanswered
    assert loop_time() - started == pytest.approx(8.0, abs=0.1)
    assert (await world.statuses())["COMPLETED"] == 1


@pytest.mark.timeout(10)
async def test_with_no_delivery_type_a_dispatcher_with_room_for_one_looks_once_a_poll(
    world: World,
) -> None:
    # Its claims ask for nothing (no call reaches the store): it must not spin on them.
    await world.submit(world.event())

    await world.run(10.0, world.dispatcher(registry=registry_of(), concurrency=1))

    assert world.memory.faults.calls["next_due"] == 10  # at 0 s, 1 s, ... 9 s
    assert "claim" not in world.memory.faults.calls
    assert (await world.statuses())["PENDING"] == 1
