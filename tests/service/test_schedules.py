"""Schedules on the in-memory store, planned by the maintenance leader on a fake clock.

Every instant below is stated from the schedule's rules (docs/schedules.md), not read back
from the planner: a minute-by-minute cron from 2030-01-01T00:00Z fires at 00:01, 00:02, ...
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.service.conftest import START, World, loop_time
from timefuse.adapters.cron import CronRecurrence
from timefuse.domain.event import Event
from timefuse.domain.schedule import ScheduleLimits, ScheduleState
from timefuse.domain.validation import SubmissionLimits, ValidationFailed
from timefuse.ports.store import ScheduleQuery, ScheduleRecord
from timefuse.ports.store.schedules import SCHEDULE_ID_EXTRA, TRIGGERED_EXTRA
from timefuse.service.maintenance import Maintenance, MaintenanceSettings
from timefuse.service.planner import SchedulePlanner, SchedulerSettings, schedule_metrics
from timefuse.service.schedules import Declared, ForbiddenSource, ScheduleBusy, ScheduleService
from timefuse.service.wakeup import DueSignal

pytestmark = pytest.mark.looptime

EVENT = {"delivery_type": "http", "destination": "https://receiver.example/tick", "payload": b"{}"}


def at(text: str) -> datetime:
    """An instant on 2030-01-01 (UTC), as ``HH:MM`` or ``HH:MM:SS``."""
    return datetime.fromisoformat(f"2030-01-01T{text}").replace(tzinfo=UTC)


@dataclass
class Kit:
    world: World
    service: ScheduleService
    planner: SchedulePlanner

    async def declare(self, **fields: Any) -> ScheduleRecord:
        """Declared at 00:00:01 at the earliest (a cron instant at the very moment of
        declaration would run: creation is inclusive)."""
        if loop_time() < 1.0:
            await asyncio.sleep(1.0 - loop_time())
        body: dict[str, Any] = {"key": "tick", "source": "billing", **fields}
        declared = await self.service.declare(body, dict(EVENT))
        return declared.record

    def maintenance(self, holder: str = "leader") -> Maintenance:
        return Maintenance(
            store=self.world.store,
            clock=self.world.clock,
            metrics=self.world.metrics,
            settings=MaintenanceSettings(),
            holder=holder,
            monotonic=loop_time,
            planner=self.planner,
        )

    async def run(self, seconds: float, *, dispatch: bool = False) -> None:
        """Maintenance (and a dispatcher) for ``seconds`` of fake time."""
        dispatchers = [self.world.dispatcher()] if dispatch else []
        await self.world.run(seconds, *dispatchers, maintenance=self.maintenance())

    async def occurrences(self, record: ScheduleRecord) -> list[Event]:
        page = await self.service.occurrences(record.id, 1000)
        assert page is not None
        return sorted(page.events, key=lambda event: event.scheduled_at)

    async def instants(self, record: ScheduleRecord) -> list[datetime]:
        return [event.scheduled_at for event in await self.occurrences(record)]

    async def stored(self, record: ScheduleRecord) -> ScheduleRecord:
        found = await self.service.get(record.id)
        assert found is not None
        return found


def kit_of(world: World, **settings: Any) -> Kit:
    recurrence = CronRecurrence()
    limits = SubmissionLimits()
    events = world.events(limits=limits)
    series = schedule_metrics(world.metrics.registry)
    service = ScheduleService(
        store=world.store,
        recurrence=recurrence,
        clock=world.clock,
        build_event=events.build,
        submission_limits=limits,
        metrics=series,
    )
    planner = SchedulePlanner(
        store=world.store,
        recurrence=recurrence,
        clock=world.clock,
        limits=limits,
        metrics=series,
        settings=SchedulerSettings(**settings),
    )
    return Kit(world, service, planner)


@pytest.fixture
def kit(world: World) -> Kit:
    return kit_of(world)


def sample(world: World, name: str, **labels: str) -> float:
    """A sample of the schedules' series on the world's registry (0 when never recorded)."""
    found = world.metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def created(world: World, kind: str) -> float:
    return sample(world, "timefuse_schedule_occurrences_created_total", kind=kind)


def minutes(first: int, last: int, step: int = 1) -> list[datetime]:
    return [START + timedelta(minutes=n) for n in range(first, last + 1, step)]


async def test_each_instant_becomes_one_event_delivered_once_and_on_time(kit: Kit) -> None:
    record = await kit.declare(cron="* * * * *")
    await kit.run(10 * 60 + 30, dispatch=True)
    events = await kit.occurrences(record)
    assert [event.scheduled_at for event in events] == minutes(1, 10)
    assert {event.external_job_id for event in events} == {
        f"schedule:tick:2030-01-01T00:{n:02d}:00Z" for n in range(1, 11)
    }
    received = kit.world.receivers.received()
    assert received == Counter({event.id: 1 for event in events})
    for event in events:
        (arrived,) = kit.world.receivers.times(event.id)
        due = (event.scheduled_at - START).total_seconds()
        assert 0 <= arrived - due < 1.0, "an occurrence made ahead is delivered at its instant"


async def test_max_runs_stops_the_schedule_after_that_many(kit: Kit) -> None:
    record = await kit.declare(every_seconds=10, max_runs=3, start_at="2030-01-01T00:00:10Z")
    await kit.run(120)
    assert await kit.instants(record) == [at("00:00:10"), at("00:00:20"), at("00:00:30")]
    stored = await kit.stored(record)
    assert (stored.state, stored.next_run_at, stored.schedule.runs) == (
        ScheduleState.ENDED,
        None,
        3,
    )


async def test_end_at_is_the_last_instant_that_may_run(kit: Kit) -> None:
    record = await kit.declare(cron="* * * * *", end_at="2030-01-01T00:03:00Z")
    await kit.run(6 * 60)
    assert await kit.instants(record) == minutes(1, 3)
    assert (await kit.stored(record)).state is ScheduleState.ENDED


async def test_a_paused_schedule_creates_nothing_and_resumes_by_its_policy(kit: Kit) -> None:
    record = await kit.declare(cron="* * * * *")
    await kit.run(3 * 60 + 30)  # 00:01, 00:02, 00:03
    paused = await kit.service.pause(record.id)
    assert paused is not None
    assert paused.state is ScheduleState.PAUSED
    await kit.run(10 * 60)  # until 00:13:30: nothing
    assert await kit.instants(record) == minutes(1, 3)
    resumed = await kit.service.resume(record.id)
    assert resumed is not None
    assert resumed.state is ScheduleState.ACTIVE
    await kit.run(2 * 60)  # until 00:15:30
    # once (the default): the latest missed instant (00:12, more than a minute before the
    # resume at 00:13:30), then 00:13 (within the grace), 00:14 and 00:15 on time.
    assert await kit.instants(record) == [*minutes(1, 3), *minutes(12, 15)]


async def test_a_trigger_adds_one_occurrence_now_not_counted_against_the_schedule(
    kit: Kit,
) -> None:
    record = await kit.declare(cron="* * * * *", max_runs=2)
    await asyncio.sleep(19.0)  # fake time to 00:00:20, nothing planned yet
    event = await kit.service.trigger(record.id)
    assert event is not None
    assert event.scheduled_at == at("00:00:20")
    assert event.extra == {SCHEDULE_ID_EXTRA: record.id, TRIGGERED_EXTRA: True}
    assert created(kit.world, "trigger") == 1
    await kit.run(5 * 60, dispatch=True)
    instants = await kit.instants(record)
    assert instants == [at("00:00:20"), at("00:01"), at("00:02")]
    stored = await kit.stored(record)
    assert (stored.schedule.runs, stored.state) == (2, ScheduleState.ENDED)
    assert kit.world.receivers.received()[event.id] == 1
    assert (created(kit.world, "on_time"), created(kit.world, "catch_up")) == (2, 0)
    # A paused schedule may be triggered too; it stays paused.
    await kit.service.pause(record.id)
    assert await kit.service.trigger(record.id) is not None
    assert len(await kit.instants(record)) == 4
    assert created(kit.world, "trigger") == 2


@pytest.mark.parametrize(
    ("cron", "policy", "made", "caught_up"),
    [
        # Down from 00:10:30 to 03:12:30: 00:15 to 03:10 were missed (due more than a minute,
        # the grace, before the restart); none is due within the grace or the lookahead.
        ("*/5 * * * *", "skip", [], 0),
        ("*/5 * * * *", "once", [at("03:10")], 1),
        ("*/5 * * * *", "all", [at("00:15") + timedelta(minutes=5 * n) for n in range(36)], 36),
        # 00:11 to 03:11 missed: 181 instants, of which "all" keeps the latest 100 (the cap);
        # 03:12 is within the grace: on time.
        (
            "* * * * *",
            "all",
            [at("01:32") + timedelta(minutes=n) for n in range(100)] + [at("03:12")],
            100,
        ),
        ("* * * * *", "skip", [at("03:12")], 0),
    ],
)
async def test_a_three_hour_outage_is_caught_up_by_the_missed_runs_policy(
    world: World, cron: str, policy: str, made: list[datetime], caught_up: int
) -> None:
    kit = kit_of(world, catch_up_cap=100)
    record = await kit.declare(cron=cron, missed_runs=policy)
    await kit.run(10 * 60 + 30)
    before = await kit.instants(record)
    assert before == (minutes(5, 10, 5) if cron.startswith("*/5") else minutes(1, 10))
    await asyncio.sleep((at("03:12:30") - kit.world.clock.now()).total_seconds())
    await kit.run(1.0)
    after = await kit.instants(record)
    assert after[: len(before)] == before
    assert after[len(before) :] == made
    # Counted by kind: the missed instants the policy kept, and the others made on time.
    assert created(world, "catch_up") == caught_up
    assert created(world, "on_time") == len(before) + len(made) - caught_up


async def test_a_new_cron_takes_effect_from_the_next_instant(kit: Kit) -> None:
    record = await kit.declare(cron="*/10 * * * *")
    await kit.run(12 * 60)  # 00:10
    changed = await kit.service.update(record.id, {"cron": "*/3 * * * *"})
    assert changed is not None
    await kit.run(10 * 60)  # until 00:22: 00:15, 00:18, 00:21 by the new rule
    assert await kit.instants(record) == [at("00:10"), at("00:15"), at("00:18"), at("00:21")]


async def test_two_planners_at_once_create_each_occurrence_once(world: World) -> None:
    first, second = kit_of(world), kit_of(world)
    records = [await first.declare(key=f"s{n}", every_seconds=1 + n % 3) for n in range(30)]
    faults = world.memory.faults
    for _ in range(60):
        await asyncio.sleep(1.0)
        # Both read the due schedules before either writes: each plan races the other's.
        faults.stall["materialise"] = gate = asyncio.Event()
        ticks = [asyncio.create_task(k.planner.run_once()) for k in (first, second)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(*ticks)
    # They did race: plans were refused for a version the other had moved on.
    conflicts = world.metrics.registry.get_sample_value("timefuse_schedule_plan_conflicts_total")
    assert conflicts is not None
    assert conflicts > 0
    # Created up to the lookahead ahead of the last tick.
    lookahead = timedelta(seconds=first.planner.settings.lookahead_seconds)
    horizon = world.clock.now() + lookahead
    for record in records:
        events = await first.occurrences(record)
        instants = [event.scheduled_at for event in events]
        assert len(instants) == len(set(instants))
        every = record.schedule.every_seconds
        assert every is not None
        first_at = record.schedule.created_at
        expected = [first_at + timedelta(seconds=every * k) for k in range(1, 200)]
        assert instants == [instant for instant in expected if instant <= horizon]


async def test_a_plan_that_lost_a_race_with_an_update_is_not_written(kit: Kit) -> None:
    record = await kit.declare(every_seconds=60)
    await asyncio.sleep(60.0)
    due = await kit.world.store.due_schedules(kit.world.clock.now(), 10)
    assert [r.id for r in due] == [record.id]
    # Paused between the planner's read and its write: the stale plan writes nothing.
    kit.world.memory.faults.stall["materialise"] = gate = asyncio.Event()
    tick = asyncio.create_task(kit.planner.run_once())
    await asyncio.sleep(0.1)
    assert await kit.service.pause(record.id) is not None
    gate.set()
    assert await tick == 0
    assert await kit.instants(record) == []
    assert (await kit.stored(record)).state is ScheduleState.PAUSED


async def test_the_state_gauges_count_each_state_and_are_refreshed_periodically(
    kit: Kit,
) -> None:
    def states() -> dict[str, float]:
        return {
            state.value: sample(kit.world, "timefuse_schedules", state=state.value)
            for state in ScheduleState
        }

    running = await kit.declare(key="running", cron="* * * * *")
    paused = await kit.declare(key="paused", cron="* * * * *")
    assert await kit.service.pause(paused.id) is not None
    # Its only instant (00:00:11) is within the lookahead: the first tick runs it, and it ends.
    once = await kit.declare(key="once", every_seconds=10, max_runs=1)
    await kit.planner.run_once()
    assert (await kit.stored(once)).state is ScheduleState.ENDED
    assert states() == {"ACTIVE": 1, "PAUSED": 1, "ENDED": 1}
    # Counted again only every gauges_every_seconds (15 s): a tick a second later keeps them.
    assert await kit.service.pause(running.id) is not None
    await asyncio.sleep(1.0)
    await kit.planner.run_once()
    assert states() == {"ACTIVE": 1, "PAUSED": 1, "ENDED": 1}
    await asyncio.sleep(kit.planner.settings.gauges_every_seconds)
    await kit.planner.run_once()
    assert states() == {"ACTIVE": 0, "PAUSED": 2, "ENDED": 1}


async def test_the_materialisation_lag_is_how_late_past_the_lookahead_a_plan_was_made(
    kit: Kit,
) -> None:
    lag = "timefuse_schedule_materialisation_lag_seconds"
    record = await kit.declare(every_seconds=60)  # at 00:00:01: 00:01:01, 00:02:01, ...
    assert record.next_run_at == at("00:01:01")
    lookahead = kit.planner.settings.lookahead_seconds
    assert lookahead == 10
    # Planned as soon as its instant is within the lookahead (00:00:51): no lag.
    await asyncio.sleep((at("00:00:51") - kit.world.clock.now()).total_seconds())
    assert await kit.planner.run_once() == 1
    assert (sample(kit.world, f"{lag}_count"), sample(kit.world, f"{lag}_sum")) == (1, 0)
    # The planner down until 00:05:00: 00:02:01 was due to be planned at 00:01:51.
    await asyncio.sleep((at("00:05:00") - kit.world.clock.now()).total_seconds())
    await kit.planner.run_once()
    assert sample(kit.world, f"{lag}_count") == 2
    assert sample(kit.world, f"{lag}_sum") == pytest.approx(189.0)
    assert sample(kit.world, f"{lag}_bucket", le="0.001") == 1
    assert sample(kit.world, f"{lag}_bucket", le="120.0") == 1
    assert sample(kit.world, f"{lag}_bucket", le="300.0") == 2


def service_of(world: World, **options: Any) -> ScheduleService:
    """A schedule service on the world's store with options of its own (limits, a wake-up)."""
    limits = SubmissionLimits()
    events = world.events(limits=limits)
    return ScheduleService(
        store=world.store,
        recurrence=CronRecurrence(),
        clock=world.clock,
        build_event=events.build,
        submission_limits=limits,
        metrics=schedule_metrics(world.metrics.registry),
        **options,
    )


async def test_a_source_the_key_does_not_act_for_is_refused_by_name(kit: Kit) -> None:
    long_source = "s" * 150
    body = {"key": "tick", "source": long_source, "cron": "* * * * *"}

    with pytest.raises(ForbiddenSource) as caught:
        await kit.service.declare(body, dict(EVENT), sources={"billing"})

    assert str(caught.value) == f"this key may not manage schedules of source {'s' * 100!r}"
    assert caught.value.source == long_source
    assert await kit.service.find(long_source, "tick") is None


async def test_an_update_is_held_to_the_service_limits(world: World) -> None:
    service = service_of(world, limits=ScheduleLimits(max_every_seconds=3600))
    declared = await service.declare(
        {"key": "tick", "source": "billing", "every_seconds": 600}, dict(EVENT)
    )

    with pytest.raises(ValidationFailed) as caught:
        await service.update(declared.record.id, {"every_seconds": 7200})

    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("every_seconds", "must be at most 3600")
    ]
    stored = await service.get(declared.record.id)
    assert stored is not None
    assert stored.schedule.every_seconds == 600


async def test_each_change_is_stamped_with_the_time_it_was_made(kit: Kit) -> None:
    record = await kit.declare(every_seconds=60)
    await asyncio.sleep(30.0)
    paused = await kit.service.pause(record.id)
    assert paused is not None
    assert paused.updated_at == kit.world.clock.now() > record.updated_at
    await asyncio.sleep(30.0)
    updated = await kit.service.update(record.id, {"every_seconds": 120})
    assert updated is not None
    assert updated.updated_at == kit.world.clock.now() > paused.updated_at
    assert (await kit.stored(record)).updated_at == updated.updated_at


async def test_a_change_that_keeps_losing_to_other_writers_is_refused_as_busy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_of(world)
    declared = await service.declare(
        {"key": "tick", "source": "billing", "every_seconds": 600}, dict(EVENT)
    )
    schedule_id = declared.record.id

    async def always_outrun(record: ScheduleRecord, *, expected_version: int | None) -> bool:
        return False  # another writer saved a newer version first, every time

    monkeypatch.setattr(world.memory, "save_schedule", always_outrun)
    busy = r"^the schedule kept changing; try again$"
    with pytest.raises(ScheduleBusy, match=busy):
        await service.update(schedule_id, {"every_seconds": 900})
    with pytest.raises(ScheduleBusy, match=busy):
        await service.pause(schedule_id)
    stored = await service.get(schedule_id)
    assert stored is not None
    assert (stored.version, stored.schedule.every_seconds) == (1, 600)
    assert stored.state is ScheduleState.ACTIVE


async def test_an_update_with_an_event_replaces_the_template(kit: Kit) -> None:
    record = await kit.declare(cron="* * * * *")
    other = {**EVENT, "destination": "https://receiver.example/other"}

    changed = await kit.service.update(record.id, {}, dict(other))

    assert changed is not None
    assert changed.schedule.template == other
    assert changed.version == record.version + 1
    assert (await kit.stored(record)).schedule.template == other
    await kit.run(90)
    (made,) = await kit.occurrences(record)
    assert made.destination == "https://receiver.example/other"


async def test_a_schedule_is_resumed_only_for_its_own_source(kit: Kit) -> None:
    record = await kit.declare(cron="* * * * *")
    await kit.service.pause(record.id)

    assert await kit.service.resume(record.id, sources={"other"}) is None
    assert (await kit.stored(record)).state is ScheduleState.PAUSED

    resumed = await kit.service.resume(record.id, sources={"billing"})
    assert resumed is not None
    assert resumed.state is ScheduleState.ACTIVE


async def test_a_listing_for_some_sources_keeps_the_state_asked_for(kit: Kit) -> None:
    running = await kit.declare(key="running", cron="* * * * *")
    paused = await kit.declare(key="paused", cron="* * * * *")
    await kit.service.pause(paused.id)
    elsewhere = await kit.declare(key="elsewhere", source="other", cron="* * * * *")
    await kit.service.pause(elsewhere.id)

    page = await kit.service.list(
        ScheduleQuery(state=ScheduleState.PAUSED), 10, sources={"billing"}
    )
    assert [found.id for found in page.schedules] == [paused.id]
    page = await kit.service.list(
        ScheduleQuery(state=ScheduleState.ACTIVE), 10, sources={"billing", "other"}
    )
    assert [found.id for found in page.schedules] == [running.id]


async def test_a_delete_for_no_source_deletes_nothing(kit: Kit) -> None:
    record = await kit.declare(cron="* * * * *")

    assert await kit.service.delete(record.id, sources=[]) is False
    assert await kit.service.get(record.id) is not None
    assert await kit.service.delete(record.id, sources=["billing"]) is True
    assert await kit.service.get(record.id) is None


async def test_a_trigger_wakes_a_dispatcher_only_if_it_would_wake_later(world: World) -> None:
    signal = DueSignal(world.clock)
    service = service_of(world, wakeup=signal)
    declared = await service.declare(
        {"key": "tick", "source": "billing", "cron": "@daily"}, dict(EVENT)
    )

    signal.plan(world.clock.now() + timedelta(seconds=60))
    assert await service.trigger(declared.record.id) is not None
    assert await signal.wait(1.0) is True

    # A dispatcher already due to wake at this very moment is not woken twice.
    await asyncio.sleep(5.0)
    signal.plan(world.clock.now())
    assert await service.trigger(declared.record.id) is not None
    assert await signal.wait(1.0) is False


async def test_a_trigger_at_the_instant_of_a_planned_occurrence_is_that_occurrence(
    kit: Kit,
) -> None:
    record = await kit.declare(cron="* * * * *")
    await kit.run(55)  # 00:01 is created ahead (the lookahead), not yet due
    (planned,) = await kit.occurrences(record)
    await asyncio.sleep((at("00:01") - kit.world.clock.now()).total_seconds())
    assert kit.world.clock.now() == at("00:01")

    event = await kit.service.trigger(record.id)

    assert event is not None
    assert (event.id, event.scheduled_at) == (planned.id, at("00:01"))
    assert event.extra == {SCHEDULE_ID_EXTRA: record.id}, "as stored: planned, not triggered"
    assert await kit.occurrences(record) == [planned]


async def test_a_trigger_reports_its_occurrence_even_if_it_is_gone_when_read_back(
    kit: Kit,
) -> None:
    record = await kit.declare(cron="@daily")
    gate = asyncio.Event()
    kit.world.memory.faults.stall["get"] = gate
    triggering = asyncio.create_task(kit.service.trigger(record.id))
    while kit.world.memory.faults.calls.get("get", 0) == 0:
        await asyncio.sleep(0.01)
    # Inserted, not yet read back: cancelled and removed by retention meanwhile.
    (made,) = await kit.occurrences(record)
    await kit.world.store.cancel(made.id)
    assert await kit.world.store.delete_terminal_before(kit.world.clock.now() + timedelta(1)) == 1
    gate.set()

    event = await triggering

    assert event is not None
    assert (event.id, event.scheduled_at) == (made.id, made.scheduled_at)
    assert event.extra == {SCHEDULE_ID_EXTRA: record.id, TRIGGERED_EXTRA: True}


async def advance_to(kit: Kit, text: str) -> None:
    """Fake time forward to ``text`` (``HH:MM:SS`` on 2030-01-01)."""
    await asyncio.sleep((at(text) - kit.world.clock.now()).total_seconds())


async def test_a_plan_stamps_its_occurrences_and_its_schedule_with_the_time_it_was_made(
    kit: Kit,
) -> None:
    record = await kit.declare(every_seconds=60)  # at 00:00:01: next at 00:01:01
    await advance_to(kit, "00:00:51")  # 00:01:01 is within the lookahead
    assert await kit.planner.run_once() == 1
    (made,) = await kit.occurrences(record)
    assert made.scheduled_at == at("00:01:01")
    assert (made.created_at, made.updated_at) == (at("00:00:51"), at("00:00:51"))
    stored = await kit.stored(record)
    assert (stored.version, stored.updated_at) == (record.version + 1, at("00:00:51"))


async def test_a_tick_plans_every_due_schedule_a_batch_at_a_time(world: World) -> None:
    kit = kit_of(world, batch_size=2)
    records = [await kit.declare(key=f"s{n}", every_seconds=60) for n in range(5)]
    await advance_to(kit, "00:00:51")
    assert await kit.planner.run_once() == 5
    assert world.memory.faults.calls["materialise"] == 3  # 2 + 2 + 1
    for record in records:
        assert await kit.instants(record) == [at("00:01:01")]


async def test_only_the_plans_that_lost_a_race_count_as_conflicts(kit: Kit) -> None:
    kept = await kit.declare(key="kept", every_seconds=60)
    raced = await kit.declare(key="raced", every_seconds=60)
    await advance_to(kit, "00:00:51")
    kit.world.memory.faults.stall["materialise"] = gate = asyncio.Event()
    tick = asyncio.create_task(kit.planner.run_once())
    await asyncio.sleep(0.1)
    assert await kit.service.pause(raced.id) is not None
    gate.set()
    assert await tick == 1
    assert sample(kit.world, "timefuse_schedule_plan_conflicts_total") == 1
    assert await kit.instants(kept) == [at("00:01:01")]
    assert await kit.instants(raced) == []


def planner_of(kit: Kit, **options: Any) -> SchedulePlanner:
    """Another planner on the kit's store and series: its own limits, settings, wake-up."""
    fields: dict[str, Any] = {
        "store": kit.world.store,
        "recurrence": CronRecurrence(),
        "clock": kit.world.clock,
        "limits": SubmissionLimits(),
        "metrics": schedule_metrics(kit.world.metrics.registry),
    }
    return SchedulePlanner(**{**fields, **options})


async def test_a_plan_wakes_a_dispatcher_only_if_it_would_wake_later(kit: Kit) -> None:
    signal = DueSignal(kit.world.clock)
    planner = planner_of(kit, wakeup=signal)
    await kit.declare(every_seconds=60)  # 00:01:01, 00:02:01, ...
    await advance_to(kit, "00:00:51")
    signal.plan(at("00:00:55"))  # the dispatcher looks again before 00:01:01 anyway
    assert await planner.run_once() == 1
    assert await signal.wait(1.0) is False
    await advance_to(kit, "00:01:51")
    signal.plan(at("00:05:00"))  # it would sleep past 00:02:01: woken
    assert await planner.run_once() == 1
    assert await signal.wait(1.0) is True


async def test_an_instant_later_than_the_grace_is_missed(world: World) -> None:
    kit = kit_of(world, grace_seconds=30)
    record = await kit.declare(cron="* * * * *", missed_runs="skip")
    await advance_to(kit, "00:01:45")  # 00:01 is 45 s late: past the 30 s grace
    assert await kit.planner.run_once() == 0
    assert await kit.instants(record) == []
    await advance_to(kit, "00:02:20")  # 00:02 is 20 s late: within it
    assert await kit.planner.run_once() == 1
    assert await kit.instants(record) == [at("00:02")]


async def test_missed_instants_are_caught_up_to_the_cap(world: World) -> None:
    kit = kit_of(world, catch_up_cap=3)
    record = await kit.declare(cron="* * * * *", missed_runs="all")
    await advance_to(kit, "00:10:30")  # 00:01 to 00:09 missed; 00:10 within the grace
    assert await kit.planner.run_once() == 4
    assert await kit.instants(record) == minutes(7, 10)
    assert (created(world, "catch_up"), created(world, "on_time")) == (3, 1)


async def test_one_plan_creates_at_most_the_plan_limit_and_the_rest_come_later(
    world: World,
) -> None:
    kit = kit_of(world, plan_limit=2)
    record = await kit.declare(every_seconds=1)  # at 00:00:01: 00:00:02, 00:00:03, ...
    assert await kit.planner.run_once() == 2  # of the 10 instants within the lookahead
    assert await kit.instants(record) == [at("00:00:02"), at("00:00:03")]
    await asyncio.sleep(1.0)
    assert await kit.planner.run_once() == 2
    assert await kit.instants(record) == [at(f"00:00:{s:02d}") for s in range(2, 6)]


async def test_a_template_that_no_longer_passes_skips_its_instants_and_counts_none(
    kit: Kit,
) -> None:
    record = await kit.declare(every_seconds=60)  # its payload, b"{}", is 2 bytes
    stricter = planner_of(kit, limits=SubmissionLimits(max_payload_bytes=1))
    await advance_to(kit, "00:00:51")
    assert await stricter.run_once() == 0
    assert await kit.instants(record) == []
    stored = await kit.stored(record)
    assert (stored.next_run_at, stored.version) == (at("00:02:01"), record.version + 1)
    assert (created(kit.world, "on_time"), created(kit.world, "catch_up")) == (0, 0)
    # The instants after it, planned by the rules it passes, are made.
    await advance_to(kit, "00:01:51")
    assert await kit.planner.run_once() == 1
    assert await kit.instants(record) == [at("00:02:01")]
    assert created(kit.world, "on_time") == 1


async def test_the_state_gauges_are_counted_again_once_the_period_is_over(kit: Kit) -> None:
    record = await kit.declare(cron="* * * * *")
    await kit.planner.run_once()
    assert sample(kit.world, "timefuse_schedules", state="ACTIVE") == 1
    assert await kit.service.pause(record.id) is not None
    await asyncio.sleep(kit.planner.settings.gauges_every_seconds)  # exactly the period
    await kit.planner.run_once()
    assert sample(kit.world, "timefuse_schedules", state="ACTIVE") == 0
    assert sample(kit.world, "timefuse_schedules", state="PAUSED") == 1


async def test_the_planner_ticks_at_every_round_of_the_leader_however_short(kit: Kit) -> None:
    maintenance = Maintenance(
        store=kit.world.store,
        clock=kit.world.clock,
        metrics=kit.world.metrics,
        settings=MaintenanceSettings(round_seconds=0.5),
        holder="leader",
        monotonic=loop_time,
        planner=kit.planner,
    )
    await kit.world.run(4.75, maintenance=maintenance)  # rounds at 0, 0.5, ... 4.5 s
    assert kit.world.memory.faults.calls["due_schedules"] == 10


UNKNOWN_TYPE = ("event.delivery_type", "unknown delivery type 'pigeon' (registered: http)")


def errors_of(caught: pytest.ExceptionInfo[ValidationFailed]) -> list[tuple[str, str]]:
    return [(error.field, error.message) for error in caught.value.errors]


async def test_a_declaration_says_whether_it_created_replaced_or_kept_the_schedule(
    kit: Kit,
) -> None:
    body = {"key": "tick", "source": "billing", "every_seconds": 60}
    first = await kit.service.declare(body, dict(EVENT))
    assert (first.created, first.changed, first.record.version) == (True, True, 1)

    await asyncio.sleep(30.0)
    same = await kit.service.declare(body, dict(EVENT))
    assert (same.created, same.changed) == (False, False)
    assert same.record == first.record

    await asyncio.sleep(30.0)
    other = {**EVENT, "destination": "https://receiver.example/other"}
    replaced = await kit.service.declare({**body, "every_seconds": 120}, dict(other))
    assert (replaced.created, replaced.changed) == (False, True)
    record = replaced.record
    assert (record.id, record.version, record.updated_at) == (first.record.id, 2, at("00:01:00"))
    assert (record.schedule.every_seconds, record.schedule.template) == (120, other)
    assert await kit.stored(record) == record


async def test_a_declaration_pauses_or_resumes_only_when_it_says_so(kit: Kit) -> None:
    body = {"key": "tick", "source": "billing", "cron": "* * * * *"}
    await kit.service.declare(body, dict(EVENT))

    paused = await kit.service.declare({**body, "paused": True}, dict(EVENT))
    assert (paused.changed, paused.record.state) == (True, ScheduleState.PAUSED)
    # Not mentioned: a paused schedule stays paused.
    kept = await kit.service.declare(body, dict(EVENT))
    assert (kept.changed, kept.record.state) == (False, ScheduleState.PAUSED)
    resumed = await kit.service.declare({**body, "paused": False}, dict(EVENT))
    assert (resumed.changed, resumed.record.state) == (True, ScheduleState.ACTIVE)
    assert (await kit.stored(resumed.record)).state is ScheduleState.ACTIVE


async def test_a_declaration_that_loses_the_race_to_create_replaces_the_winner(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, rival = service_of(world), service_of(world)
    save = world.memory.save_schedule
    rivals: list[Declared] = []
    raced = False

    async def rival_first(record: ScheduleRecord, *, expected_version: int | None) -> bool:
        nonlocal raced
        if expected_version is None and not raced:
            raced = True
            # The rival declares the same schedule between this one's look-up and its write.
            rivals.append(
                await rival.declare(
                    {"key": "tick", "source": "billing", "every_seconds": 600}, dict(EVENT)
                )
            )
        return await save(record, expected_version=expected_version)

    monkeypatch.setattr(world.memory, "save_schedule", rival_first)
    declared = await service.declare(
        {"key": "tick", "source": "billing", "every_seconds": 60}, dict(EVENT)
    )

    assert (declared.created, declared.changed) == (False, True)
    assert (declared.record.version, declared.record.schedule.every_seconds) == (2, 60)
    (won,) = rivals
    assert won.created
    assert declared.record.id == won.record.id, "the rival's schedule is the one kept"
    assert await service.get(declared.record.id) == declared.record


async def test_a_declaration_that_keeps_losing_to_other_writers_is_refused_as_busy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = service_of(world)
    body = {"key": "tick", "source": "billing", "every_seconds": 600}
    await service.declare(body, dict(EVENT))

    async def always_outrun(record: ScheduleRecord, *, expected_version: int | None) -> bool:
        return False

    monkeypatch.setattr(world.memory, "save_schedule", always_outrun)
    busy = r"^the schedule kept changing; try again$"
    with pytest.raises(ScheduleBusy, match=busy):
        await service.declare({**body, "key": "new"}, dict(EVENT))
    with pytest.raises(ScheduleBusy, match=busy):
        await service.declare({**body, "every_seconds": 900}, dict(EVENT))
    assert await service.find("billing", "new") is None
    stored = await service.find("billing", "tick")
    assert stored is not None
    assert (stored.version, stored.schedule.every_seconds) == (1, 600)


async def test_a_declaration_is_held_to_the_service_limits_wider_than_the_defaults(
    world: World,
) -> None:
    wide = ScheduleLimits(max_runs_limit=3_000_000_000)
    service = service_of(world, limits=wide)
    body = {"key": "tick", "source": "billing", "every_seconds": 60}

    created = await service.declare({**body, "max_runs": 2_000_000_000}, dict(EVENT))
    assert created.record.schedule.max_runs == 2_000_000_000
    replaced = await service.declare({**body, "max_runs": 2_500_000_000}, dict(EVENT))
    assert (replaced.changed, replaced.record.schedule.max_runs) == (True, 2_500_000_000)
    with pytest.raises(ValidationFailed) as caught:
        await service.declare({**body, "max_runs": 3_000_000_001}, dict(EVENT))
    assert errors_of(caught) == [("max_runs", "must be at most 3000000000")]


async def test_a_field_over_the_service_limits_is_reported_with_the_templates_errors(
    world: World,
) -> None:
    service = service_of(world, limits=ScheduleLimits(max_every_seconds=3600))
    body = {"key": "tick", "source": "billing", "every_seconds": 7200}

    with pytest.raises(ValidationFailed) as caught:
        await service.declare(body, {**EVENT, "delivery_type": "pigeon"})

    assert errors_of(caught) == [("every_seconds", "must be at most 3600"), UNKNOWN_TYPE]
    assert await service.find("billing", "tick") is None


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (None, "is required: the event each occurrence delivers"),
        ("tick", "must be a JSON object"),
        ([dict(EVENT)], "must be a JSON object"),
    ],
)
async def test_a_declaration_without_an_event_object_is_refused_by_name(
    kit: Kit, event: object, message: str
) -> None:
    body = {"key": "tick", "source": "billing", "cron": "* * * * *"}

    with pytest.raises(ValidationFailed) as caught:
        await kit.service.declare(body, event)

    assert errors_of(caught) == [("event", message)]


async def test_a_template_field_the_schedule_sets_is_refused_with_the_templates_errors(
    kit: Kit,
) -> None:
    body = {"key": "tick", "source": "billing", "cron": "* * * * *"}
    event = {
        **EVENT,
        "delivery_type": "pigeon",
        "external_job_id": "job-1",
        "source": "billing",
        "scheduled_at": None,  # no value: not set, so not refused
    }

    with pytest.raises(ValidationFailed) as caught:
        await kit.service.declare(body, event)

    set_by_schedule = "is set by the schedule for each occurrence"
    assert errors_of(caught) == [
        ("event.external_job_id", set_by_schedule),
        ("event.source", set_by_schedule),
        UNKNOWN_TYPE,
    ]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        # Too long for an occurrence's external_job_id (at most 255 characters).
        ({"key": "k" * 250}, ("key", "must be at most 200 characters")),
        ({"key": "tick\x00"}, ("key", "must not contain control characters")),
        ({"source": "s" * 101}, ("source", "must be at most 100 characters")),
        ({"source": "billing\x07"}, ("source", "must not contain control characters")),
        ({"source": None}, ("source", "is required")),
        ({"source": 7}, ("source", "must be a string")),
        ({"key": ["tick"]}, ("key", "must be a string")),
    ],
)
async def test_a_bad_key_or_source_does_not_hide_the_templates_errors(
    kit: Kit, fields: dict[str, object], error: tuple[str, str]
) -> None:
    body = {"key": "tick", "source": "billing", "cron": "* * * * *", **fields}

    with pytest.raises(ValidationFailed) as caught:
        await kit.service.declare(body, {**EVENT, "delivery_type": "pigeon"})

    assert errors_of(caught) == [error, UNKNOWN_TYPE]
