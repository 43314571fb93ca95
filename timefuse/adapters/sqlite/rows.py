"""Conversions between domain objects and SQLite rows (times as integer microseconds, UTC)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from timefuse.domain.event import Event
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AttemptRecord

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Row = Sequence[Any]


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


def _optional_datetime(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def _encode_extra(extra: dict[str, object]) -> str:
    return json.dumps(extra, separators=(",", ":")) if extra else "{}"


def _decode_extra(text: str) -> dict[str, object]:
    if text == "{}":
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("the stored extra field is not a JSON object")
    return value


def event_to_row(event: Event) -> tuple[Any, ...]:
    """The values of an event in the order of ``queries.EVENT_COLUMNS``."""
    return (
        event.id,
        event.external_job_id,
        event.source,
        to_micros(event.scheduled_at),
        event.delivery_type,
        event.destination,
        bytes(event.payload),
        to_micros(event.next_attempt_at),
        to_micros(event.created_at),
        to_micros(event.updated_at),
        event.max_retries,
        EventStatus(event.status).value,
        event.attempts,
        event.retry_count,
        event.last_error,
        optional_micros(event.executed_at),
        event.locked_by,
        optional_micros(event.lock_expires_at),
        event.delivery_window_seconds,
        event.retry_backoff_seconds,
        event.retry_backoff_max_seconds,
        _encode_extra(event.extra),
    )


def row_to_event(row: Row) -> Event:
    """An event from a row selected in the order of ``queries.EVENT_COLUMNS``."""
    return Event(
        id=row[0],
        external_job_id=row[1],
        source=row[2],
        scheduled_at=from_micros(row[3]),
        delivery_type=row[4],
        destination=row[5],
        payload=bytes(row[6]),
        next_attempt_at=from_micros(row[7]),
        created_at=from_micros(row[8]),
        updated_at=from_micros(row[9]),
        max_retries=row[10],
        status=EventStatus(row[11]),
        attempts=row[12],
        retry_count=row[13],
        last_error=row[14],
        executed_at=_optional_datetime(row[15]),
        locked_by=row[16],
        lock_expires_at=_optional_datetime(row[17]),
        delivery_window_seconds=row[18],
        retry_backoff_seconds=row[19],
        retry_backoff_max_seconds=row[20],
        extra=_decode_extra(row[21]),
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


# Below 1e-290 in magnitude SQLite's quote() can lose the last digit of a REAL (it's exact
# above): a row holding such a value is read again the ordinary way.
_QUOTE_EXACT_ABOVE = 1e-290


def json_row_to_event(row: list[Any], real_positions: Sequence[int], payload: int) -> Event:
    """An event from one row of ``queries.CLAIMED_EVENTS_JSON``, decoded in place.

    Raises :class:`ValueError` for a REAL that text may not carry exactly (see above).
    """
    row[payload] = bytes.fromhex(row[payload])
    for position in real_positions:
        text = row[position]
        if text == "NULL":
            row[position] = None
            continue
        value = float(text)
        if value and abs(value) < _QUOTE_EXACT_ABOVE:
            raise ValueError("a REAL column is too small to read from text exactly")
        row[position] = value
    return row_to_event(row)


def attempt_json_row(event_id: str, record: AttemptRecord) -> list[Any]:
    """One element of ``queries.INSERT_ATTEMPTS_IF_LEASED``'s batch."""
    return [
        event_id,
        record.attempt,
        to_micros(record.started_at),
        record.duration_ms,
        OutcomeKind(record.outcome).value,
        record.status_code,
        record.error,
        record.worker,
    ]
