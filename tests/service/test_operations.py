"""What operators and clients do besides delivery, on the in-memory store: cancelling (and
what the statistics and metrics then say), retention on demand, the workers' list."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from tests.service.conftest import World, answering
from timefuse.ports.store import CancelResult, ClaimRequest, WorkerBeat
from timefuse.service.admin import Admin
from timefuse.service.events import EventService
from timefuse.service.gate import DestinationLimits
from timefuse.service.wakeup import DueSignal

pytestmark = pytest.mark.looptime


def events_of(world: World) -> EventService:
    return world.events()


def admin_of(world: World, retention_days: int = 7) -> Admin:
    return Admin(
        maintenance=world.maintenance(),
        gate=world.dispatcher().gate,
        store=world.store,
        retention_days=retention_days,
        dead_after_seconds=5.0,
    )


async def test_a_cancel_counts_once_and_shows_in_the_statistics_at_once(world: World) -> None:
    service = events_of(world)
    pending, claimed = await world.submit(world.event(after=60.0), world.event())
    await world.store.claim(ClaimRequest("w", 10, 60.0))
    assert (await service.statistics())["CANCELLED"] == 0  # cached from here on
    assert await service.cancel(pending.id) is CancelResult.CANCELLED
    assert await service.cancel(pending.id) is not CancelResult.CANCELLED
    assert await service.cancel(claimed.id) is not CancelResult.CANCELLED
    stats = await service.statistics()
    assert (stats["CANCELLED"], stats["PROCESSING"], stats["TOTAL"]) == (1, 1, 2)
    assert world.metrics.registry.get_sample_value("timefuse_events_cancelled_total") == 1


async def test_cancelling_by_external_id_counts_each_event_cancelled(world: World) -> None:
    service = events_of(world)
    first = world.event(after=60.0, external_job_id="job-7")
    second = world.event(after=120.0, external_job_id="job-7")
    await world.submit(first, second)
    assert (await service.statistics())["CANCELLED"] == 0
    assert await service.cancel_by_external_id("job-7") == 2
    assert await service.cancel_by_external_id("job-7") == 0
    assert (await service.statistics())["CANCELLED"] == 2
    assert world.metrics.registry.get_sample_value("timefuse_events_cancelled_total") == 2


async def test_retention_on_demand_keeps_the_configured_days_unless_told_otherwise(
    world: World,
) -> None:
    admin = admin_of(world, retention_days=7)
    old, recent = world.event(), world.event()
    await world.submit(old)
    await world.store.cancel(old.id)
    world.clock.skew = timedelta(days=5)
    await world.submit(recent)
    await world.store.cancel(recent.id)
    world.clock.skew = timedelta(days=10)
    # 10 days after the first cancel, 5 after the second: 7 days keep only the recent one.
    assert await admin.cleanup() == 1
    assert await world.store.get(old.id) is None
    assert await admin.cleanup(days=1) == 1
    assert await world.store.get(recent.id) is None


async def test_the_workers_list_says_which_processes_count_as_alive(world: World) -> None:
    admin = admin_of(world)
    now = world.clock.now()
    await world.store.heartbeat(WorkerBeat("quiet", ("dispatch",), now, 0))
    world.clock.skew = timedelta(seconds=6)
    await world.store.heartbeat(WorkerBeat("busy", ("api",), now, 3))
    alive = {record.worker: ok for record, ok in await admin.workers()}
    assert alive == {"busy": True, "quiet": False}  # silent 6 s > 5 s


async def test_a_worker_silent_exactly_the_dead_after_time_still_counts_as_alive(
    world: World,
) -> None:
    admin = admin_of(world)  # dead after 5 s
    await world.store.heartbeat(WorkerBeat("edge", ("dispatch",), world.clock.now(), 0))
    world.clock.skew = timedelta(seconds=5)
    assert [(record.worker, ok) for record, ok in await admin.workers()] == [("edge", True)]


async def test_an_operators_cleanup_waits_for_a_retention_pass_running_elsewhere(
    world: World,
) -> None:
    # A pass running in another process is waited for (PostgreSQL), not skipped as the
    # scheduled pass skips it: the store is asked to wait.
    asked: list[bool] = []
    delete = world.memory.delete_finished_before

    async def recorded(*args: Any, wait: bool = False) -> int:
        asked.append(wait)
        return await delete(*args, wait=wait)

    world.memory.delete_finished_before = recorded  # type: ignore[method-assign]
    assert await admin_of(world).cleanup() == 0
    assert await admin_of(world).cleanup(days=1) == 0
    assert asked == [True, True]


async def test_a_loaded_delivery_type_with_nothing_due_shows_zero_due(world: World) -> None:
    admin = Admin(
        maintenance=world.maintenance(),
        gate=world.dispatcher().gate,
        store=world.store,
        retention_days=7,
        dead_after_seconds=5.0,
        registry=world.registry,
    )
    await world.submit(world.event(after=60.0))  # due later: not counted
    rows = await admin.delivery_types()
    assert [(row["name"], row["loaded"], row["due"]) for row in rows] == [("http", True, 0)]


async def test_forgetting_workers_needs_a_positive_silence(world: World) -> None:
    with pytest.raises(ValueError, match="silent_seconds must be positive"):
        await world.store.forget_workers(0)


async def test_statistics_are_cached_briefly_per_set_of_sources(world: World) -> None:
    service = events_of(world)
    await world.submit(world.event(after=60.0, source="alpha"))
    everything = await service.statistics()
    assert everything == {
        "PENDING": 1,
        "PROCESSING": 0,
        "COMPLETED": 0,
        "FAILED": 0,
        "DEAD_LETTER": 0,
        "CANCELLED": 0,
        "TOTAL": 1,
    }
    assert (await service.statistics(sources={"beta"}))["TOTAL"] == 0  # not the cached total
    await world.submit(world.event(after=60.0, source="beta"))  # behind the service's back
    assert await service.statistics() == everything  # cached, within a second
    assert (await service.statistics(sources={"beta"}))["TOTAL"] == 0


async def test_hand_backs_are_counted_by_reason(world: World) -> None:
    url = "https://slow.example/hook"
    world.receivers.answer(url, answering(after=3.0))
    await world.submit(*(world.event(destination=url) for _ in range(10)))
    # Two at a time, 3 s each: the third claimed waits past the hold time (2 s) and goes back.
    dispatcher = world.dispatcher(lease_seconds=8.0, limits=DestinationLimits(concurrency=2))
    await world.run(5.0, dispatcher)
    waits = world.metrics.registry.get_sample_value(
        "timefuse_events_throttled_total", {"reason": "wait"}
    )
    assert waits is not None
    assert waits >= 1


def body(**fields: object) -> dict[str, object]:
    return {
        "external_job_id": "job-1",
        "source": "billing",
        "scheduled_at": "2030-01-01T01:00:00+00:00",
        "delivery_type": "http",
        "destination": "https://receiver.example/hook",
        "payload": b"{}",
        **fields,
    }


async def test_a_batch_names_a_rejected_items_external_id_only_when_it_is_text(
    world: World,
) -> None:
    service = events_of(world)
    result = await service.submit_batch(
        [
            body(external_job_id="ok-1"),
            body(external_job_id="bad", source=""),
            body(external_job_id=7),
        ]
    )
    assert [index for index, _ in result.accepted] == [0]
    assert [(r.index, r.external_job_id) for r in result.rejected] == [(1, "bad"), (2, None)]


async def test_an_accepted_event_due_sooner_wakes_the_dispatcher(world: World) -> None:
    wakeup = DueSignal(world.clock)
    service = world.events(wakeup=wakeup)
    wakeup.plan(world.clock.now() + timedelta(hours=2))
    await service.submit_batch([body(scheduled_at="2030-01-01T03:00:00+00:00")])
    later = asyncio.create_task(wakeup.wait(60.0))
    await asyncio.sleep(1)  # the loop's fake clock: time for a woken wait to return
    assert not later.done()  # due after the planned wake-up: nobody woken
    await service.submit_batch([body(external_job_id="job-2")])  # due in an hour
    assert await later
