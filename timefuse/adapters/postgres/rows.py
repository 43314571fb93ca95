"""Conversions between domain objects and PostgreSQL rows and array parameters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from timefuse.domain.event import Event
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import AttemptRecord, OutcomeUpdate

Row = Sequence[Any]

# The events table's columns in the order every query selects them, with the SQL type their
# array parameters are cast to.
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text"),
    ("external_job_id", "text"),
    ("source", "text"),
    ("scheduled_at", "timestamptz"),
    ("delivery_type", "text"),
    ("destination", "text"),
    ("payload", "bytea"),
    ("next_attempt_at", "timestamptz"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("max_retries", "integer"),
    ("status", "text"),
    ("attempts", "integer"),
    ("retry_count", "integer"),
    ("last_error", "text"),
    ("executed_at", "timestamptz"),
    ("locked_by", "text"),
    ("lock_expires_at", "timestamptz"),
    ("delivery_window_seconds", "double precision"),
    ("retry_backoff_seconds", "double precision"),
    ("retry_backoff_max_seconds", "double precision"),
    ("extra", "jsonb"),
)
EVENT_COLUMN_NAMES = tuple(name for name, _ in EVENT_COLUMNS)


def aware(moment: datetime) -> datetime:
    # A naive datetime would be read in the session's time zone: refuse it rather than store
    # an instant nobody meant.
    if moment.tzinfo is None:
        raise ValueError(f"the event store needs timezone-aware datetimes, got {moment!r}")
    return moment


def _optional_aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else aware(moment)


def _encode_extra(extra: dict[str, object]) -> str:
    return json.dumps(extra, separators=(",", ":")) if extra else "{}"


def event_values(event: Event) -> tuple[Any, ...]:
    """The values of an event in the order of :data:`EVENT_COLUMNS`."""
    return (
        event.id,
        event.external_job_id,
        event.source,
        aware(event.scheduled_at),
        event.delivery_type,
        event.destination,
        bytes(event.payload),
        aware(event.next_attempt_at),
        aware(event.created_at),
        aware(event.updated_at),
        event.max_retries,
        EventStatus(event.status).value,
        event.attempts,
        event.retry_count,
        event.last_error,
        _optional_aware(event.executed_at),
        event.locked_by,
        _optional_aware(event.lock_expires_at),
        float(event.delivery_window_seconds),
        event.retry_backoff_seconds,
        event.retry_backoff_max_seconds,
        _encode_extra(event.extra),
    )


def event_arrays(events: Sequence[Event]) -> dict[str, list[Any]]:
    """One array per column, the shape ``unnest`` takes: one parameter per column, not per row."""
    if not events:
        return {name: [] for name in EVENT_COLUMN_NAMES}
    columns = zip(*(event_values(event) for event in events), strict=True)
    return dict(zip(EVENT_COLUMN_NAMES, map(list, columns), strict=True))


def copy_row(event: Event) -> tuple[Any, ...]:
    """The values of an event for a binary COPY into ``timefuse_staging``."""
    # The binary jsonb dumper encodes the object itself; the JSON text would be encoded again.
    return (*event_values(event)[:-1], event.extra)


def row_to_event(row: Row) -> Event:
    """An event from a row selected in the order of :data:`EVENT_COLUMNS`."""
    return Event(
        id=row[0],
        external_job_id=row[1],
        source=row[2],
        scheduled_at=row[3],
        delivery_type=row[4],
        destination=row[5],
        payload=bytes(row[6]),
        next_attempt_at=row[7],
        created_at=row[8],
        updated_at=row[9],
        max_retries=row[10],
        status=EventStatus(row[11]),
        attempts=row[12],
        retry_count=row[13],
        last_error=row[14],
        executed_at=row[15],
        locked_by=row[16],
        lock_expires_at=row[17],
        delivery_window_seconds=row[18],
        retry_backoff_seconds=row[19],
        retry_backoff_max_seconds=row[20],
        extra=dict(row[21]),
    )


def outcome_arrays(updates: Sequence[OutcomeUpdate]) -> dict[str, list[Any]]:
    """The columns of ``queries.RECORD_OUTCOMES``'s input, one array each."""
    records = [update.attempt for update in updates]
    return {
        "event_id": [update.event_id for update in updates],
        "status": [EventStatus(update.status).value for update in updates],
        "retry_count": [update.retry_count for update in updates],
        "last_error": [update.last_error for update in updates],
        "next_attempt_at": [_optional_aware(update.next_attempt_at) for update in updates],
        "executed_at": [_optional_aware(update.executed_at) for update in updates],
        "attempt": [record.attempt for record in records],
        "started_at": [aware(record.started_at) for record in records],
        "duration_ms": [float(record.duration_ms) for record in records],
        "outcome": [OutcomeKind(record.outcome).value for record in records],
        "status_code": [record.status_code for record in records],
        "error": [record.error for record in records],
        "worker": [record.worker for record in records],
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
