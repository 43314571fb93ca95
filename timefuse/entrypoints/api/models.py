"""Request and response bodies, as msgspec structs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

from timefuse.domain.event import Event
from timefuse.domain.validation import SubmissionLimits
from timefuse.entrypoints.api.envelope import FieldErrorOut
from timefuse.ports.store import AttemptRecord


def _doc(description: str, **schema: object) -> msgspec.Meta:
    return msgspec.Meta(description=description, extra_json_schema=schema)


_RAW = msgspec.field(default_factory=msgspec.Raw)
# Limits as documented: the defaults of the domain rules (the server's configuration may differ).
_LIMITS = SubmissionLimits()
_ANY = (
    "The field takes any JSON value here so that a value of the wrong type is reported "
    "with every other bad field, not alone."
)

ExternalJobId = Annotated[
    msgspec.Raw,
    _doc("The client's id for the job.", type="string", maxLength=_LIMITS.max_external_job_id),
]
Source = Annotated[
    msgspec.Raw,
    _doc("The system submitting the event.", type="string", maxLength=_LIMITS.max_source),
]
ScheduledAt = Annotated[
    msgspec.Raw,
    _doc("When to deliver: ISO-8601 with an offset.", type="string", format="date-time"),
]
DeliveryType = Annotated[
    msgspec.Raw,
    _doc(
        "A registered delivery type (http, kafka, or one a plugin adds); case-insensitive.",
        type="string",
        maxLength=_LIMITS.max_delivery_type,
        examples=["http"],
    ),
]
Destination = Annotated[
    msgspec.Raw,
    _doc(
        "Where to deliver, as the delivery type reads it (a URL for http, a topic for kafka).",
        type="string",
        maxLength=_LIMITS.max_destination,
    ),
]
Payload = Annotated[
    msgspec.Raw,
    _doc("Any JSON value but null, delivered exactly as sent."),
]
MaxRetries = Annotated[
    msgspec.Raw,
    _doc(
        "Retries after a failed attempt.",
        type="integer",
        minimum=0,
        maximum=_LIMITS.max_retries_limit,
        default=3,
    ),
]
Window = Annotated[
    msgspec.Raw,
    _doc(
        "Spread delivery over this many seconds after scheduled_at (eases herds).",
        type="number",
        minimum=0,
        maximum=_LIMITS.max_window_seconds,
    ),
]
Backoff = Annotated[
    msgspec.Raw,
    _doc(
        "Retry backoff, in seconds.", type="number", minimum=0, maximum=_LIMITS.max_backoff_seconds
    ),
]


class EventIn(msgspec.Struct):
    """An event to deliver at its scheduled time."""

    # Every field is kept raw and decoded alone in to_fields: a value of the wrong type then
    # reaches the domain rules, which report all bad fields together, instead of failing the
    # decode at the first one; and a huge array in a field costs no objects, only its bytes.
    # ``payload`` stays the client's JSON: stored and delivered as sent, never re-encoded.
    # Unknown fields are ignored, as the seed did.
    external_job_id: ExternalJobId = _RAW
    source: Source = _RAW
    scheduled_at: ScheduledAt = _RAW
    delivery_type: DeliveryType = _RAW
    destination: Destination = _RAW
    payload: Payload = _RAW
    max_retries: MaxRetries = _RAW
    delivery_window_seconds: Window = _RAW
    retry_backoff_seconds: Backoff = _RAW
    retry_backoff_max_seconds: Backoff = _RAW

    def to_fields(self) -> dict[str, object]:
        """The plain mapping :func:`~timefuse.domain.validation.build_event` reads."""
        return {
            "external_job_id": _scalar(self.external_job_id),
            "source": _scalar(self.source),
            "scheduled_at": _scalar(self.scheduled_at),
            "delivery_type": _scalar(self.delivery_type),
            "destination": _scalar(self.destination),
            # An absent payload is an empty Raw; a JSON null stays b"null" and the domain
            # rejects both as missing.
            "payload": bytes(self.payload) if self.payload else None,
            "max_retries": _scalar(self.max_retries),
            "delivery_window_seconds": _scalar(self.delivery_window_seconds),
            "retry_backoff_seconds": _scalar(self.retry_backoff_seconds),
            "retry_backoff_max_seconds": _scalar(self.retry_backoff_max_seconds),
        }

    @property
    def source_text(self) -> str | None:
        """The source, when it is a string (whether it may be submitted for is checked first)."""
        value = _scalar(self.source)
        return value if isinstance(value, str) else None


class NotAScalar:
    """Stands for a field's array, object or out-of-range number: no rule accepts it."""

    def __repr__(self) -> str:
        return "<not a scalar>"


NOT_A_SCALAR = NotAScalar()


def _scalar(raw: msgspec.Raw) -> object:
    if not raw:
        return None
    text = bytes(raw)
    if text[:1] in (b"[", b"{"):
        # Never decoded: an array of a million objects would build a million objects.
        return NOT_A_SCALAR
    try:
        return msgspec.json.decode(text)
    except msgspec.ValidationError:  # a number beyond a float's range (1e999)
        return NOT_A_SCALAR


EVENT_REQUIRED = [
    "external_job_id", "source", "scheduled_at", "delivery_type", "destination", "payload",
]  # fmt: skip
# The body of POST /api/v1/events: decoded permissively (see EventIn), documented strictly.
EventBody = Annotated[EventIn, msgspec.Meta(extra_json_schema={"required": EVENT_REQUIRED})]


class BatchIn(msgspec.Struct):
    """Events to accept together; each is accepted or rejected on its own."""

    # Raw, counted before it is decoded (see timefuse.entrypoints.api.jsonscan).
    events: Annotated[
        msgspec.Raw,
        _doc(
            "The events, 1 to TIMEFUSE_MAX_BATCH_EVENTS (default 1000) of them.",
            type="array",
            items={"$ref": "#/components/schemas/EventIn", "required": EVENT_REQUIRED},
            minItems=1,
            maxItems=1000,
        ),
    ] = _RAW


BatchBody = Annotated[BatchIn, msgspec.Meta(extra_json_schema={"required": ["events"]})]


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


class EventPageOut(msgspec.Struct):
    """One page of a listing; pass ``next_cursor`` as ``cursor`` for the next (null: the end)."""

    events: list[EventOut]
    next_cursor: str | None


class AttemptOut(msgspec.Struct):
    """One delivery attempt. ``sequence`` numbers the event's whole history from 1;
    ``attempt`` numbers the attempts of one delivery round, again from 1 after a redelivery."""

    sequence: int
    attempt: int
    started_at: datetime
    duration_ms: float
    outcome: Annotated[str, _doc("How it ended.", enum=["SUCCESS", "RETRIABLE", "PERMANENT"])]
    status_code: int | None
    error: str | None
    worker: str


def attempt_out(record: AttemptRecord) -> AttemptOut:
    return AttemptOut(
        sequence=record.sequence,
        attempt=record.attempt,
        started_at=_utc(record.started_at),
        duration_ms=record.duration_ms,
        outcome=record.outcome.value,
        status_code=record.status_code,
        error=record.error,
        worker=record.worker,
    )


SourceFilter = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=_LIMITS.max_source, description="Only this source's."),
]
# Decoded as text and checked by the rules submissions meet (validation.parse_instant).
ScheduledFrom = Annotated[
    str,
    _doc("Only events scheduled at or after this instant (with an offset).", format="date-time"),
]
ScheduledTo = Annotated[
    str, _doc("Only events scheduled before this instant (with an offset).", format="date-time")
]
RedeliverLimit = Annotated[int, msgspec.Meta(ge=1, le=100_000, description="At most this many.")]


class RedeliverIn(msgspec.Struct, forbid_unknown_fields=True):
    """Which DEAD_LETTER events to deliver again; every criterion given must hold.

    Unknown fields are refused: a misspelt criterion silently ignored would redeliver more
    than was asked for.
    """

    source: SourceFilter | None = None
    scheduled_from: ScheduledFrom | None = None
    scheduled_to: ScheduledTo | None = None
    limit: RedeliverLimit = 10_000


class Redelivered(msgspec.Struct):
    redelivered: int


class CleanedUp(msgspec.Struct):
    deleted: int
    days: int


class DestinationOut(msgspec.Struct):
    """A destination (host and port, or delivery type and topic) as this process sees it."""

    key: str
    breaker: Annotated[
        str,
        _doc(
            "The circuit breaker holding the most: the destination's own when it is not "
            "closed (it holds every source), else the most restrictive of the sources' own "
            "(each holds only its source: see held_sources).",
            enum=["CLOSED", "OPEN", "HALF_OPEN"],
        ),
    ]
    breaker_for_all: Annotated[
        bool, _doc("Whether the destination's own breaker is open or half-open.")
    ]
    held_sources: Annotated[list[str], _doc("Sources whose own breaker here is open or half-open.")]
    consecutive_failures: Annotated[
        int, _doc("Retriable failures in a row here, every source together.")
    ]
    trips: Annotated[int, _doc("Times a breaker here opened, the sources' own included.")]
    in_flight: int
    waiting: int
    concurrency: Annotated[int, _doc("Deliveries in flight at once allowed (0: no cap).")]
    rate: Annotated[float, _doc("Deliveries per second allowed (0: no limit).")]
    probe_in_seconds: Annotated[
        float | None, _doc("While the breaker is open: seconds until one delivery probes.")
    ]
    sources: Annotated[
        list[str],
        _doc("Sources with a delivery in flight or waiting here, or a breaker of their own."),
    ]


class SharedBreakerOut(msgspec.Struct):
    """A circuit breaker open for every dispatching process (kept in the store)."""

    key: Annotated[str, _doc("The breaker's key: a destination, or a source at a destination.")]
    open_seconds: Annotated[float, _doc("How long it has been open, on the store's clock.")]
    probe_by: Annotated[
        str | None, _doc("The worker holding the cluster's one probe delivery, if one does.")
    ]


class WorkerOut(msgspec.Struct):
    """A process as the store last heard of it (each heartbeats about once a second)."""

    worker: str
    roles: list[str]
    started_at: datetime
    last_seen: datetime
    silent_seconds: float
    in_flight: Annotated[int, _doc("Deliveries it had in flight at its last heartbeat.")]
    alive: Annotated[
        bool, _doc("False once it has been silent too long: its claims are recovered.")
    ]


class RefusedRecordOut(msgspec.Struct):
    """An ingest record the consumer refused, as the dead letter topic holds it."""

    partition: Annotated[int, _doc("Its partition of the dead letter topic.")]
    offset: int
    timestamp: Annotated[datetime | None, _doc("When it was written to the dead letter topic.")]
    key: Annotated[str | None, _doc("Its key as submitted (the source), UTF-8 decoded.")]
    error: Annotated[str | None, _doc("Why the ingest consumer refused it.")]
    origin: Annotated[
        str | None, _doc("Where it was read from: <ingest topic>/<partition>/<offset>.")
    ]
    value: Annotated[str, _doc("Its value, UTF-8 decoded (undecodable bytes replaced).")]
    value_bytes: Annotated[int, _doc("The value's size in bytes.")]
    value_truncated: Annotated[bool, _doc("True when value holds only its first 4 KiB.")]


class DeliveryTypeOut(msgspec.Struct):
    """A delivery type: loaded in the process answering, or only named by due events."""

    name: str
    loaded: Annotated[
        bool, _doc("Whether this process delivers it (false: events wait for one that does).")
    ]
    origin: str | None
    version: str | None
    due: Annotated[int, _doc("PENDING events of this type due now, in the whole store.")]
