"""Request and response bodies, as msgspec structs."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from timefuse.config.parsers import LEAST_RATE, MOST, MOST_WHOLE
from timefuse.domain.amend import HISTORY_EXTRA
from timefuse.domain.event import Event
from timefuse.domain.validation import SubmissionLimits
from timefuse.entrypoints.api.envelope import FieldErrorOut
from timefuse.ports.store import AttemptRecord
from timefuse.service.submission import Accepted


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
    _doc(
        "Any JSON value but null, delivered exactly as sent. Required unless http.body is "
        "given (then it must be absent) or http.method is GET or DELETE (then it may be)."
    ),
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


HTTP_OPTIONS_SCHEMA: dict[str, object] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "method": {"type": "string", "enum": ["POST", "PUT", "PATCH", "DELETE", "GET"],
                   "default": "POST"},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 4096},
            "maxProperties": 32,
            "description": "Extra request headers. Refused: hop-by-hop headers, Host, "
            "Content-Length, Content-Type (use content_type), Expect, Authorization, "
            "Proxy-Authorization, Cookie, and names starting with webhook- or timefuse-.",
        },
        "body": {
            "type": "string",
            "description": "The body to send instead of the JSON payload (payload must then "
            "be absent): text, or base64 bytes with body_encoding base64.",
        },
        "body_encoding": {"type": "string", "enum": ["text", "base64"], "default": "text"},
        "content_type": {
            "type": "string",
            "maxLength": 256,
            "description": "The Content-Type sent (default: application/json for the payload, "
            "text/plain; charset=utf-8 for a text body, application/octet-stream for bytes).",
        },
        "timeout_seconds": {
            "type": "number",
            "minimum": 0.1,
            "maximum": _LIMITS.max_http_timeout_seconds,
            "description": "Seconds one attempt may take (default: TIMEFUSE_HTTP_TIMEOUT_SECONDS);"
            " past it the attempt is a retriable timeout.",
        },
        "success_statuses": {
            "type": "array",
            "items": {"type": "integer", "minimum": 200, "maximum": 599},
            "minItems": 1,
            "maxItems": 50,
            "description": "The statuses that count as delivered (default: any 2xx).",
        },
    },
}  # fmt: skip
CallbackUrl = Annotated[
    msgspec.Raw,
    _doc(
        "Where to POST a signed notice when the event completes (callback_url) or ends FAILED "
        "or DEAD_LETTER (failure_callback_url); delivered as a child event.",
        type="string",
        format="uri",
        maxLength=_LIMITS.max_destination,
    ),
]
HttpField = Annotated[
    msgspec.Raw,
    _doc(
        "How the http delivery type sends this event: method, headers, body, timeout, success "
        "statuses (http events only).",
        **HTTP_OPTIONS_SCHEMA,
    ),
]


class EventIn(msgspec.Struct):
    """An event to deliver at its scheduled time."""

    # Every field is kept raw and decoded alone in to_fields: a value of the wrong type then
    # reaches the domain rules, which report all bad fields together, instead of failing the
    # decode at the first one; and a huge array in a field costs no objects, only its bytes.
    # ``payload`` stays the client's JSON: stored and delivered as sent, never re-encoded.
    # Unknown fields are ignored, as the seed did, and named in the answer's warnings
    # (TIMEFUSE_UNKNOWN_FIELDS=reject refuses them): see ``read_event``.
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
    http: HttpField = _RAW
    callback_url: CallbackUrl = _RAW
    failure_callback_url: CallbackUrl = _RAW

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
            "http": json_value(self.http),
            "callback_url": _scalar(self.callback_url),
            "failure_callback_url": _scalar(self.failure_callback_url),
        }

    @property
    def source_text(self) -> str | None:
        """The source, when it is a string (whether it may be submitted for is checked first)."""
        value = _scalar(self.source)
        return value if isinstance(value, str) else None


EVENT_FIELDS = frozenset(EventIn.__struct_fields__)

# A submitted event as its fields, each still raw: the field names as sent, known or not.
RawFields = dict[str, msgspec.Raw]


def read_event(fields: RawFields) -> tuple[EventIn, list[str]]:
    """The event the fields describe, and the names of the fields no event has."""
    known = {name: value for name, value in fields.items() if name in EVENT_FIELDS}
    unknown = [name for name in fields if name not in EVENT_FIELDS]
    return EventIn(**known), unknown


def unknown_field_message(name: str) -> str:
    """Why an unknown field is named, with the field the client may have meant."""
    close = difflib.get_close_matches(name, sorted(EVENT_FIELDS), n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"is not a field of an event{hint}"


IfVersion = Annotated[
    msgspec.Raw,
    _doc(
        "Change the event only if it is still at this version (its JSON's version); 412 otherwise.",
        type="integer",
        minimum=1,
    ),
]


class EventPatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Fields to change in a PENDING event; those absent stay as they are, null resets an
    optional one. Unknown fields are refused: a misspelt one silently ignored would leave the
    event unchanged while the answer says it changed."""

    scheduled_at: ScheduledAt = _RAW
    destination: Destination = _RAW
    payload: Payload = _RAW
    http: HttpField = _RAW
    max_retries: MaxRetries = _RAW
    delivery_window_seconds: Window = _RAW
    retry_backoff_seconds: Backoff = _RAW
    retry_backoff_max_seconds: Backoff = _RAW
    callback_url: CallbackUrl = _RAW
    failure_callback_url: CallbackUrl = _RAW
    if_version: IfVersion = _RAW
    # Refused with a reason when given: they identify the event.
    external_job_id: Annotated[msgspec.Raw, _doc("Can't be changed.")] = _RAW
    source: Annotated[msgspec.Raw, _doc("Can't be changed.")] = _RAW
    delivery_type: Annotated[msgspec.Raw, _doc("Can't be changed.")] = _RAW

    def to_changes(self) -> dict[str, object]:
        """The fields given, decoded as a submission's are (null as ``None``)."""
        changes: dict[str, object] = {}
        for name in self.__struct_fields__:
            raw: msgspec.Raw = getattr(self, name)
            if name == "if_version" or not raw:
                continue
            if name == "payload":
                text = bytes(raw)
                changes[name] = None if text.strip() == b"null" else text
            elif name == "http":
                changes[name] = json_value(raw)
            else:
                changes[name] = _scalar(raw)
        return changes

    @property
    def version_wanted(self) -> object:
        return _scalar(self.if_version)


class ChangeOut(msgspec.Struct):
    """One change of the event: the version it made, when, and the fields it set."""

    version: int
    at: str
    fields: list[str]


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


def json_value(raw: msgspec.Raw) -> object:
    """A field holding any JSON value (an object, typically), decoded; ``None`` when absent.

    The request's size and depth were bounded before it was decoded.
    """
    if not raw:
        return None
    try:
        return msgspec.json.decode(bytes(raw))
    except msgspec.ValidationError:  # a number beyond a float's range (1e999)
        return NOT_A_SCALAR


EVENT_REQUIRED = [
    "external_job_id", "source", "scheduled_at", "delivery_type", "destination",
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


class AcceptedOut(msgspec.Struct, omit_defaults=True):
    """What became of a submitted event."""

    id: Annotated[str, _doc("The event's id in the store (or once the buffer has stored it).")]
    status: Annotated[
        str,
        _doc(
            "The event's status in the store: PENDING for an event this submission made, the "
            "stored event's own status for a duplicate."
        ),
    ]
    duplicate: Annotated[
        bool,
        _doc(
            "An event with this (source, external_job_id, scheduled_at) was stored already: "
            "nothing changed, and status is that event's."
        ),
    ]
    stored: Annotated[
        bool,
        _doc(
            "The event is in the store now. False with Kafka: it is in the ingest buffer, and "
            "reading it answers 404 until the ingest consumer has stored it (about a second)."
        ),
    ]
    warnings: Annotated[
        list[FieldErrorOut],
        _doc("Fields of the request that were ignored (unknown fields), each named."),
    ] = msgspec.field(default_factory=list)


def accepted_out(accepted: Accepted, warnings: list[FieldErrorOut]) -> AcceptedOut:
    return AcceptedOut(
        accepted.id, accepted.status.value, accepted.duplicate, accepted.stored, warnings
    )


def accepted_message(accepted: Accepted) -> str:
    if accepted.duplicate:
        return (
            f"already submitted: the event with this source, external_job_id and "
            f"scheduled_at is {accepted.status.value}; nothing changed"
        )
    if not accepted.stored:
        return "event accepted into the Kafka buffer; readable once the ingest consumer stores it"
    return "event accepted"


class AcceptedId(msgspec.Struct):
    """An accepted item of a batch: what became of it, as for one submission."""

    index: Annotated[int, _doc("The item's position in events, from 0.")]
    id: Annotated[str, _doc("The event's id in the store (or once the buffer has stored it).")]
    status: Annotated[
        str,
        _doc(
            "The event's status in the store: PENDING for an event this batch made, the stored "
            "event's own status for a duplicate (a CANCELLED one is never delivered)."
        ),
    ] = "PENDING"
    duplicate: Annotated[
        bool,
        _doc(
            "An event with this (source, external_job_id, scheduled_at) was stored before this "
            "batch: nothing changed, and status is that event's. Identical items of one batch "
            "share one id and are not duplicates of each other."
        ),
    ] = False


class RejectedEvent(msgspec.Struct):
    """An item of a batch not accepted. ``code``: VALIDATION_FAILED (``errors`` names the
    fields), FORBIDDEN_SOURCE, QUOTA_RATE or QUOTA_PENDING (its source's quota)."""

    index: int
    external_job_id: str | None
    reason: str
    errors: list[FieldErrorOut]
    code: str = "VALIDATION_FAILED"


class ItemWarning(msgspec.Struct):
    """A field of a batch that was ignored: of the item at ``index``, or (``index`` null) of
    the batch body itself."""

    index: Annotated[int | None, _doc("The item's position in events; null: the body's own.")]
    field: str
    message: str


BATCH_FIELDS = frozenset({"events"})


def unknown_batch_field_message(name: str) -> str:
    """Why an unknown field of a batch body is named."""
    close = difflib.get_close_matches(name, sorted(BATCH_FIELDS), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}?" if close else "it takes: events"
    return f"is not a field of a batch ({hint})"


class BatchOut(msgspec.Struct, omit_defaults=True):
    """A batch's result: timefuse's own fields and the seed's, which say the same thing.

    ``ids`` and ``accepted_message_ids`` are in the order of the items; a resubmitted twin's
    id is its earlier event's id, and its entry in ``ids`` says ``duplicate`` with that
    event's ``status``.
    """

    accepted: int
    rejected: int
    ids: list[AcceptedId]
    rejected_events: list[RejectedEvent]
    stored: Annotated[
        bool,
        _doc(
            "The accepted events are in the store now; false with Kafka (in the ingest "
            "buffer, readable once the ingest consumer has stored them)."
        ),
    ]
    total_submitted: Annotated[int, _doc("Items in the batch (the seed's field).")]
    total_accepted: Annotated[int, _doc("Items accepted: accepted (the seed's field).")]
    total_rejected: Annotated[int, _doc("Items rejected: rejected (the seed's field).")]
    accepted_message_ids: Annotated[
        list[str], _doc("The ids of the accepted items, in their order (the seed's field).")
    ]
    warnings: Annotated[
        list[ItemWarning],
        _doc(
            "Fields that were ignored (unknown fields): of accepted items by index, of the "
            "batch body itself with index null."
        ),
    ] = msgspec.field(default_factory=list)


def batch_out(
    ids: list[AcceptedId],
    rejected: list[RejectedEvent],
    *,
    stored: bool,
    warnings: list[ItemWarning] | None = None,
) -> BatchOut:
    ordered = sorted(ids, key=lambda accepted: accepted.index)
    return BatchOut(
        accepted=len(ordered),
        rejected=len(rejected),
        ids=ordered,
        rejected_events=rejected,
        stored=stored,
        total_submitted=len(ordered) + len(rejected),
        total_accepted=len(ordered),
        total_rejected=len(rejected),
        accepted_message_ids=[accepted.id for accepted in ordered],
        warnings=warnings or [],
    )


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
    http: Annotated[
        dict[str, Any] | None,
        _doc("The event's http options as accepted (null: a JSON POST with the defaults)."),
    ] = None
    version: Annotated[
        int, _doc("The event's version, from 1; every change (PATCH) makes it one more.")
    ] = 1
    changes: Annotated[
        list[ChangeOut], _doc("The changes made to the event (the latest 20), oldest first.")
    ] = msgspec.field(default_factory=list)
    callback_url: str | None = None
    failure_callback_url: str | None = None
    parent_id: Annotated[
        str | None, _doc("For a completion callback: the event it reports on.")
    ] = None


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
        http=event.http or None,
        version=event.version,
        changes=_changes_of(event),
        callback_url=event.callback_url,
        failure_callback_url=event.failure_callback_url,
        parent_id=event.parent_id,
    )


def _changes_of(event: Event) -> list[ChangeOut]:
    found = event.extra.get(HISTORY_EXTRA)
    if not isinstance(found, list):
        return []
    return [
        ChangeOut(int(entry["version"]), str(entry["at"]), [str(f) for f in entry["fields"]])
        for entry in found
        if isinstance(entry, dict)
    ]


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


class QuotaIn(msgspec.Struct, forbid_unknown_fields=True):
    """A source's quota; a field left out (or null) is no limit. Unknown fields are refused: a
    misspelt limit silently ignored would leave the source unlimited."""

    rate: (
        Annotated[
            float,
            msgspec.Meta(
                ge=LEAST_RATE,
                le=MOST,
                description="Events accepted per second on average (at least one in ten years).",
            ),
        ]
        | None
    ) = None
    burst: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=MOST_WHOLE,
                description="Events accepted at once after a quiet spell (needs rate; default "
                "one second's worth, at least 1).",
            ),
        ]
        | None
    ) = None
    max_pending: (
        Annotated[
            int,
            msgspec.Meta(ge=0, le=MOST_WHOLE, description="PENDING events the source may hold."),
        ]
        | None
    ) = None


class QuotaOut(msgspec.Struct):
    """A source's quota and its use (or the ``*`` entry's, which holds for every source
    without one of its own)."""

    source: str
    entry: Annotated[
        str | None, _doc("The entry that holds for the source: itself, or *; null: unlimited.")
    ]
    rate: Annotated[float | None, _doc("Events accepted per second (null: no limit).")]
    burst: Annotated[int | None, _doc("Events accepted at once after a quiet spell.")]
    max_pending: Annotated[int | None, _doc("PENDING events it may hold (null: no limit).")]
    pending: Annotated[int | None, _doc("Its PENDING events now (null for *).")]
    tokens: Annotated[
        float | None,
        _doc("Events it may submit at once now, in the process answering (null: no rate)."),
    ]
    rejected: Annotated[
        dict[str, int],
        _doc(
            "Events refused under the entry by the process answering, by reason (rate, "
            "pending), since it started."
        ),
    ]


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
