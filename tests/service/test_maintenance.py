"""Maintenance on the in-memory store: one leader at a time, recovery, retention, gauges."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.service.conftest import LoopClock, World, answering, loop_time
from timefuse.adapters.memory import MemoryStore
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import (
    Capabilities,
    ClaimRequest,
    StoreUnavailable,
    WorkerBeat,
    WorkerRecord,
)
from timefuse.service.presence import Presence
from timefuse.service.store import Store
from timefuse.testing.factories import make_outcome

pytestmark = pytest.mark.looptime

START = datetime(2026, 1, 1, tzinfo=UTC)


async def test_one_of_several_processes_leads_and_another_takes_over_when_it_stops(
    world: World,
) -> None:
    first = world.maintenance("first")
    second = world.maintenance("second")
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    running = [
        asyncio.create_task(first.run(stop_first)),
        asyncio.create_task(second.run(stop_second)),
    ]
    await asyncio.sleep(3.0)
    assert [first.leading, second.leading].count(True) == 1
    leader, stop_leader = (first, stop_first) if first.leading else (second, stop_second)
    other = second if leader is first else first
    stop_leader.set()  # a graceful stop gives the leadership up at once
    await asyncio.sleep(2.0)
    assert other.leading
    stop_first.set()
    stop_second.set()
    await asyncio.gather(*running)


async def test_a_leader_that_stops_renewing_loses_leadership_after_its_time(
    world: World,
) -> None:
    assert await world.store.acquire_leadership("maintenance", "hung", 10.0)
    other = world.maintenance("other", dead_after_seconds=10.0)
    stop = asyncio.Event()
    task = asyncio.create_task(other.run(stop))
    await asyncio.sleep(9.0)
    assert not other.leading
    await asyncio.sleep(2.5)
    assert other.leading
    stop.set()
    await task


async def test_a_long_dead_after_time_still_lets_a_hung_leaders_leadership_lapse_in_10_s(
    world: World,
) -> None:
    # A leader with a dead-after time of 300 s takes leadership for 10 s at most: killed, it
    # holds recovery and the schedule planner up no longer than that.
    leader = world.maintenance("leader", dead_after_seconds=300.0)
    assert await leader._lead()  # takes leadership once, then hangs: no renewal, no release
    other = world.maintenance("other", dead_after_seconds=300.0)
    stop = asyncio.Event()
    task = asyncio.create_task(other.run(stop))
    await asyncio.sleep(9.5)
    assert not other.leading
    await asyncio.sleep(2.0)  # 10 s, and the round that finds it lapsed
    assert other.leading
    stop.set()
    await task


class SlowWorkersStore(MemoryStore):
    """The in-memory store whose worker listing (read by every recovery round) is slow."""

    async def workers(self) -> list[WorkerRecord]:
        await asyncio.sleep(1.2)
        return await super().workers()


async def test_a_leader_renews_its_short_leadership_in_time_even_with_slow_rounds() -> None:
    clock = LoopClock()
    memory = SlowWorkersStore(clock=clock)
    store = Store(memory)
    await store.open()
    world = World(clock, memory, store, None, None)  # type: ignore[arg-type]
    # A round of 1.2 s of recovery plus the wait between rounds: the leadership of 2 s
    # must be renewed more often than once a second, or the leader loses it between rounds.
    leader = world.maintenance("leader", dead_after_seconds=2.0)
    other = world.maintenance("other", dead_after_seconds=2.0)
    stop = asyncio.Event()
    leading = asyncio.create_task(leader.run(stop))
    await asyncio.sleep(0.1)
    following = asyncio.create_task(other.run(stop))
    for _ in range(20):
        await asyncio.sleep(0.5)
        assert (leader.leading, other.leading) == (True, False)
    stop.set()
    await asyncio.gather(leading, following)


async def test_a_killed_leaders_claims_come_back_within_the_dead_after_time(
    world: World,
) -> None:
    (event,) = await world.submit(world.event())
    dead_after = 5.0
    await Presence(world.store, worker="leader", roles=["dispatch"], started_at=START).beat()
    leader = world.maintenance("leader", dead_after_seconds=dead_after)
    leading = asyncio.create_task(leader.run(asyncio.Event()))
    await asyncio.sleep(0.5)
    assert leader.leading
    await world.memory.claim(ClaimRequest("leader", 10, 600.0))
    # Then it vanishes (SIGKILL): it neither beats nor renews nor gives its leadership up.
    world.memory.faults.down.add("release_leadership")
    leading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leading
    world.memory.faults.down.clear()
    follower = world.maintenance("follower", dead_after_seconds=dead_after)
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))
    await asyncio.sleep(dead_after - 0.5)
    assert (await world.stored(event)).status is EventStatus.PROCESSING  # not judged early
    await asyncio.sleep(2.0)  # the leadership lapsed and the leader is dead: one round later
    assert follower.leading
    stored = await world.stored(event)
    assert (stored.status, stored.retry_count) == (EventStatus.PENDING, 1)
    stop.set()
    await task


async def test_only_the_leader_recovers_lost_claims(world: World) -> None:
    (event,) = await world.submit(world.event(max_retries=3))
    await world.memory.claim(ClaimRequest("crashed", 10, 1.0))
    assert await world.store.acquire_leadership("maintenance", "someone-else", 60.0)
    await world.run(5.0, maintenance=world.maintenance("follower"))
    assert (await world.stored(event)).status is EventStatus.PROCESSING
    await world.store.release_leadership("maintenance", "someone-else")
    await world.run(3.0, maintenance=world.maintenance("follower"))
    assert (await world.stored(event)).status is EventStatus.PENDING


async def test_recovered_claims_wake_the_dispatcher_at_once(world: World) -> None:
    event = await held_by_a_crashed_worker(world)
    await asyncio.sleep(6.0)  # the crashed worker is silent past the dead-after time (5 s)
    dispatcher = world.dispatcher(poll_interval_seconds=60.0)
    maintenance = world.maintenance("leader", wakeup=dispatcher.wakeup)
    started = loop_time()

    await world.run(10.0, dispatcher, maintenance=maintenance)

    # Recovered in the leader's first round, delivered then, not at the next poll.
    (at,) = world.receivers.times(event.id)
    assert at - started == pytest.approx(0.0, abs=0.1)


async def test_a_worker_silent_past_the_dead_after_time_when_a_leader_starts_is_dead_at_once(
    world: World,
) -> None:
    # A new leader that has not lost touch with the store takes the store's word on silence.
    event = await held_by_a_crashed_worker(world)
    await asyncio.sleep(6.0)
    stop = asyncio.Event()
    task = asyncio.create_task(world.maintenance("leader", dead_after_seconds=5.0).run(stop))

    await asyncio.sleep(0.5)

    stored = await world.stored(event)
    assert (stored.status, stored.retry_count) == (EventStatus.PENDING, 1)
    stop.set()
    await task


async def test_a_maintenance_not_yet_run_does_not_lead_nor_give_up_anothers_leadership(
    world: World,
) -> None:
    # A process restarted under its predecessor's name, whose leadership still runs.
    assert await world.store.acquire_leadership("maintenance", "maintainer", 10.0)
    maintenance = world.maintenance("maintainer")
    assert maintenance.leading is False

    stopped = asyncio.Event()
    stopped.set()
    await maintenance.run(stopped)  # stopped before its first round

    assert not await world.store.acquire_leadership("maintenance", "another", 10.0)


async def test_retention_deletes_old_finished_events_and_keeps_the_rest(world: World) -> None:
    done, waiting = await world.submit(world.event(), world.event(after=86_400 * 30))
    (claimed,) = (await world.memory.claim(ClaimRequest("w", 1, 60.0))).events
    await world.store.record_outcomes([make_outcome(claimed)])
    await asyncio.sleep(86_400 * 8)  # eight days later (fake time)
    await world.run(5.0, maintenance=world.maintenance(retention_days=7))
    assert await world.store.get(done.id) is None
    assert (await world.stored(waiting)).status is EventStatus.PENDING


async def test_the_status_gauges_are_refreshed_by_the_leader(world: World) -> None:
    await world.submit(*(world.event(after=600.0) for _ in range(3)))
    await world.run(2.0, maintenance=world.maintenance())
    registry = world.metrics.registry
    assert registry.get_sample_value("timefuse_events", {"status": "PENDING"}) == 3


async def test_silent_workers_are_forgotten_after_a_day(world: World) -> None:
    await world.store.heartbeat(WorkerBeat("gone", ("dispatch",), datetime.now(UTC), 0))
    await asyncio.sleep(timedelta(days=1, seconds=5).total_seconds())
    await world.run(2.0, maintenance=world.maintenance())
    assert await world.store.workers() == []


async def test_a_process_beats_at_its_pace_with_what_it_has_in_flight(world: World) -> None:
    started = world.clock.now()
    load = iter(range(100))
    presence = Presence(
        world.store,
        worker="dispatch-7",
        roles=["maintenance", "dispatch"],
        started_at=started,
        every_seconds=2.0,
        in_flight=lambda: next(load),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(presence.run(stop))
    await asyncio.sleep(5.0)  # beats at 0, 2 and 4 s
    (record,) = await world.store.workers()
    assert (record.worker, record.roles, record.started_at) == (
        "dispatch-7",
        ("dispatch", "maintenance"),
        started,
    )
    assert record.in_flight == 2  # the third beat's count
    assert record.silent_seconds == pytest.approx(1.0)
    assert world.memory.faults.calls["heartbeat"] == 3
    stop.set()
    await task


async def test_heartbeats_go_on_through_a_store_outage(world: World) -> None:
    presence = Presence(world.store, worker="w", roles=["api"], started_at=world.clock.now())
    world.memory.faults.down.add("heartbeat")
    stop = asyncio.Event()
    task = asyncio.create_task(presence.run(stop))
    await asyncio.sleep(3.5)
    assert world.memory.faults.calls["heartbeat"] == 4  # tried every second all along
    world.memory.faults.down.clear()
    await asyncio.sleep(1.0)
    (record,) = await world.store.workers()
    assert record.silent_seconds < 1.0
    stop.set()
    await task


class PlanningStore(MemoryStore):
    """The in-memory store with a storage planner (as PostgreSQL's partitions are)."""

    def __init__(self, clock: LoopClock) -> None:
        super().__init__(clock=clock)
        self.plans: list[float] = []

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(storage_planner=self)

    async def prepare_storage(self) -> list[str]:
        self.plans.append(loop_time())
        return [f"events_p{len(self.plans)}"]


async def test_the_leader_prepares_storage_ahead_once_per_upkeep_period() -> None:
    clock = LoopClock()
    memory = PlanningStore(clock)
    store = Store(memory)
    await store.open()
    world = World(clock, memory, store, None, None)  # type: ignore[arg-type]
    maintenance = world.maintenance(upkeep_every_seconds=10.0)
    start = loop_time()
    await world.run(25.0, maintenance=maintenance)
    assert [round(t - start) for t in memory.plans] == [0, 10, 20]
    assert await maintenance.prepare_storage() == ["events_p4"]


async def test_without_a_storage_planner_there_is_nothing_to_prepare(world: World) -> None:
    assert await world.maintenance().prepare_storage() == []


async def test_a_failed_retention_pass_is_tried_again_at_the_next_round(world: World) -> None:
    world.memory.faults.fail["delete_finished_before"] = [StoreUnavailable("down")]
    await world.run(3.5, maintenance=world.maintenance(retention_every_seconds=3600.0))
    # Rounds at 0, 1, 2, 3 s: failed at the first, done at the second, then not for an hour.
    assert world.memory.faults.calls["delete_finished_before"] == 2


async def test_a_slow_retention_pass_is_not_started_twice(world: World) -> None:
    stalled = asyncio.Event()
    world.memory.faults.stall["delete_finished_before"] = stalled
    await world.run(5.0, maintenance=world.maintenance(retention_every_seconds=1.0))
    assert world.memory.faults.calls["delete_finished_before"] == 1
    stalled.set()


async def test_the_status_gauges_show_zero_for_statuses_with_no_event(world: World) -> None:
    await world.submit(world.event(after=600.0))
    await world.run(2.0, maintenance=world.maintenance())
    gauge = world.metrics.registry.get_sample_value
    assert [gauge("timefuse_events", {"status": s.value}) for s in EventStatus] == [
        1.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
    ]


async def test_after_a_store_outage_live_workers_get_time_to_beat_before_being_declared_dead(
    world: World,
) -> None:
    # Slow deliveries keep the worker's claims in flight across the outage.
    world.receivers.answer(world.event().destination, answering(after=25.0))
    events = await world.submit(*(world.event() for _ in range(3)))
    faults = world.memory.faults

    async def outage() -> None:
        await asyncio.sleep(2.0)
        faults.down.add("*")
        await asyncio.sleep(8.0)
        faults.down.discard("*")
        # The worker's connections come back a little after the leader's.
        faults.down.add("heartbeat")
        await asyncio.sleep(2.0)
        faults.down.discard("heartbeat")

    alive = Presence(world.store, worker="worker-1", roles=["dispatch"], started_at=START)
    stop_beating = asyncio.Event()
    beating = asyncio.create_task(alive.run(stop_beating))
    task = asyncio.create_task(outage())
    await world.run(60.0, world.dispatcher("worker-1"), maintenance=world.maintenance("leader"))
    await task
    stop_beating.set()
    await beating

    assert [(await world.stored(e)).status for e in events] == [EventStatus.COMPLETED] * 3
    assert world.receivers.received() == Counter({e.id: 1 for e in events})
    assert world.metrics.leases_recovered._value.get() == 0


async def held_by_a_crashed_worker(world: World) -> Event:
    """An event claimed by a worker that beat once, then crashed."""
    (event,) = await world.submit(world.event(max_retries=3))
    await world.memory.heartbeat(WorkerBeat("crashed", ("dispatch",), world.clock.now()))
    await world.memory.claim(ClaimRequest("crashed", 10, 600.0))
    return event


async def test_a_worker_still_silent_after_the_outage_is_declared_dead_and_its_claims_return(
    world: World,
) -> None:
    event = await held_by_a_crashed_worker(world)
    faults = world.memory.faults

    async def outage() -> None:
        faults.down.add("*")
        await asyncio.sleep(8.0)
        faults.down.discard("*")

    task = asyncio.create_task(outage())
    start = loop_time()
    await world.run(
        30.0,
        maintenance=world.maintenance("leader"),
        until=lambda: world.memory.snapshot()[event.id].status is EventStatus.PENDING,
    )
    await task

    assert (await world.stored(event)).status is EventStatus.PENDING
    # Back after the 8 s outage plus the 5 s the leader waits after it: not before.
    assert 13.0 <= loop_time() - start <= 16.0


async def test_a_worker_back_between_the_listing_and_the_recovery_keeps_its_new_claim(
    world: World,
) -> None:
    back = Presence(world.store, worker="worker-back", roles=["dispatch"], started_at=START)
    await back.beat()
    await asyncio.sleep(6.0)  # cut off from the store for longer than the dead-after time
    maintenance = world.maintenance(dead_after_seconds=5.0)
    faults = world.memory.faults
    stalled = asyncio.Event()  # the recovery call waits (for a pool connection, say)
    faults.stall["recover_expired_leases"] = stalled
    recovering = asyncio.create_task(maintenance.recover())
    await asyncio.sleep(0.01)
    # It listed the workers (silent 6 s: dead) and is now stuck in the recovery call.
    assert (faults.calls["workers"], faults.calls["recover_expired_leases"]) == (1, 1)
    await back.beat()  # back, and claims an event on its last allowed attempt
    (event,) = await world.submit(
        world.event(max_retries=0, failure_callback_url="https://client.example/failed")
    )
    (claimed,) = (await world.store.claim(ClaimRequest("worker-back", 10, 30.0))).events
    stalled.set()

    assert await recovering == 0
    stored = await world.stored(event)
    assert (stored.status, stored.locked_by, stored.retry_count) == (
        EventStatus.PROCESSING,
        "worker-back",
        0,
    )
    assert await world.store.find_by_external_id(f"callback/{event.id}") == []  # no notice
    # Its delivery's outcome is taken: no duplicate, no false failure.
    assert await world.store.record_outcomes([make_outcome(claimed)]) == frozenset({event.id})
    assert world.metrics.leases_recovered._value.get() == 0


async def test_a_dispatcher_whose_heartbeats_fail_claims_nothing_the_leader_would_take_back(
    world: World,
) -> None:
    # Its heartbeats fail from 0 to 8 s while its claims would succeed; a delivery takes 10 s.
    world.receivers.answer(world.event().destination, answering(after=10.0))
    presence = Presence(
        world.store,
        worker="worker-1",
        roles=["dispatch"],
        started_at=START,
        dead_after_seconds=5.0,
        monotonic=loop_time,
    )
    await presence.beat()
    faults = world.memory.faults
    faults.down.add("heartbeat")
    await asyncio.sleep(3.0)
    (event,) = await world.submit(world.event(max_retries=3))

    async def heal() -> None:
        await asyncio.sleep(5.0)
        faults.down.discard("heartbeat")

    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(presence.run(stop)),
        asyncio.create_task(world.dispatcher("worker-1").run(stop, presence=presence)),
        asyncio.create_task(world.maintenance("leader", dead_after_seconds=5.0).run(stop)),
        asyncio.create_task(heal()),
    ]
    await asyncio.sleep(4.5)
    # Silent long enough to be judged dead: it claims only once the store hears of it.
    assert (await world.stored(event)).status is EventStatus.PENDING
    assert world.memory.faults.calls.get("claim", 0) == 0
    await asyncio.sleep(15.0)
    stop.set()
    await asyncio.gather(*tasks)

    stored = await world.stored(event)
    assert (stored.status, stored.retry_count) == (EventStatus.COMPLETED, 0)
    assert world.receivers.received() == Counter({event.id: 1})
    assert world.metrics.leases_recovered._value.get() == 0


async def test_a_dispatcher_heard_of_lately_claims_without_an_extra_heartbeat(
    world: World,
) -> None:
    presence = Presence(
        world.store, worker="worker-1", roles=["dispatch"], started_at=START, monotonic=loop_time
    )
    await presence.beat()
    events = await world.submit(world.event(), world.event(after=1.0))
    stop = asyncio.Event()
    dispatching = asyncio.create_task(world.dispatcher("worker-1").run(stop, presence=presence))
    await asyncio.sleep(2.0)  # less than half the dead-after time since the beat
    assert {(await world.stored(e)).status for e in events} == {EventStatus.COMPLETED}
    assert world.memory.faults.calls["heartbeat"] == 1
    stop.set()
    await dispatching


class EndingRetentionStore(MemoryStore):
    """The in-memory store whose retention pass takes long; it notes when that pass ends and
    when the leadership is given up."""

    def __init__(self, clock: LoopClock) -> None:
        super().__init__(clock=clock)
        self.log: list[tuple[str, float]] = []

    async def delete_finished_before(self, *args: Any, **kwargs: Any) -> int:
        try:
            await asyncio.sleep(3600.0)
            return await super().delete_finished_before(*args, **kwargs)
        finally:
            self.log.append(("retention ended", loop_time()))

    async def release_leadership(self, role: str, holder: str) -> None:
        self.log.append(("leadership released", loop_time()))
        await super().release_leadership(role, holder)


async def test_a_stopping_leader_ends_its_background_passes_before_giving_leadership_up() -> None:
    clock = LoopClock()
    memory = EndingRetentionStore(clock)
    store = Store(memory)
    await store.open()
    world = World(clock, memory, store, None, None)  # type: ignore[arg-type]
    maintenance = world.maintenance()
    stop = asyncio.Event()
    task = asyncio.create_task(maintenance.run(stop))
    await asyncio.sleep(2.5)
    assert memory.log == []  # the retention pass started at 0 s is still running
    stop.set()
    await task
    # The next leader can't start a pass while this one's still runs.
    assert memory.log == [("retention ended", 2.5), ("leadership released", 2.5)]


async def test_a_process_whose_leadership_is_unknown_does_not_lead(world: World) -> None:
    (event,) = await world.submit(world.event(max_retries=3))
    await world.memory.claim(ClaimRequest("crashed", 10, 1.0))  # its lease expires at 1 s
    world.memory.faults.down.add("acquire_leadership")
    maintenance = world.maintenance()
    stop = asyncio.Event()
    task = asyncio.create_task(maintenance.run(stop))
    await asyncio.sleep(5.0)
    # Whether another process leads is unknown: this one recovers nothing meanwhile.
    assert not maintenance.leading
    assert (await world.stored(event)).status is EventStatus.PROCESSING
    world.memory.faults.down.clear()
    await asyncio.sleep(1.0)
    assert maintenance.leading
    assert (await world.stored(event)).status is EventStatus.PENDING
    stop.set()
    await task


async def test_after_failed_recoveries_silent_workers_get_the_dead_after_time_again(
    world: World,
) -> None:
    # The leader keeps its leadership, but its recovery rounds fail from 0 to 7.5 s: it did
    # not hear the store's worker listing meanwhile, so a worker silent since is given the
    # dead-after time (5 s) from the first round that hears it again (8 s) before it is dead.
    event = await held_by_a_crashed_worker(world)
    faults = world.memory.faults
    faults.down.add("workers")
    stop = asyncio.Event()
    task = asyncio.create_task(world.maintenance("leader", dead_after_seconds=5.0).run(stop))
    await asyncio.sleep(7.5)
    faults.down.clear()
    await asyncio.sleep(5.0)  # 12.5 s: the rounds at 8 to 12 s judge nobody dead yet
    assert (await world.stored(event)).status is EventStatus.PROCESSING
    await asyncio.sleep(1.0)  # the round at 13 s, 5 s after the store answered again
    stored = await world.stored(event)
    assert (stored.status, stored.retry_count) == (EventStatus.PENDING, 1)
    stop.set()
    await task


async def test_a_worker_silent_exactly_the_dead_after_time_is_not_yet_dead(world: World) -> None:
    (event,) = await world.submit(world.event(max_retries=3))
    await world.memory.heartbeat(WorkerBeat("slow", ("dispatch",), world.clock.now()))
    await world.memory.claim(ClaimRequest("slow", 10, 600.0))
    await asyncio.sleep(5.0)
    faults = world.memory.faults
    stalled = asyncio.Event()  # the recovery call waits (for a pool connection, say)
    faults.stall["recover_expired_leases"] = stalled
    recovering = asyncio.create_task(world.maintenance(dead_after_seconds=5.0).recover())
    await asyncio.sleep(0.5)
    # Listed silent 5 s (not more): not a suspect, though silent 5.5 s when recovery runs.
    stalled.set()
    assert await recovering == 0
    stored = await world.stored(event)
    assert (stored.status, stored.locked_by) == (EventStatus.PROCESSING, "slow")


async def test_a_worker_silent_exactly_the_forget_time_is_still_listed(world: World) -> None:
    await world.memory.heartbeat(WorkerBeat("quiet", ("dispatch",), world.clock.now()))
    await asyncio.sleep(100.0)
    faults = world.memory.faults
    stalled = asyncio.Event()
    faults.stall["forget_workers"] = stalled
    recovering = asyncio.create_task(world.maintenance(forget_after_seconds=100.0).recover())
    await asyncio.sleep(0.5)
    stalled.set()
    await recovering
    assert [w.worker for w in await world.store.workers()] == ["quiet"]
    # Silent for longer than that, it is forgotten.
    await world.maintenance(forget_after_seconds=100.0).recover()
    assert await world.store.workers() == []


class RetentionCallsStore(MemoryStore):
    """The in-memory store, noting whether each retention pass asked to wait for another
    process's pass (the in-memory store has one writer: nothing to wait for)."""

    def __init__(self, clock: LoopClock) -> None:
        super().__init__(clock=clock)
        self.waits: list[bool] = []

    async def delete_finished_before(self, *args: Any, wait: bool = False, **kwargs: Any) -> int:
        self.waits.append(wait)
        return await super().delete_finished_before(*args, wait=wait, **kwargs)


async def test_the_scheduled_retention_pass_skips_a_running_one_and_an_operators_waits() -> None:
    clock = LoopClock()
    memory = RetentionCallsStore(clock)
    store = Store(memory)
    await store.open()
    world = World(clock, memory, store, None, None)  # type: ignore[arg-type]
    maintenance = world.maintenance()
    await world.run(1.5, maintenance=maintenance)
    assert memory.waits == [False]  # the schedule's pass: skipped if another is running
    await maintenance.cleanup(7, wait=True)
    await maintenance.cleanup(7)
    assert memory.waits == [False, True, False]


async def test_the_due_gauge_drops_a_delivery_type_with_nothing_due_any_more(world: World) -> None:
    email = world.event(delivery_type="email")
    await world.submit(world.event(), world.event(), email)
    maintenance = world.maintenance()
    gauge = world.metrics.registry.get_sample_value
    await maintenance.refresh_gauges()
    assert gauge("timefuse_events_due", {"delivery_type": "http"}) == 2
    assert gauge("timefuse_events_due", {"delivery_type": "email"}) == 1
    await world.store.cancel(email.id)
    await maintenance.refresh_gauges()
    assert gauge("timefuse_events_due", {"delivery_type": "http"}) == 2
    assert gauge("timefuse_events_due", {"delivery_type": "email"}) is None
    await world.submit(world.event(delivery_type="email"))
    await maintenance.refresh_gauges()
    assert gauge("timefuse_events_due", {"delivery_type": "email"}) == 1
