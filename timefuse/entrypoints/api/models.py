"""Request and response bodies, as msgspec structs."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from timefuse.domain.event import Event
from timefuse.entrypoints.api.envelope import FieldErrorOut


class EventIn(msgspec.Struct):
    """One submitted event, decoded permissively.

    Every field takes any JSON value so that a value of the wrong type reaches the domain
    rules, which report all bad fields together, instead of failing the decode at the first
    one. ``payload`` stays the client's raw JSON: it is stored and delivered as sent, never
    decoded and re-encoded. Unknown fields are ignored, as the seed did.
    """

    external_job_id: object = None
    source: object = None
    scheduled_at: object = None
    delivery_type: object = None
    destination: object = None
    payload: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    max_retries: object = None
    delivery_window_seconds: object = None
    retry_backoff_seconds: object = None
    retry_backoff_max_seconds: object = None

    def to_fields(self) -> dict[str, object]:
        """The plain mapping :func:`~timefuse.domain.validation.build_event` reads."""
        return {
            "external_job_id": self.external_job_id,
            "source": self.source,
            "scheduled_at": self.scheduled_at,
            "delivery_type": self.delivery_type,
            "destination": self.destination,
            # An absent payload decodes to an empty Raw; a JSON null stays b"null" and the
            # domain rejects both as missing.
            "payload": bytes(self.payload) if self.payload else None,
            "max_retries": self.max_retries,
            "delivery_window_seconds": self.delivery_window_seconds,
            "retry_backoff_seconds": self.retry_backoff_seconds,
            "retry_backoff_max_seconds": self.retry_backoff_max_seconds,
        }


# A batch item may be any JSON value: one that is not an object is rejected on its own
# rather than failing the decode of the whole batch.
BatchItem = EventIn | list[object] | str | int | float | bool | None


class BatchIn(msgspec.Struct):
    events: list[BatchItem] | None = None


class Submitted(msgspec.Struct):
    id: str
    status: str


class AcceptedId(msgspec.Struct):
    index: int
    id: str


class RejectedEvent(msgspec.Struct):
    index: int
    external_job_id: str | None
    reason: str
    errors: list[FieldErrorOut]


class BatchOut(msgspec.Struct):
    accepted: int
    rejected: int
    ids: list[AcceptedId]
    rejected_events: list[RejectedEvent]


class Cancelled(msgspec.Struct):
    cancelled: int


class EventOut(msgspec.Struct):
    id: str
    external_job_id: str
    source: str
    scheduled_at: datetime
    delivery_type: str
    destination: str
    payload: msgspec.Raw | None
    max_retries: int
    status: str
    retry_count: int
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    executed_at: datetime | None
    next_attempt_at: datetime
    locked_by: str | None
    lock_expires_at: datetime | None
    delivery_window_seconds: float
    retry_backoff_seconds: float | None
    retry_backoff_max_seconds: float | None


def _utc(moment: datetime) -> datetime:
    # Stores hand back UTC; a naive value can only be UTC that lost its zone on the way.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment if moment.utcoffset() == UTC.utcoffset(None) else moment.astimezone(UTC)


def _utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else _utc(moment)


def event_out(event: Event) -> EventOut:
    return EventOut(
        id=event.id,
        external_job_id=event.external_job_id,
        source=event.source,
        scheduled_at=_utc(event.scheduled_at),
        delivery_type=event.delivery_type,
        destination=event.destination,
        # Raw embeds the stored JSON document as JSON, not as a string holding JSON.
        payload=msgspec.Raw(event.payload) if event.payload else None,
        max_retries=event.max_retries,
        status=event.status.value,
        retry_count=event.retry_count,
        attempts=event.attempts,
        last_error=event.last_error,
        created_at=_utc(event.created_at),
        updated_at=_utc(event.updated_at),
        executed_at=_utc_or_none(event.executed_at),
        next_attempt_at=_utc(event.next_attempt_at),
        locked_by=event.locked_by,
        lock_expires_at=_utc_or_none(event.lock_expires_at),
        delivery_window_seconds=event.delivery_window_seconds,
        retry_backoff_seconds=event.retry_backoff_seconds,
        retry_backoff_max_seconds=event.retry_backoff_max_seconds,
    )
