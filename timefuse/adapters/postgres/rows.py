"""Conversions between domain objects and PostgreSQL rows and array parameters.

Every mapping is derived from :data:`timefuse.domain.event.EVENT_COLUMNS`, by each column's
kind: nothing here names an event field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from timefuse.domain.event import EVENT_COLUMN_NAMES, EVENT_COLUMNS, Event, Kind
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AttemptRecord, ClaimRef, OutcomeUpdate

Row = Sequence[Any]

_SQL_TYPES = {
    Kind.ID: "text",
    Kind.TEXT: "text",
    Kind.INSTANT: "timestamptz",
    Kind.INTEGER: "integer",
    Kind.REAL: "double precision",
    Kind.BYTES: "bytea",
    Kind.JSON: "jsonb",
    Kind.STATUS: "text",
}

# The events table's columns in the order every query selects them, with the SQL type their
# array parameters are cast to.
EVENT_SQL_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (column.name, _SQL_TYPES[column.kind]) for column in EVENT_COLUMNS
)


def aware(moment: datetime) -> datetime:
    # A naive datetime would be read in the session's time zone: refuse it rather than store
    # an instant nobody meant.
    if moment.tzinfo is None:
        raise ValueError(f"the event store needs timezone-aware datetimes, got {moment!r}")
    return moment


def _optional_aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else aware(moment)


def _encode_json(value: dict[str, object]) -> str:
    return json.dumps(value, separators=(",", ":")) if value else "{}"


_Convert = Callable[[Any], Any]

_TO_PARAMETER: dict[Kind, _Convert] = {
    Kind.INSTANT: aware,
    Kind.BYTES: bytes,
    Kind.JSON: _encode_json,
    Kind.STATUS: lambda status: EventStatus(status).value,
    Kind.REAL: float,
}
_FROM_ROW: dict[Kind, _Convert] = {
    Kind.BYTES: bytes,
    Kind.JSON: dict,
    Kind.STATUS: EventStatus,
}


def _converters(table: dict[Kind, _Convert]) -> list[tuple[str, _Convert | None]]:
    found: list[tuple[str, _Convert | None]] = []
    for column in EVENT_COLUMNS:
        convert = table.get(column.kind)
        if convert is not None and column.nullable:
            inner = convert
            convert = lambda value, inner=inner: None if value is None else inner(value)  # noqa: E731
        found.append((column.name, convert))
    return found


_PARAMETERS = _converters(_TO_PARAMETER)
_DECODE = _converters(_FROM_ROW)
_JSON_POSITIONS = [i for i, c in enumerate(EVENT_COLUMNS) if c.kind is Kind.JSON]


def event_values(event: Event) -> tuple[Any, ...]:
    """The values of an event in the order of :data:`EVENT_SQL_COLUMNS`."""
    return tuple(
        getattr(event, name) if convert is None else convert(getattr(event, name))
        for name, convert in _PARAMETERS
    )


def event_arrays(events: Sequence[Event]) -> dict[str, list[Any]]:
    """One array per column, the shape ``unnest`` takes: one parameter per column, not per row."""
    if not events:
        return {name: [] for name in EVENT_COLUMN_NAMES}
    columns = zip(*(event_values(event) for event in events), strict=True)
    return dict(zip(EVENT_COLUMN_NAMES, map(list, columns), strict=True))


def copy_row(event: Event) -> tuple[Any, ...]:
    """The values of an event for a binary COPY into ``timefuse_staging``."""
    values = list(event_values(event))
    # The binary jsonb dumper encodes the object itself; the JSON text would be encoded again.
    for position in _JSON_POSITIONS:
        values[position] = getattr(event, EVENT_COLUMNS[position].name)
    return tuple(values)


def row_to_event(row: Row) -> Event:
    """An event from a row selected in the order of :data:`EVENT_SQL_COLUMNS`."""
    return Event(
        **{
            name: value if convert is None else convert(value)
            for (name, convert), value in zip(_DECODE, row, strict=True)
        }
    )


def outcome_arrays(updates: Sequence[OutcomeUpdate]) -> dict[str, list[Any]]:
    """The columns of ``queries.RECORD_OUTCOMES``'s input, one array each."""
    records = [update.attempt for update in updates]
    return {
        "event_id": [update.ref.event_id for update in updates],
        "claim": [update.ref.claim for update in updates],
        "worker": [update.ref.worker for update in updates],
        "status": [EventStatus(update.status).value for update in updates],
        "retry_count": [update.retry_count for update in updates],
        "last_error": [update.last_error for update in updates],
        "retry_delay": [update.retry_delay_seconds for update in updates],
        "executed_at": [_optional_aware(update.executed_at) for update in updates],
        "attempt": [record.attempt for record in records],
        "started_at": [aware(record.started_at) for record in records],
        "duration_ms": [float(record.duration_ms) for record in records],
        "outcome": [OutcomeKind(record.outcome).value for record in records],
        "status_code": [record.status_code for record in records],
        "error": [record.error for record in records],
    }


def ref_arrays(refs: Sequence[ClaimRef]) -> dict[str, list[Any]]:
    return {
        "ids": [ref.event_id for ref in refs],
        "claims": [ref.claim for ref in refs],
        "workers": [ref.worker for ref in refs],
    }


def row_to_attempt(row: Row) -> AttemptRecord:
    return AttemptRecord(
        attempt=row[0],
        started_at=row[1],
        duration_ms=row[2],
        outcome=OutcomeKind(row[3]),
        status_code=row[4],
        error=row[5],
        worker=row[6],
        sequence=row[7],
    )
