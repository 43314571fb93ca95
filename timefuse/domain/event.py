"""The scheduled event entity, and the one description of its fields every adapter derives from.

Each field of :class:`Event` carries its :class:`Column` (how it is stored and whether it travels
with an accepted event), so adding a field is one change here plus a migration: the stores'
column lists and row mappings, the ingest envelope and the API's answer are built from
:data:`EVENT_COLUMNS`, by name.
"""

from __future__ import annotations

import enum
import os
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from timefuse.domain.status import EventStatus

DEFAULT_MAX_RETRIES = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Kind(enum.Enum):
    """How a column's values are stored; adapters map each kind to their own type."""

    ID = "id"  # text compared code point by code point
    TEXT = "text"
    INSTANT = "instant"  # a timezone-aware datetime, microsecond precision
    INTEGER = "integer"
    REAL = "real"
    BYTES = "bytes"
    JSON = "json"  # a JSON object
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class Column:
    """One stored field of an event.

    :param accepted: decided when the event is accepted, so it travels in the ingest envelope;
        the others start at their defaults and only the store changes them.
    :param public: shown in the event's JSON answers.
    """

    name: str
    kind: Kind
    nullable: bool = False
    accepted: bool = True
    public: bool = True


# Both run while the module is imported: a mutant there breaks the import, not a test.
def _column(
    kind: Kind, *, default: Any = None, factory: Any = None, **flags: bool
) -> Any:  # pragma: no mutate block
    meta = {"column": (kind, flags)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if default is not None or flags.get("nullable"):
        return field(default=default, metadata=meta)
    return field(metadata=meta)


_STORE_OWNED = {"accepted": False}


@dataclass(slots=True)
class Event:
    """One event to deliver at ``scheduled_at``, and where its delivery stands.

    ``payload`` is the JSON document as bytes, encoded once on the way in and sent as is
    (``null`` when the body sent is ``http.body`` instead, or when a GET sends none).
    ``http`` holds the per-event HTTP options (method, headers, body, timeout, success
    statuses; :mod:`timefuse.domain.http_options`), empty for a plain JSON POST.
    ``attempts`` counts claims (attempts started) in the current delivery round;
    ``retry_count`` counts failed attempts, so an event delivered on its third attempt shows
    ``retry_count`` 2. ``next_attempt_at`` is when the event is next due: ``scheduled_at``
    (plus its spread offset) at first, later the time of its next retry.
    ``destination_key`` names the receiver canonically (one name however the destination is
    spelt); per-destination limits and breakers are keyed on it. ``claim_count`` counts every
    claim ever made of the event and never goes back: the current claim's token, which every
    write that depends on the lease must quote. ``version`` counts the event's versions from 1:
    every change of a PENDING event makes it one more (optimistic concurrency for clients).
    ``callback_url`` is told when the event completes, ``failure_callback_url`` when it ends
    FAILED or DEAD_LETTER, each by a child event whose ``parent_id`` names this one.
    """

    id: str = _column(Kind.ID)
    external_job_id: str = _column(Kind.TEXT)
    source: str = _column(Kind.TEXT)
    scheduled_at: datetime = _column(Kind.INSTANT)
    delivery_type: str = _column(Kind.TEXT)
    destination: str = _column(Kind.TEXT)
    payload: bytes = _column(Kind.BYTES)
    next_attempt_at: datetime = _column(Kind.INSTANT)
    created_at: datetime = _column(Kind.INSTANT)
    updated_at: datetime = _column(Kind.INSTANT, accepted=False)
    max_retries: int = _column(Kind.INTEGER, default=DEFAULT_MAX_RETRIES)
    status: EventStatus = _column(Kind.STATUS, default=EventStatus.PENDING, **_STORE_OWNED)
    attempts: int = _column(Kind.INTEGER, default=0, **_STORE_OWNED)
    retry_count: int = _column(Kind.INTEGER, default=0, **_STORE_OWNED)
    last_error: str | None = _column(Kind.TEXT, nullable=True, **_STORE_OWNED)
    executed_at: datetime | None = _column(Kind.INSTANT, nullable=True, **_STORE_OWNED)
    locked_by: str | None = _column(Kind.TEXT, nullable=True, **_STORE_OWNED)
    lock_expires_at: datetime | None = _column(Kind.INSTANT, nullable=True, **_STORE_OWNED)
    delivery_window_seconds: float = _column(Kind.REAL, default=0.0)
    retry_backoff_seconds: float | None = _column(Kind.REAL, nullable=True)
    retry_backoff_max_seconds: float | None = _column(Kind.REAL, nullable=True)
    extra: dict[str, object] = _column(Kind.JSON, factory=dict, public=False)
    destination_key: str = _column(Kind.TEXT, default="")
    claim_count: int = _column(Kind.INTEGER, default=0, accepted=False, public=False)
    http: dict[str, object] = _column(Kind.JSON, factory=dict)
    version: int = _column(Kind.INTEGER, default=1, accepted=False)
    callback_url: str | None = _column(Kind.TEXT, nullable=True)
    failure_callback_url: str | None = _column(Kind.TEXT, nullable=True)
    parent_id: str | None = _column(Kind.ID, nullable=True)

    @property
    def dedup_key(self) -> tuple[str, str, datetime]:
        return (self.source, self.external_job_id, self.scheduled_at)


def _columns_of(cls: type) -> tuple[Column, ...]:  # pragma: no mutate block
    found = []
    for f in fields(cls):
        kind, flags = f.metadata["column"]
        found.append(Column(f.name, kind, **flags))
    return tuple(found)


EVENT_COLUMNS: tuple[Column, ...] = _columns_of(Event)
"""Every stored field of :class:`Event`, in its declaration order."""

EVENT_COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in EVENT_COLUMNS)

# What identifies an event and its job: never changed once accepted.
_FIXED = frozenset({"id", "external_job_id", "source", "delivery_type", "created_at", "parent_id"})

AMENDED_COLUMN_NAMES: tuple[str, ...] = tuple(
    column.name
    for column in EVENT_COLUMNS
    if (column.accepted and column.name not in _FIXED) or column.name in ("updated_at", "version")
)
"""The columns a change of a PENDING event writes (the store's ``amend``)."""


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
