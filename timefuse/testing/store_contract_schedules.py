"""The store contract, part seven: schedules, their versions, and their occurrences."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event, new_event_id
from timefuse.domain.schedule import MissedRuns, Schedule, ScheduleState, occurrence
from timefuse.ports.store import (
    Materialisation,
    SchedulePosition,
    ScheduleQuery,
    ScheduleRecord,
)
from timefuse.ports.store.schedules import SCHEDULE_ID_EXTRA
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import insert_events, utc_now

TEMPLATE: dict[str, object] = {
    "delivery_type": "http",
    "destination": "https://receiver.example/hooks/nightly",
    # Spacing and key order kept: a payload comes back byte for byte.
    "payload": b'{ "job" : "invoices",  "n":1 }',
    "max_retries": 5,
    "delivery_window_seconds": 2.5,
}


def make_record(
    *,
    key: str = "nightly",
    source: str = "billing",
    next_run_at: datetime | None = None,
    version: int = 1,
    **fields: Any,
) -> ScheduleRecord:
    """A stored-schedule record: every 60 s from a fixed start, running, version 1."""
    now = utc_now()
    schedule = Schedule(
        id=fields.pop("id", new_event_id(now)),
        key=key,
        source=source,
        template=fields.pop("template", TEMPLATE),
        created_at=fields.pop("created_at", now),
        not_before=fields.pop("not_before", now),
        every_seconds=fields.pop("every_seconds", 60),
        **fields,
    )
    due = next_run_at if next_run_at is not None else now + timedelta(seconds=60)
    return ScheduleRecord(schedule, due, version, now)


def occurrence_of(record: ScheduleRecord, instant: datetime) -> Event:
    """The event of ``record``'s occurrence at ``instant``, as the planner builds it."""
    found = occurrence(record.schedule, instant)
    return make_event(
        id=found.event_id,
        external_job_id=found.external_job_id,
        source=found.source,
        scheduled_at=found.scheduled_at,
        extra={SCHEDULE_ID_EXTRA: record.id},
    )


def advanced(record: ScheduleRecord, instant: datetime, *, runs: int = 1) -> ScheduleRecord:
    """``record`` as a plan that created ``runs`` occurrences up to ``instant`` leaves it."""
    schedule = replace(record.schedule, runs=record.schedule.runs + runs, last_instant=instant)
    return replace(
        record,
        schedule=schedule,
        next_run_at=instant + timedelta(seconds=60),
        version=record.version + 1,
        updated_at=utc_now(),
    )


async def saved(store: Store, **fields: Any) -> ScheduleRecord:
    record = make_record(**fields)
    assert await store.save_schedule(record, expected_version=None)
    return record


class SchedulesContract:
    async def test_a_schedule_comes_back_as_it_was_saved(self, store: Store) -> None:
        at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
        record = make_record(
            cron="*/5 * * * *",
            every_seconds=None,
            timezone="Europe/Berlin",
            start_at=at,
            end_at=at + timedelta(days=30),
            max_runs=12,
            missed_runs=MissedRuns.ALL,
            runs=3,
            last_instant=at - timedelta(minutes=5),
            created_at=at - timedelta(days=1),
            not_before=at - timedelta(hours=1),
            next_run_at=at + timedelta(minutes=5),
        )
        assert await store.save_schedule(record, expected_version=None)
        assert await store.get_schedule(record.id) == record
        assert await store.find_schedule("billing", "nightly") == record
        assert await store.find_schedule("billing", "weekly") is None
        assert await store.find_schedule("other", "nightly") is None

    async def test_a_second_schedule_with_the_same_key_or_id_is_not_created(
        self, store: Store
    ) -> None:
        first = await saved(store)
        assert not await store.save_schedule(make_record(), expected_version=None)
        same_id = make_record(id=first.id, key="other")
        assert not await store.save_schedule(same_id, expected_version=None)
        assert await store.save_schedule(make_record(source="shipping"), expected_version=None)
        assert await store.find_schedule("billing", "nightly") == first

    async def test_an_update_applies_only_to_the_version_it_read(self, store: Store) -> None:
        record = await saved(store)
        changed = replace(
            record,
            schedule=replace(record.schedule, max_runs=5, paused=True),
            version=2,
        )
        assert await store.save_schedule(changed, expected_version=1)
        assert not await store.save_schedule(replace(changed, version=2), expected_version=1)
        stored = await store.get_schedule(record.id)
        assert stored is not None
        assert (stored.version, stored.schedule.max_runs, stored.state) == (
            2,
            5,
            ScheduleState.PAUSED,
        )

    async def test_an_update_never_changes_the_source_or_the_key(self, store: Store) -> None:
        record = await saved(store)
        moved = replace(
            record, schedule=replace(record.schedule, source="other", key="renamed"), version=2
        )
        assert await store.save_schedule(moved, expected_version=1)
        stored = await store.get_schedule(record.id)
        assert stored is not None
        assert (stored.schedule.source, stored.schedule.key) == ("billing", "nightly")

    async def test_a_schedule_of_another_source_is_neither_seen_nor_deleted(
        self, store: Store
    ) -> None:
        record = await saved(store)
        assert await store.get_schedule(record.id, sources=["shipping"]) is None
        assert await store.get_schedule(record.id, sources=[]) is None
        assert not await store.delete_schedule(record.id, sources=["shipping"])
        assert await store.get_schedule(record.id, sources=["billing"]) == record
        assert await store.delete_schedule(record.id, sources=["billing"])
        assert await store.get_schedule(record.id) is None
        assert not await store.delete_schedule(record.id)

    async def test_a_deleted_key_can_be_declared_again(self, store: Store) -> None:
        record = await saved(store)
        assert await store.delete_schedule(record.id)
        again = await saved(store)
        assert await store.find_schedule("billing", "nightly") == again

    async def test_listing_pages_through_by_source_then_key(self, store: Store) -> None:
        keys = ["b", "a", "A", "a-2", "z", "é", "a.1", "Z9"]
        records = [await saved(store, key=k, source=s) for s in ("src-b", "src-a") for k in keys]
        expected = sorted(
            records,
            key=lambda r: (
                r.schedule.source.encode("utf-32-be"),
                r.schedule.key.encode("utf-32-be"),
            ),
        )
        listed: list[ScheduleRecord] = []
        after: SchedulePosition | None = None
        while True:
            page = await store.list_schedules(ScheduleQuery(), 3, after)
            listed.extend(page.schedules)
            if page.next_after is None:
                break
            assert len(page.schedules) == 3
            after = SchedulePosition.decode(page.next_after.encode())
        assert [r.id for r in listed] == [r.id for r in expected]

    async def test_listing_filters_by_source_and_state(self, store: Store) -> None:
        running = await saved(store, key="running")
        paused = await saved(store, key="paused", paused=True)
        ended = await saved(store, key="ended")
        ended_record = replace(ended, next_run_at=None, version=2)
        assert await store.save_schedule(ended_record, expected_version=1)
        other = await saved(store, key="running", source="shipping")

        async def ids(query: ScheduleQuery) -> set[str]:
            return {r.id for r in (await store.list_schedules(query, 100)).schedules}

        assert await ids(ScheduleQuery(state=ScheduleState.ACTIVE)) == {running.id, other.id}
        assert await ids(ScheduleQuery(state=ScheduleState.PAUSED)) == {paused.id}
        assert await ids(ScheduleQuery(state=ScheduleState.ENDED)) == {ended.id}
        assert await ids(ScheduleQuery(sources=frozenset({"shipping"}))) == {other.id}
        assert await ids(ScheduleQuery(sources=frozenset())) == set()
        counts = await store.count_schedules()
        assert counts == {
            ScheduleState.ACTIVE: 2,
            ScheduleState.PAUSED: 1,
            ScheduleState.ENDED: 1,
        }
        assert (await store.count_schedules(["shipping"]))[ScheduleState.ACTIVE] == 1

    async def test_due_schedules_are_the_running_ones_due_by_then_earliest_first(
        self, store: Store
    ) -> None:
        now = utc_now()
        late = await saved(store, key="late", next_run_at=now - timedelta(minutes=5))
        due = await saved(store, key="due", next_run_at=now - timedelta(seconds=1))
        await saved(store, key="later", next_run_at=now + timedelta(minutes=5))
        await saved(store, key="paused", next_run_at=now - timedelta(minutes=9), paused=True)
        ended = await saved(store, key="ended")
        assert await store.save_schedule(
            replace(ended, next_run_at=None, version=2), expected_version=1
        )
        found = await store.due_schedules(now, 10)
        assert [r.id for r in found] == [late.id, due.id]
        assert [r.id for r in await store.due_schedules(now, 1)] == [late.id]
        ahead = await store.due_schedules(now + timedelta(minutes=6), 10)
        assert len(ahead) == 3

    async def test_materialising_writes_the_events_and_the_schedule_together(
        self, store: Store
    ) -> None:
        instant = utc_now().replace(microsecond=0)
        record = await saved(store, next_run_at=instant)
        event = occurrence_of(record, instant)
        after = advanced(record, instant)
        assert await store.materialise([Materialisation(after, 1, [event])]) == [record.id]
        assert await store.get_schedule(record.id) == after
        stored = await store.get(event.id)
        assert stored is not None
        assert (stored.external_job_id, stored.scheduled_at) == (
            event.external_job_id,
            instant,
        )
        assert stored.extra[SCHEDULE_ID_EXTRA] == record.id

    async def test_a_stale_plan_writes_neither_its_events_nor_the_schedule(
        self, store: Store
    ) -> None:
        instant = utc_now().replace(microsecond=0)
        record = await saved(store, next_run_at=instant)
        paused = replace(record, schedule=replace(record.schedule, paused=True), version=2)
        assert await store.save_schedule(paused, expected_version=1)
        stale = occurrence_of(record, instant)
        assert (
            await store.materialise([Materialisation(advanced(record, instant), 1, [stale])]) == []
        )
        assert await store.get(stale.id) is None
        assert await store.get_schedule(record.id) == paused

    async def test_one_plan_of_a_batch_going_stale_keeps_the_others(self, store: Store) -> None:
        instant = utc_now().replace(microsecond=0)
        first = await saved(store, key="first", next_run_at=instant)
        second = await saved(store, key="second", next_run_at=instant)
        assert await store.save_schedule(replace(second, version=2), expected_version=1)
        events = [occurrence_of(first, instant), occurrence_of(second, instant)]
        batch = [
            Materialisation(advanced(first, instant), 1, [events[0]]),
            Materialisation(advanced(second, instant), 1, [events[1]]),
        ]
        assert await store.materialise(batch) == [first.id]
        assert await store.get(events[0].id) is not None
        assert await store.get(events[1].id) is None

    async def test_an_occurrence_planned_twice_is_stored_once(self, store: Store) -> None:
        # A planner that crashed after its commit, or lost its leadership mid-way, plans the
        # same instant again from a newer version: the event is not stored a second time.
        instant = utc_now().replace(microsecond=0)
        record = await saved(store, next_run_at=instant)
        event = occurrence_of(record, instant)
        once = advanced(record, instant)
        assert await store.materialise([Materialisation(once, 1, [event])]) == [record.id]
        twice = replace(once, version=3)
        again = replace(event, created_at=utc_now())
        assert await store.materialise([Materialisation(twice, 2, [again])]) == [record.id]
        page = await store.schedule_occurrences(record.id, 10)
        assert [e.id for e in page.events] == [event.id]
        # And an event already submitted under the occurrence's dedup key holds it.
        later = instant + timedelta(seconds=60)
        twin = replace(occurrence_of(record, later), id=new_event_id(later), extra={})
        await insert_events(store, twin)
        third = replace(advanced(twice, later), version=4)
        clash = occurrence_of(record, later)
        assert await store.materialise([Materialisation(third, 3, [clash])]) == [record.id]
        assert await store.get(clash.id) is None

    async def test_of_two_planners_with_the_same_plan_one_writes(self, store: Store) -> None:
        instant = utc_now().replace(microsecond=0)
        record = await saved(store, next_run_at=instant)
        plan = Materialisation(advanced(record, instant), 1, [occurrence_of(record, instant)])
        results = await asyncio.gather(store.materialise([plan]), store.materialise([plan]))
        assert sorted(len(applied) for applied in results) == [0, 1]
        stored = await store.get_schedule(record.id)
        assert stored is not None
        assert stored.version == 2

    async def test_occurrences_are_listed_newest_first_a_page_at_a_time(self, store: Store) -> None:
        base = utc_now().replace(microsecond=0)
        record = await saved(store, next_run_at=base)
        other = await saved(store, key="other", next_run_at=base)
        instants = [base + timedelta(seconds=60 * n) for n in range(7)]
        events = [occurrence_of(record, instant) for instant in instants]
        plan = Materialisation(advanced(record, instants[-1], runs=7), 1, events)
        noise = Materialisation(advanced(other, base), 1, [occurrence_of(other, base)])
        assert sorted(await store.materialise([plan, noise])) == sorted([record.id, other.id])
        await insert_events(store, make_event(source="billing"))
        listed: list[str] = []
        before: Cursor | None = None
        while True:
            page = await store.schedule_occurrences(record.id, 3, before)
            listed.extend(event.id for event in page.events)
            if page.next_cursor is None:
                break
            before = page.next_cursor
        assert listed == [event.id for event in reversed(events)]
