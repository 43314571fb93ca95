"""The schedules role of the PostgreSQL store: rows of ``timefuse_schedules``, and occurrences.

Writes of a schedule are compare-and-set on its ``version``: an ``UPDATE ... WHERE version =
expected`` that a concurrent writer's commit makes match nothing. A batch of plans is one
``UPDATE ... FROM unnest(...)`` and one insert of the occurrences whose schedule it changed,
in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from timefuse.adapters.postgres.connection import Connection, fetch_binary
from timefuse.adapters.postgres.inserts import insert_events, past_attaching_partitions
from timefuse.adapters.postgres.rows import row_to_event
from timefuse.domain.cursor import Cursor
from timefuse.domain.event import EVENT_COLUMN_NAMES, Event
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

# (column, SQL type) in the order every statement here reads and writes them.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text"), ("source", "text"), ("key", "text"), ("version", "bigint"),
    ("state", "text"), ("next_run_at", "timestamptz"), ("paused", "boolean"),
    ("cron", "text"), ("every_seconds", "bigint"), ("timezone", "text"),
    ("start_at", "timestamptz"), ("end_at", "timestamptz"), ("max_runs", "bigint"),
    ("missed_runs", "text"), ("runs", "bigint"), ("last_instant", "timestamptz"),
    ("not_before", "timestamptz"), ("template", "text"), ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)  # fmt: skip
_NAMES = [name for name, _ in COLUMNS]
_LIST = ", ".join(_NAMES)
_SELECT = f"SELECT {_LIST} FROM timefuse_schedules"

INSERT = (
    f"INSERT INTO timefuse_schedules ({_LIST}) "
    f"VALUES ({', '.join(f'%({name})s' for name in _NAMES)}) ON CONFLICT DO NOTHING"
)
# id, source, key and created_at never change.
_FIXED = ("id", "source", "key", "created_at")
_CHANGING = [(name, sql_type) for name, sql_type in COLUMNS if name not in _FIXED]
UPDATE = f"""
UPDATE timefuse_schedules AS s
   SET {", ".join(f"{name} = u.{name}" for name, _ in _CHANGING)}
  FROM unnest(%(id)s::text[], %(expected)s::bigint[],
              {", ".join(f"%({name})s::{sql_type}[]" for name, sql_type in _CHANGING)})
       AS u (id, expected, {", ".join(name for name, _ in _CHANGING)})
 WHERE s.id = u.id AND s.version = u.expected
RETURNING s.id
"""
_OF_SOURCES = "(%(sources)s::text[] IS NULL OR source = ANY(%(sources)s::text[]))"
GET = f"{_SELECT} WHERE id = %(id)s AND {_OF_SOURCES}"
FIND = f"{_SELECT} WHERE source = %(source)s AND key = %(key)s"
DELETE = f"DELETE FROM timefuse_schedules WHERE id = %(id)s AND {_OF_SOURCES}"
DUE = f"""
{_SELECT} WHERE state = 'ACTIVE' AND next_run_at <= %(until)s
 ORDER BY next_run_at LIMIT %(limit)s
"""
COUNT = f"SELECT state, count(*) FROM timefuse_schedules WHERE {_OF_SOURCES} GROUP BY state"
_EVENTS = ", ".join(EVENT_COLUMN_NAMES)
# The partial index's condition follows from the equality; the order is the index's, backwards.
OCCURRENCES = f"""
SELECT {_EVENTS} FROM events
 WHERE (extra ->> 'schedule_id') = %(schedule)s {{before}}
 ORDER BY scheduled_at DESC, id DESC
 LIMIT %(limit)s
"""
_BEFORE = "AND (scheduled_at, id) < (%(before_at)s, %(before_id)s)"


def record_params(record: ScheduleRecord) -> dict[str, Any]:
    s = record.schedule
    return {
        "id": s.id,
        "source": s.source,
        "key": s.key,
        "version": record.version,
        "state": record.state.value,
        "next_run_at": record.next_run_at,
        "paused": s.paused,
        "cron": s.cron,
        "every_seconds": s.every_seconds,
        "timezone": s.timezone,
        "start_at": s.start_at,
        "end_at": s.end_at,
        "max_runs": s.max_runs,
        "missed_runs": s.missed_runs.value,
        "runs": s.runs,
        "last_instant": s.last_instant,
        "not_before": s.not_before,
        "template": encode_template(s.template),
        "created_at": s.created_at,
        "updated_at": record.updated_at,
    }


def update_arrays(plans: Sequence[tuple[ScheduleRecord, int]]) -> dict[str, list[Any]]:
    """The UPDATE's array parameters for (new record, expected version) pairs."""
    rows = [record_params(record) for record, _ in plans]
    arrays: dict[str, list[Any]] = {name: [row[name] for row in rows] for name, _ in _CHANGING}
    arrays["id"] = [row["id"] for row in rows]
    arrays["expected"] = [expected for _, expected in plans]
    return arrays


def row_to_record(row: Sequence[Any]) -> ScheduleRecord:
    values = dict(zip(_NAMES, row, strict=True))
    schedule = Schedule(
        id=values["id"],
        key=values["key"],
        source=values["source"],
        template=decode_template(values["template"]),
        created_at=values["created_at"],
        not_before=values["not_before"],
        cron=values["cron"],
        every_seconds=values["every_seconds"],
        timezone=values["timezone"],
        start_at=values["start_at"],
        end_at=values["end_at"],
        max_runs=values["max_runs"],
        missed_runs=MissedRuns(values["missed_runs"]),
        paused=values["paused"],
        runs=values["runs"],
        last_instant=values["last_instant"],
    )
    return ScheduleRecord(schedule, values["next_run_at"], values["version"], values["updated_at"])


def _sources(sources: frozenset[str] | None) -> list[str] | None:
    return None if sources is None else sorted(sources)


class PostgresSchedules:
    """Mixed into :class:`timefuse.adapters.postgres.PostgresEventStore`."""

    _connection: Callable[[], AbstractAsyncContextManager[Connection]]

    async def _records(self, query: str, params: Mapping[str, Any]) -> list[ScheduleRecord]:
        async with self._connection() as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        return [row_to_record(row) for row in rows]

    async def save_schedule(self, record: ScheduleRecord, *, expected_version: int | None) -> bool:
        async with self._connection() as conn:
            if expected_version is None:
                cursor = await conn.execute(INSERT, record_params(record))
            else:
                cursor = await conn.execute(UPDATE, update_arrays([(record, expected_version)]))
            return cursor.rowcount == 1

    async def get_schedule(
        self, schedule_id: str, *, sources: frozenset[str] | None
    ) -> ScheduleRecord | None:
        found = await self._records(GET, {"id": schedule_id, "sources": _sources(sources)})
        return found[0] if found else None

    async def find_schedule(self, source: str, key: str) -> ScheduleRecord | None:
        found = await self._records(FIND, {"source": source, "key": key})
        return found[0] if found else None

    async def list_schedules(
        self, query: ScheduleQuery, limit: int, after: SchedulePosition | None
    ) -> SchedulePage:
        # Absent criteria are left out of the text, so each shape keeps a plan that uses the
        # (source, key) index range.
        terms: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        if query.sources is not None:
            terms.append("source = ANY(%(sources)s::text[])")
            params["sources"] = sorted(query.sources)
        if query.state is not None:
            terms.append("state = %(state)s")
            params["state"] = query.state.value
        if after is not None:
            terms.append("(source, key) > (%(after_source)s, %(after_key)s)")
            params.update(after_source=after.source, after_key=after.key)
        where = " AND ".join(terms) or "true"
        statement = f"{_SELECT} WHERE {where} ORDER BY source, key LIMIT %(limit)s"
        records = await self._records(statement, params)
        if len(records) <= limit:
            return SchedulePage(records, None)
        last = records[limit - 1].schedule
        return SchedulePage(records[:limit], SchedulePosition(last.source, last.key))

    async def delete_schedule(self, schedule_id: str, *, sources: frozenset[str] | None) -> bool:
        async with self._connection() as conn:
            params = {"id": schedule_id, "sources": _sources(sources)}
            return (await conn.execute(DELETE, params)).rowcount == 1

    async def due_schedules(self, until: datetime, limit: int) -> list[ScheduleRecord]:
        return await self._records(DUE, {"until": until, "limit": limit})

    async def materialise(self, batch: Sequence[Materialisation]) -> list[str]:
        arrays = update_arrays([(plan.record, plan.expected_version) for plan in batch])

        async def write() -> list[str]:
            async with self._connection() as conn, conn.transaction():
                cursor = await conn.execute(UPDATE, arrays)
                applied = {row[0] for row in await cursor.fetchall()}
                events: list[Event] = [
                    event for plan in batch if plan.record.id in applied for event in plan.events
                ]
                if events:
                    await insert_events(conn, events)
                return [plan.record.id for plan in batch if plan.record.id in applied]

        return await past_attaching_partitions(write)

    async def count_schedules(self, sources: frozenset[str] | None) -> Mapping[ScheduleState, int]:
        async with self._connection() as conn:
            cursor = await conn.execute(COUNT, {"sources": _sources(sources)})
            return {ScheduleState(state): n for state, n in await cursor.fetchall()}

    async def schedule_occurrences(
        self, schedule_id: str, limit: int, before: Cursor | None
    ) -> EventPage:
        params: dict[str, Any] = {"schedule": schedule_id, "limit": limit + 1}
        term = ""
        if before is not None:
            term = _BEFORE
            params.update(before_at=before.scheduled_at, before_id=before.event_id)
        async with self._connection() as conn:
            rows = await fetch_binary(conn, OCCURRENCES.format(before=term), params)
        events = [row_to_event(row) for row in rows]
        if len(events) <= limit:
            return EventPage(events, None)
        last = events[limit - 1]
        return EventPage(events[:limit], Cursor(last.scheduled_at, last.id))
