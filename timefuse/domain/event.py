"""The scheduled event entity."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from timefuse.domain.status import EventStatus

DEFAULT_MAX_RETRIES = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Event:
    """One event to deliver at ``scheduled_at``, and where its delivery stands.

    ``payload`` is the JSON document as bytes, encoded once on the way in and sent as is.
    ``attempts`` counts claims (attempts started); ``retry_count`` counts failed attempts, so an
    event delivered on its third attempt shows ``retry_count`` 2. ``next_attempt_at`` is when
    the event is next due: ``scheduled_at`` (plus its spread offset) at first, later the time
    of its next retry.
    """

    id: str
    external_job_id: str
    source: str
    scheduled_at: datetime
    delivery_type: str
    destination: str
    payload: bytes
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    max_retries: int = DEFAULT_MAX_RETRIES
    status: EventStatus = EventStatus.PENDING
    attempts: int = 0
    retry_count: int = 0
    last_error: str | None = None
    executed_at: datetime | None = None
    locked_by: str | None = None
    lock_expires_at: datetime | None = None
    delivery_window_seconds: float = 0.0
    retry_backoff_seconds: float | None = None
    retry_backoff_max_seconds: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def dedup_key(self) -> tuple[str, str, datetime]:
        return (self.source, self.external_job_id, self.scheduled_at)


def new_event_id(now: datetime) -> str:
    """A UUIDv7: time-ordered, so ids inserted together sit together in indexes."""
    millis = ((now - _EPOCH) // timedelta(milliseconds=1)) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def is_event_id(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def to_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no offset")
    return moment.astimezone(UTC)
