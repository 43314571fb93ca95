"""The rule layer's schedule calls: checked here once, for every adapter (see
:class:`timefuse.service.store.Store`, which carries them)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from timefuse.domain.cursor import Cursor
from timefuse.domain.schedule import ScheduleState
from timefuse.ports.store import (
    EventPage,
    Materialisation,
    SchedulePage,
    SchedulePosition,
    ScheduleQuery,
    ScheduleRecord,
    source_set,
)
from timefuse.ports.store.schedules import SCHEDULE_ID_EXTRA

if TYPE_CHECKING:
    from timefuse.ports.store import StoreAdapter


def _aware(name: str, moment: datetime | None) -> None:
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")


def _limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return limit


def check_record(record: ScheduleRecord) -> ScheduleRecord:
    """``record`` if it is a schedule a store may keep; :class:`ValueError` otherwise."""
    schedule = record.schedule
    if not schedule.id or not schedule.key or not schedule.source:
        raise ValueError("a schedule needs an id, a key and a source")
    if (schedule.cron is None) == (schedule.every_seconds is None):
        raise ValueError("a schedule has exactly one of cron and every_seconds")
    for name in ("created_at", "not_before", "start_at", "end_at", "last_instant"):
        _aware(name, getattr(schedule, name))
    _aware("next_run_at", record.next_run_at)
    _aware("updated_at", record.updated_at)
    if record.version < 1:
        raise ValueError(f"a stored schedule's version starts at 1, got {record.version}")
    return record


class ScheduleRules:
    """The schedule role of the store, behind its rules."""

    _adapter: StoreAdapter

    async def save_schedule(self, record: ScheduleRecord, *, expected_version: int | None) -> bool:
        check_record(record)
        wanted = 1 if expected_version is None else expected_version + 1
        if record.version != wanted:
            raise ValueError(f"the schedule's new version must be {wanted}, got {record.version}")
        return await self._adapter.save_schedule(record, expected_version=expected_version)

    async def get_schedule(
        self, schedule_id: str, *, sources: Collection[str] | None = None
    ) -> ScheduleRecord | None:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return None
        return await self._adapter.get_schedule(schedule_id, sources=wanted)

    async def find_schedule(self, source: str, key: str) -> ScheduleRecord | None:
        return await self._adapter.find_schedule(source, key)

    async def list_schedules(
        self, query: ScheduleQuery, limit: int, after: SchedulePosition | None = None
    ) -> SchedulePage:
        _limit(limit)
        if query.sources is not None and not query.sources:
            return SchedulePage([], None)
        return await self._adapter.list_schedules(query, limit, after)

    async def delete_schedule(
        self, schedule_id: str, *, sources: Collection[str] | None = None
    ) -> bool:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return False
        return await self._adapter.delete_schedule(schedule_id, sources=wanted)

    async def due_schedules(self, until: datetime, limit: int) -> list[ScheduleRecord]:
        _aware("until", until)
        return await self._adapter.due_schedules(until, _limit(limit))

    async def materialise(self, batch: Sequence[Materialisation]) -> list[str]:
        """Write the plans; each applies only if its schedule still has the version it
        names, and its events are new PENDING events of that schedule."""
        # Imported here: store.py imports this module for the Store class.
        from timefuse.service.store import _insertable

        checked: list[Materialisation] = []
        for plan in batch:
            check_record(plan.record)
            if plan.record.version != plan.expected_version + 1:
                raise ValueError("a plan's schedule version must be one more than the expected")
            schedule = plan.record.schedule
            for event in plan.events:
                if event.source != schedule.source:
                    raise ValueError("an occurrence has its schedule's source")
                if event.extra.get(SCHEDULE_ID_EXTRA) != schedule.id:
                    raise ValueError("an occurrence names its schedule in extra")
            events = [_insertable(event) for event in plan.events]
            checked.append(Materialisation(plan.record, plan.expected_version, events))
        if not checked:
            return []
        if len({plan.record.id for plan in checked}) != len(checked):
            raise ValueError("a batch holds one plan per schedule")
        return await self._adapter.materialise(checked)

    async def count_schedules(
        self, sources: Collection[str] | None = None
    ) -> Mapping[ScheduleState, int]:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return dict.fromkeys(ScheduleState, 0)
        counts = await self._adapter.count_schedules(wanted)
        return {state: counts.get(state, 0) for state in ScheduleState}

    async def schedule_occurrences(
        self, schedule_id: str, limit: int, before: Cursor | None = None
    ) -> EventPage:
        return await self._adapter.schedule_occurrences(schedule_id, _limit(limit), before)
