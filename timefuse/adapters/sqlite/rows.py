"""Conversions between domain objects and SQLite rows (times as integer microseconds, UTC).

Every mapping is derived from :data:`timefuse.domain.event.EVENT_COLUMNS`, by each column's
kind: nothing here names an event field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from timefuse.domain.event import EVENT_COLUMN_NAMES, EVENT_COLUMNS, Event, Kind
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AttemptRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Row = Sequence[Any]

SQL_TYPES = {
    Kind.ID: "TEXT",
    Kind.TEXT: "TEXT",
    Kind.INSTANT: "INTEGER",
    Kind.INTEGER: "INTEGER",
    Kind.REAL: "REAL",
    Kind.BYTES: "BLOB",
    Kind.JSON: "TEXT",
    Kind.STATUS: "TEXT",
}


def to_micros(moment: datetime) -> int:
    # A naive datetime would be read as local time by some paths and UTC by others: refuse it
    # rather than store an instant nobody meant.
    if moment.tzinfo is None:
        raise ValueError(f"the event store needs timezone-aware datetimes, got {moment!r}")
    return (moment - _EPOCH) // _MICROSECOND


def optional_micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def micros_of_seconds(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _encode_json(value: dict[str, object]) -> str:
    return json.dumps(value, separators=(",", ":")) if value else "{}"


def _decode_json(text: str) -> dict[str, object]:
    if text == "{}":
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a stored JSON column does not hold an object")
    return value


_Encode = Callable[[Any], Any]

_ENCODERS: dict[Kind, _Encode] = {
    Kind.INSTANT: to_micros,
    Kind.BYTES: bytes,
    Kind.JSON: _encode_json,
    Kind.STATUS: lambda status: EventStatus(status).value,
}
_DECODERS: dict[Kind, _Encode] = {
    Kind.INSTANT: from_micros,
    Kind.BYTES: bytes,
    Kind.JSON: _decode_json,
    Kind.STATUS: EventStatus,
}


def _nullable(convert: _Encode) -> _Encode:
    return lambda value: None if value is None else convert(value)


def _converters(table: dict[Kind, _Encode]) -> list[tuple[str, _Encode | None]]:
    found: list[tuple[str, _Encode | None]] = []
    for column in EVENT_COLUMNS:
        convert = table.get(column.kind)
        if convert is not None and column.nullable:
            convert = _nullable(convert)
        found.append((column.name, convert))
    return found


_TO_ROW = _converters(_ENCODERS)
_FROM_ROW = _converters(_DECODERS)


def event_to_row(event: Event) -> tuple[Any, ...]:
    """The values of an event in the order of :data:`EVENT_COLUMN_NAMES`."""
    return tuple(
        getattr(event, name) if convert is None else convert(getattr(event, name))
        for name, convert in _TO_ROW
    )


def row_to_event(row: Row) -> Event:
    """An event from a row selected in the order of :data:`EVENT_COLUMN_NAMES`."""
    return Event(
        **{
            name: value if convert is None else convert(value)
            for (name, convert), value in zip(_FROM_ROW, row, strict=True)
        }
    )


def row_to_attempt(row: Row) -> AttemptRecord:
    return AttemptRecord(
        attempt=row[0],
        started_at=from_micros(row[1]),
        duration_ms=row[2],
        outcome=OutcomeKind(row[3]),
        status_code=row[4],
        error=row[5],
        worker=row[6],
        sequence=row[7],
    )


# -- claimed rows as one JSON value (see queries.CLAIMED_EVENTS_JSON) -------------------------

# JSON renders a REAL with only 15 significant digits, so REAL columns travel as quote() text,
# which is exact above this magnitude; a row holding a smaller one is read again normally.
_QUOTE_EXACT_ABOVE = 1e-290


def json_column(name: str) -> str:
    """The expression that carries column ``name`` in a claimed row's JSON array."""
    kind = _KINDS[name]
    if kind is Kind.BYTES:
        return f"hex({name})"
    if kind is Kind.REAL:
        return f"quote({name})"
    return name


_KINDS = {column.name: column.kind for column in EVENT_COLUMNS}
_HEX_POSITIONS = tuple(i for i, c in enumerate(EVENT_COLUMNS) if c.kind is Kind.BYTES)
_REAL_POSITIONS = tuple(i for i, c in enumerate(EVENT_COLUMNS) if c.kind is Kind.REAL)


def json_row_to_event(row: list[Any]) -> Event:
    """An event from one row of the claimed-rows JSON, decoded in place.

    Raises :class:`ValueError` for a REAL that text may not carry exactly (see above).
    """
    for position in _HEX_POSITIONS:
        row[position] = bytes.fromhex(row[position])
    for position in _REAL_POSITIONS:
        text = row[position]
        if text == "NULL":
            row[position] = None
            continue
        value = float(text)
        if value and abs(value) < _QUOTE_EXACT_ABOVE:
            raise ValueError("a REAL column is too small to read from text exactly")
        row[position] = value
    return row_to_event(row)


__all__ = [
    "EVENT_COLUMN_NAMES",
    "SQL_TYPES",
    "event_to_row",
    "from_micros",
    "json_column",
    "json_row_to_event",
    "micros_of_seconds",
    "optional_micros",
    "row_to_attempt",
    "row_to_event",
    "to_micros",
]
