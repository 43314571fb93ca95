"""The schedules role of the in-memory store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.schedule import ScheduleState
from timefuse.ports.store import (
    EventPage,
    Materialisation,
    SchedulePage,
    SchedulePosition,
    ScheduleQuery,
    ScheduleRecord,
)
from timefuse.ports.store.schedules import SCHEDULE_ID_EXTRA


def _code_points(text: str) -> bytes:
    # Code point order, as the SQL stores compare source and key (COLLATE "C", BINARY).
    return text.encode("utf-32-be")


def _order(record: ScheduleRecord) -> tuple[bytes, bytes]:
    return (_code_points(record.schedule.source), _code_points(record.schedule.key))


class MemorySchedules:
    """Mixed into :class:`timefuse.adapters.memory.MemoryStore`."""

    # The store's own, which the mixin works on.
    _schedules: dict[str, ScheduleRecord]
    _events: dict[str, Event]
    _enter: Callable[[str], Awaitable[None]]
    _insert_now: Callable[[Sequence[Event]], dict[str, str]]

    def _by_key(self, source: str, key: str) -> ScheduleRecord | None:
        for record in self._schedules.values():
            if record.schedule.source == source and record.schedule.key == key:
                return record
        return None

    async def save_schedule(self, record: ScheduleRecord, *, expected_version: int | None) -> bool:
        await self._enter("save_schedule")
        schedule = record.schedule
        if expected_version is None:
            if schedule.id in self._schedules or self._by_key(schedule.source, schedule.key):
                return False
            self._schedules[schedule.id] = record
            return True
        stored = self._schedules.get(schedule.id)
        if stored is None or stored.version != expected_version:
            return False
        kept = stored.schedule
        self._schedules[schedule.id] = replace(
            record, schedule=replace(schedule, source=kept.source, key=kept.key)
        )
        return True

    async def get_schedule(
        self, schedule_id: str, *, sources: frozenset[str] | None
    ) -> ScheduleRecord | None:
        await self._enter("get_schedule")
        record = self._schedules.get(schedule_id)
        if record is None or (sources is not None and record.schedule.source not in sources):
            return None
        return record

    async def find_schedule(self, source: str, key: str) -> ScheduleRecord | None:
        await self._enter("find_schedule")
        return self._by_key(source, key)

    async def list_schedules(
        self, query: ScheduleQuery, limit: int, after: SchedulePosition | None
    ) -> SchedulePage:
        await self._enter("list_schedules")
        start = None if after is None else (_code_points(after.source), _code_points(after.key))
        found = sorted(
            (
                record
                for record in self._schedules.values()
                if (query.sources is None or record.schedule.source in query.sources)
                and (query.state is None or record.state is query.state)
                and (start is None or _order(record) > start)
            ),
            key=_order,
        )
        page = found[:limit]
        if len(found) <= limit:
            return SchedulePage(page, None)
        last = page[-1].schedule
        return SchedulePage(page, SchedulePosition(last.source, last.key))

    async def delete_schedule(self, schedule_id: str, *, sources: frozenset[str] | None) -> bool:
        await self._enter("delete_schedule")
        record = self._schedules.get(schedule_id)
        if record is None or (sources is not None and record.schedule.source not in sources):
            return False
        del self._schedules[schedule_id]
        return True

    async def due_schedules(self, until: datetime, limit: int) -> list[ScheduleRecord]:
        await self._enter("due_schedules")
        due = [
            record
            for record in self._schedules.values()
            if record.state is ScheduleState.ACTIVE
            and record.next_run_at is not None
            and record.next_run_at <= until
        ]
        due.sort(key=lambda record: (record.next_run_at, record.id))
        return due[:limit]

    async def materialise(self, batch: Sequence[Materialisation]) -> list[str]:
        await self._enter("materialise")
        # No await from here on: the whole batch applies at once, as one transaction would.
        applied: list[str] = []
        for plan in batch:
            stored = self._schedules.get(plan.record.id)
            if stored is None or stored.version != plan.expected_version:
                continue
            kept = stored.schedule
            self._schedules[plan.record.id] = replace(
                plan.record,
                schedule=replace(plan.record.schedule, source=kept.source, key=kept.key),
            )
            self._insert_now(plan.events)
            applied.append(plan.record.id)
        return applied

    async def count_schedules(self, sources: frozenset[str] | None) -> Mapping[ScheduleState, int]:
        await self._enter("count_schedules")
        counts = dict.fromkeys(ScheduleState, 0)
        for record in self._schedules.values():
            if sources is None or record.schedule.source in sources:
                counts[record.state] += 1
        return counts

    async def schedule_occurrences(
        self, schedule_id: str, limit: int, before: Cursor | None
    ) -> EventPage:
        await self._enter("schedule_occurrences")

        def position(event: Event) -> tuple[datetime, Any]:
            return (event.scheduled_at, _code_points(event.id))

        bound = None if before is None else (before.scheduled_at, _code_points(before.event_id))
        found = sorted(
            (
                event
                for event in self._events.values()
                if event.extra.get(SCHEDULE_ID_EXTRA) == schedule_id
                and (bound is None or position(event) < bound)
            ),
            key=position,
            reverse=True,
        )
        page = [replace(event, extra=dict(event.extra)) for event in found[:limit]]
        if len(found) <= limit:
            return EventPage(page, None)
        return EventPage(page, Cursor(page[-1].scheduled_at, page[-1].id))
