"""The schedules role of the SQLite store: rows of ``timefuse_schedules``, and occurrences."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from timefuse.adapters.sqlite import queries
from timefuse.adapters.sqlite.connection import transaction
from timefuse.adapters.sqlite.listing import sources_term
from timefuse.adapters.sqlite.rows import (
    EVENT_COLUMN_NAMES,
    event_to_row,
    from_micros,
    optional_micros,
    row_to_event,
    to_micros,
)
from timefuse.domain.cursor import Cursor
from timefuse.domain.schedule import MissedRuns, Schedule, ScheduleState
from timefuse.ports.store import (
    EventPage,
    Materialisation,
    SchedulePage,
    SchedulePosition,
    ScheduleQuery,
    ScheduleRecord,
)
from timefuse.ports.store.schedules import decode_template, encode_template

T = TypeVar("T")

COLUMNS = (
    "id", "source", "key", "version", "state", "next_run_at", "paused", "cron",
    "every_seconds", "timezone", "start_at", "end_at", "max_runs", "missed_runs", "runs",
    "last_instant", "not_before", "template", "created_at", "updated_at",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM timefuse_schedules"
_INSERT = (
    f"INSERT INTO timefuse_schedules ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT DO NOTHING"
)
# Every column but id, source and key (which never change), set where the version matches.
_UPDATED = COLUMNS[3:]
_UPDATE = (
    "UPDATE timefuse_schedules SET "
    + ", ".join(f"{name} = ?" for name in _UPDATED)
    + " WHERE id = ? AND version = ?"
)
_EVENT_COLUMNS = ", ".join(EVENT_COLUMN_NAMES)
DUE = (
    f"{_SELECT} WHERE state = 'ACTIVE' AND next_run_at <= :until ORDER BY next_run_at LIMIT :limit"
)
# The partial index's own condition, repeated so the planner sees the index applies.
OCCURRENCES = (
    f"SELECT {_EVENT_COLUMNS} FROM events"
    " WHERE json_extract(extra, '$.schedule_id') = :schedule"
    " AND json_extract(extra, '$.schedule_id') IS NOT NULL {before}"
    " ORDER BY scheduled_at DESC, id DESC"
    " LIMIT :limit"
)


def record_to_row(record: ScheduleRecord) -> tuple[Any, ...]:
    s = record.schedule
    return (
        s.id, s.source, s.key, record.version, record.state.value,
        optional_micros(record.next_run_at), int(s.paused), s.cron, s.every_seconds,
        s.timezone, optional_micros(s.start_at), optional_micros(s.end_at), s.max_runs,
        s.missed_runs.value, s.runs, optional_micros(s.last_instant), to_micros(s.not_before),
        encode_template(s.template), to_micros(s.created_at), to_micros(record.updated_at),
    )  # fmt: skip


def _instant(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def row_to_record(row: Sequence[Any]) -> ScheduleRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    schedule = Schedule(
        id=values["id"],
        key=values["key"],
        source=values["source"],
        template=decode_template(values["template"]),
        created_at=from_micros(values["created_at"]),
        not_before=from_micros(values["not_before"]),
        cron=values["cron"],
        every_seconds=values["every_seconds"],
        timezone=values["timezone"],
        start_at=_instant(values["start_at"]),
        end_at=_instant(values["end_at"]),
        max_runs=values["max_runs"],
        missed_runs=MissedRuns(values["missed_runs"]),
        paused=bool(values["paused"]),
        runs=values["runs"],
        last_instant=_instant(values["last_instant"]),
    )
    return ScheduleRecord(
        schedule,
        _instant(values["next_run_at"]),
        values["version"],
        from_micros(values["updated_at"]),
    )


def _update_params(row: tuple[Any, ...], expected_version: int) -> tuple[Any, ...]:
    return (*row[3:], row[0], expected_version)


def save(conn: sqlite3.Connection, row: tuple[Any, ...], expected_version: int | None) -> bool:
    with transaction(conn):
        if expected_version is None:
            return conn.execute(_INSERT, row).rowcount == 1
        return conn.execute(_UPDATE, _update_params(row, expected_version)).rowcount == 1


def get(
    conn: sqlite3.Connection, schedule_id: str, sources: frozenset[str] | None
) -> ScheduleRecord | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (schedule_id,)).fetchone()
    if row is None:
        return None
    record = row_to_record(row)
    return record if sources is None or record.schedule.source in sources else None


def find(conn: sqlite3.Connection, source: str, key: str) -> ScheduleRecord | None:
    row = conn.execute(f"{_SELECT} WHERE source = ? AND key = ?", (source, key)).fetchone()
    return None if row is None else row_to_record(row)


def list_page(
    conn: sqlite3.Connection, query: ScheduleQuery, limit: int, after: SchedulePosition | None
) -> SchedulePage:
    terms: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if query.sources is not None:
        term, names = sources_term(query.sources)
        terms.append(term)
        params.update(names)
    if query.state is not None:
        terms.append("state = :state")
        params["state"] = query.state.value
    if after is not None:
        terms.append("(source, key) > (:after_source, :after_key)")
        params.update(after_source=after.source, after_key=after.key)
    where = " AND ".join(terms) or "1"
    rows = conn.execute(f"{_SELECT} WHERE {where} ORDER BY source, key LIMIT :limit", params)
    records = [row_to_record(row) for row in rows]
    if len(records) <= limit:
        return SchedulePage(records, None)
    last = records[limit - 1].schedule
    return SchedulePage(records[:limit], SchedulePosition(last.source, last.key))


def delete(conn: sqlite3.Connection, schedule_id: str, sources: frozenset[str] | None) -> bool:
    with transaction(conn):
        if get(conn, schedule_id, sources) is None:
            return False
        return (
            conn.execute("DELETE FROM timefuse_schedules WHERE id = ?", (schedule_id,)).rowcount
            == 1
        )


def due(conn: sqlite3.Connection, until: int, limit: int) -> list[ScheduleRecord]:
    rows = conn.execute(DUE, {"until": until, "limit": limit})
    return [row_to_record(row) for row in rows]


Plan = tuple[tuple[Any, ...], int, list[tuple[Any, ...]]]


def materialise(conn: sqlite3.Connection, plans: Sequence[Plan]) -> list[str]:
    """Each plan: the schedule's row, the version it expects, its events' rows."""
    applied: list[str] = []
    with transaction(conn):
        for row, expected_version, events in plans:
            if conn.execute(_UPDATE, _update_params(row, expected_version)).rowcount != 1:
                continue
            conn.executemany(queries.INSERT_EVENT, events)
            applied.append(row[0])
    return applied


def count(conn: sqlite3.Connection, sources: frozenset[str] | None) -> dict[ScheduleState, int]:
    where, params = "1", dict[str, Any]()
    if sources is not None:
        where, params = sources_term(sources)
    rows = conn.execute(
        f"SELECT state, count(*) FROM timefuse_schedules WHERE {where} GROUP BY state", params
    )
    return {ScheduleState(state): n for state, n in rows}


def occurrences(
    conn: sqlite3.Connection, schedule_id: str, limit: int, before: Cursor | None
) -> EventPage:
    params: dict[str, Any] = {"schedule": schedule_id, "limit": limit + 1}
    term = ""
    if before is not None:
        term = "AND (scheduled_at, id) < (:before_at, :before_id)"
        params.update(before_at=to_micros(before.scheduled_at), before_id=before.event_id)
    rows = conn.execute(OCCURRENCES.format(before=term), params)
    events = [row_to_event(row) for row in rows]
    if len(events) <= limit:
        return EventPage(events, None)
    last = events[limit - 1]
    return EventPage(events[:limit], Cursor(last.scheduled_at, last.id))


class SqliteSchedules:
    """Mixed into :class:`timefuse.adapters.sqlite.SqliteEventStore`."""

    _run: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._run(work)
        return result

    async def save_schedule(self, record: ScheduleRecord, *, expected_version: int | None) -> bool:
        row = record_to_row(record)
        return await self._call(lambda conn: save(conn, row, expected_version))

    async def get_schedule(
        self, schedule_id: str, *, sources: frozenset[str] | None
    ) -> ScheduleRecord | None:
        return await self._call(lambda conn: get(conn, schedule_id, sources))

    async def find_schedule(self, source: str, key: str) -> ScheduleRecord | None:
        return await self._call(lambda conn: find(conn, source, key))

    async def list_schedules(
        self, query: ScheduleQuery, limit: int, after: SchedulePosition | None
    ) -> SchedulePage:
        return await self._call(lambda conn: list_page(conn, query, limit, after))

    async def delete_schedule(self, schedule_id: str, *, sources: frozenset[str] | None) -> bool:
        return await self._call(lambda conn: delete(conn, schedule_id, sources))

    async def due_schedules(self, until: datetime, limit: int) -> list[ScheduleRecord]:
        moment = to_micros(until)
        return await self._call(lambda conn: due(conn, moment, limit))

    async def materialise(self, batch: Sequence[Materialisation]) -> list[str]:
        # Rows built here, on the event loop: the SQLite thread only runs the statements.
        plans: list[Plan] = [
            (
                record_to_row(plan.record),
                plan.expected_version,
                [event_to_row(e) for e in plan.events],
            )
            for plan in batch
        ]
        return await self._call(lambda conn: materialise(conn, plans))

    async def count_schedules(self, sources: frozenset[str] | None) -> Mapping[ScheduleState, int]:
        return await self._call(lambda conn: count(conn, sources))

    async def schedule_occurrences(
        self, schedule_id: str, limit: int, before: Cursor | None
    ) -> EventPage:
        return await self._call(lambda conn: occurrences(conn, schedule_id, limit, before))
