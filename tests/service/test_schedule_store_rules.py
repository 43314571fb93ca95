"""The rule layer's schedule calls (timefuse/service/store_schedules.py): a schedule record, a
plan or an argument a store must not take is refused with a message naming what is wrong,
before any adapter sees it; what can be answered without the adapter is answered so."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.service.conftest import World
from timefuse.adapters.memory import MemoryStore
from timefuse.domain.schedule import ScheduleState
from timefuse.ports.store import Materialisation, ScheduleQuery, ScheduleRecord
from timefuse.ports.store.schedules import SCHEDULE_ID_EXTRA
from timefuse.service.store import Store
from timefuse.testing.store_contract_schedules import advanced, make_record, occurrence_of

NAIVE = datetime(2030, 1, 1)
AWARE = datetime(2030, 1, 1, tzinfo=UTC)
NAIVE_TEXT = r"datetime\.datetime\(2030, 1, 1, 0, 0\)"

Call = Callable[[Store], Awaitable[object]]


def _save(record: ScheduleRecord) -> Call:
    return lambda s: s.save_schedule(record, expected_version=None)


def _naive_schedule_field(name: str) -> ScheduleRecord:
    record = make_record()
    return replace(record, schedule=replace(record.schedule, **{name: NAIVE}))


def _plan_with_event(**overrides: object) -> Call:
    """A plan for a fresh schedule whose one occurrence has ``overrides`` applied."""
    record = make_record()
    instant = record.schedule.not_before + timedelta(seconds=60)
    event = replace(occurrence_of(record, instant), **overrides)
    plan = Materialisation(advanced(record, instant), record.version, [event])
    return lambda s: s.materialise([plan])


BAD_CALLS: list[tuple[str, Call, str]] = [
    ("no id", _save(make_record(id="")), "^a schedule needs an id, a key and a source$"),
    ("no key", _save(make_record(key="")), "^a schedule needs an id, a key and a source$"),
    ("no source", _save(make_record(source="")), "^a schedule needs an id, a key and a source$"),
    (
        "both rules",
        _save(make_record(cron="* * * * *", every_seconds=60)),
        "^a schedule has exactly one of cron and every_seconds$",
    ),
    (
        "no rule",
        _save(make_record(every_seconds=None)),
        "^a schedule has exactly one of cron and every_seconds$",
    ),
    *[
        (
            f"naive {name}",
            _save(_naive_schedule_field(name)),
            f"^{name} must be a timezone-aware datetime, got {NAIVE_TEXT}$",
        )
        for name in ("created_at", "not_before", "start_at", "end_at", "last_instant")
    ],
    (
        "naive next_run_at",
        _save(make_record(next_run_at=NAIVE)),
        f"^next_run_at must be a timezone-aware datetime, got {NAIVE_TEXT}$",
    ),
    (
        "naive updated_at",
        _save(replace(make_record(), updated_at=NAIVE)),
        f"^updated_at must be a timezone-aware datetime, got {NAIVE_TEXT}$",
    ),
    (
        "version 0",
        _save(make_record(version=0)),
        "^a stored schedule's version starts at 1, got 0$",
    ),
    (
        "a new schedule at version 2",
        _save(make_record(version=2)),
        "^the schedule's new version must be 1, got 2$",
    ),
    (
        "an update that skips a version",
        lambda s: s.save_schedule(make_record(version=4), expected_version=2),
        "^the schedule's new version must be 3, got 4$",
    ),
    (
        "due naive",
        lambda s: s.due_schedules(NAIVE, 10),
        f"^until must be a timezone-aware datetime, got {NAIVE_TEXT}$",
    ),
    ("due limit", lambda s: s.due_schedules(AWARE, 0), "^limit must be at least 1, got 0$"),
    (
        "list limit",
        lambda s: s.list_schedules(ScheduleQuery(), 0),
        "^limit must be at least 1, got 0$",
    ),
    (
        "occurrences limit",
        lambda s: s.schedule_occurrences("s", -1),
        "^limit must be at least 1, got -1$",
    ),
    (
        "plan version",
        lambda s: s.materialise([Materialisation(make_record(version=3), 1, [])]),
        "^a plan's schedule version must be one more than the expected$",
    ),
    (
        "occurrence of another source",
        _plan_with_event(source="shipping"),
        "^an occurrence has its schedule's source$",
    ),
    (
        "occurrence without its schedule",
        _plan_with_event(extra={}),
        "^an occurrence names its schedule in extra$",
    ),
    (
        "occurrence of another schedule",
        _plan_with_event(extra={SCHEDULE_ID_EXTRA: "another"}),
        "^an occurrence names its schedule in extra$",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in BAD_CALLS], ids=[n for n, _, _ in BAD_CALLS]
)
async def test_a_bad_schedule_call_is_refused_with_its_reason_before_the_adapter_sees_it(
    world: World, call: Call, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await call(world.store)
    assert world.memory.faults.calls == {}


async def test_a_batch_with_two_plans_for_one_schedule_is_refused(world: World) -> None:
    record = make_record()
    assert await world.store.save_schedule(record, expected_version=None)
    instant = record.schedule.not_before + timedelta(seconds=60)
    plan = Materialisation(advanced(record, instant), record.version, [])
    other = Materialisation(advanced(record, instant + timedelta(seconds=60)), record.version, [])
    calls = dict(world.memory.faults.calls)
    with pytest.raises(ValueError, match=r"^a batch holds one plan per schedule$"):
        await world.store.materialise([plan, other])
    assert world.memory.faults.calls == calls
    assert await world.store.get_schedule(record.id) == record


async def test_a_well_formed_plan_is_written(world: World) -> None:
    """The checks above refuse only what is wrong: the same plan, made right, applies."""
    record = make_record()
    assert await world.store.save_schedule(record, expected_version=None)
    instant = record.schedule.not_before + timedelta(seconds=60)
    event = occurrence_of(record, instant)
    plan = Materialisation(advanced(record, instant), record.version, [event])
    assert await world.store.materialise([plan]) == [record.id]
    stored = await world.store.get(event.id)
    assert stored is not None
    assert (stored.source, stored.extra) == (record.schedule.source, {SCHEDULE_ID_EXTRA: record.id})
    assert await world.store.get_schedule(record.id) == plan.record


async def test_counting_schedules_of_no_visible_source_answers_zeros_without_the_adapter(
    world: World,
) -> None:
    counts = await world.store.count_schedules([])
    assert dict(counts) == {
        ScheduleState.ACTIVE: 0,
        ScheduleState.PAUSED: 0,
        ScheduleState.ENDED: 0,
    }
    assert world.memory.faults.calls == {}


class SparseScheduleCounts(MemoryStore):
    """An adapter that counts only the states it holds schedules in (as a GROUP BY does)."""

    async def count_schedules(self, sources: frozenset[str] | None) -> Mapping[ScheduleState, int]:
        counts = await super().count_schedules(sources)
        return {state: n for state, n in counts.items() if n}


async def test_schedule_counts_name_every_state_even_from_an_adapter_that_leaves_some_out() -> None:
    store = Store(SparseScheduleCounts())
    await store.open()
    assert await store.save_schedule(make_record(), expected_version=None)
    counts = await store.count_schedules()
    assert dict(counts) == {
        ScheduleState.ACTIVE: 1,
        ScheduleState.PAUSED: 0,
        ScheduleState.ENDED: 0,
    }
    await store.close()
