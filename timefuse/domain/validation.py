"""Rules a submitted event must meet before it is accepted.

The rules see plain values (as decoded from JSON) and report every bad field at once, so a
client fixes a request in one round trip. Whether a destination suits its delivery type is the
delivery type's call; the service asks it after these rules pass.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from timefuse.domain.dedup import dedup_event_id
from timefuse.domain.destination import destination_key
from timefuse.domain.event import DEFAULT_MAX_RETRIES, Event, to_utc
from timefuse.domain.http_options import (
    BODYLESS_METHODS,
    NO_PAYLOAD,
    HttpLimits,
    check_options,
)
from timefuse.domain.spread import first_due_time


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class ValidationFailed(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class SubmissionLimits:
    max_external_job_id: int = 255
    max_source: int = 100
    max_destination: int = 2048
    max_delivery_type: int = 64
    max_retries_limit: int = 10
    past_grace_seconds: float = 5.0
    max_horizon_days: int = 3650
    max_payload_bytes: int = 1024 * 1024
    max_window_seconds: float = 7 * 86400.0
    max_backoff_seconds: float = 7 * 86400.0
    max_http_timeout_seconds: float = 300.0


REQUIRED_TEXT = ("external_job_id", "source", "delivery_type", "destination")


def _has_control_characters(text: str) -> bool:
    # isprintable() runs in C and is true for almost every identifier; only text it flags
    # (which includes harmless spaces such as U+00A0) needs the per-character look.
    if text.isprintable():
        return False
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def _check_text(name: str, value: object, limit: int, errors: list[FieldError]) -> str:
    if value is None:
        errors.append(FieldError(name, "is required"))
        return ""
    if not isinstance(value, str):
        errors.append(FieldError(name, "must be a string"))
        return ""
    if not value.strip():
        errors.append(FieldError(name, "must not be blank"))
    elif len(value) > limit:
        errors.append(FieldError(name, f"must be at most {limit} characters"))
    elif _has_control_characters(value):
        errors.append(FieldError(name, "must not contain control characters"))
    return value


def parse_instant(value: object) -> datetime:
    """An ISO-8601 instant with an offset, as UTC; ``ValueError`` with a reason otherwise."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string with an offset")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 date-time with an offset") from None
    if moment.tzinfo is None:
        raise ValueError("must carry an offset (for example Z or +02:00)")
    try:
        return to_utc(moment)
    except OverflowError:
        # 0001-01-01T00:00+03:00 is a valid ISO-8601 text with no UTC equivalent in datetime.
        raise ValueError("is outside the range of representable times") from None


def _check_scheduled_at(
    value: object, now: datetime, limits: SubmissionLimits, errors: list[FieldError]
) -> datetime | None:
    if value is None:
        errors.append(FieldError("scheduled_at", "is required"))
        return None
    try:
        moment = parse_instant(value)
    except ValueError as exc:
        errors.append(FieldError("scheduled_at", str(exc)))
        return None
    if moment < now - timedelta(seconds=limits.past_grace_seconds):
        errors.append(
            FieldError(
                "scheduled_at",
                f"is more than {limits.past_grace_seconds:g} s in the past",
            )
        )
    elif moment > now + timedelta(days=limits.max_horizon_days):
        errors.append(
            FieldError("scheduled_at", f"is more than {limits.max_horizon_days} days ahead")
        )
    return moment


def _check_int(
    name: str, value: object, low: int, high: int, default: int, errors: list[FieldError]
) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(name, "must be an integer"))
        return default
    if not low <= value <= high:
        errors.append(FieldError(name, f"must be between {low} and {high}"))
        return default
    return value


def _check_seconds(name: str, value: object, high: float, errors: list[FieldError]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(FieldError(name, "must be a number of seconds"))
        return None
    if not 0 <= value <= high:
        errors.append(FieldError(name, f"must be between 0 and {high:g}"))
        return None
    return float(value)


def _check_payload(value: object, limits: SubmissionLimits, errors: list[FieldError]) -> bytes:
    if value is None:
        errors.append(FieldError("payload", "is required"))
        return b""
    if not isinstance(value, bytes):
        errors.append(FieldError("payload", "must be a JSON value"))
        return b""
    # (A JSON null was made None by the caller: "is required" above.)
    if len(value) > limits.max_payload_bytes:
        errors.append(FieldError("payload", f"must be at most {limits.max_payload_bytes} bytes"))
    return value


HTTP_DELIVERY_TYPE = "http"
CALLBACK_FIELDS = ("callback_url", "failure_callback_url")


def _check_callback(
    name: str, value: object, limits: SubmissionLimits, errors: list[FieldError]
) -> str | None:
    """A callback URL's text; whether it may be called is the http delivery type's check."""
    if value is None:
        return None
    text = _check_text(name, value, limits.max_destination, errors)
    if isinstance(value, str) and not value.lower().startswith(("http://", "https://")):
        errors.append(FieldError(name, "must be an http(s) URL"))
    return text or None


def _check_http_and_payload(
    fields: Mapping[str, object],
    delivery_type: str,
    limits: SubmissionLimits,
    errors: list[FieldError],
) -> tuple[dict[str, object], bytes]:
    """The http options to store and the payload column's value.

    The body sent is the JSON ``payload`` or ``http.body``, never both; a GET or DELETE may
    send neither.
    """
    http_limits = HttpLimits(limits.max_payload_bytes, limits.max_http_timeout_seconds)
    http, http_errors = check_options(fields.get("http"), http_limits)
    errors.extend(FieldError(error.field, error.message) for error in http_errors)
    given = fields.get("http")
    typed = isinstance(delivery_type, str) and bool(delivery_type.strip())
    if given is not None and typed and delivery_type.lower() != HTTP_DELIVERY_TYPE:
        errors.append(FieldError("http", "applies to the http delivery type only"))
    payload = fields.get("payload")
    if isinstance(payload, bytes) and payload.strip() == NO_PAYLOAD:
        payload = None  # a JSON null: no payload given
    if "body" in http or (isinstance(given, Mapping) and given.get("body") is not None):
        if payload is not None:
            errors.append(FieldError("payload", "must be absent when http.body is given"))
        return http, NO_PAYLOAD
    if payload is None and http.get("method") in BODYLESS_METHODS:
        return http, NO_PAYLOAD
    return http, _check_payload(payload, limits, errors)


def submission_fields(event: Event) -> dict[str, object]:
    """The submission fields that build ``event`` again (its accepted fields, as a client
    sends them): what the rules check when an accepted event is read back or changed."""
    return {
        "external_job_id": event.external_job_id,
        "source": event.source,
        "scheduled_at": event.scheduled_at.isoformat(),
        "delivery_type": event.delivery_type,
        "destination": event.destination,
        "payload": None if event.payload == NO_PAYLOAD else event.payload,
        "http": dict(event.http) or None,
        "max_retries": event.max_retries,
        "delivery_window_seconds": event.delivery_window_seconds or None,
        "retry_backoff_seconds": event.retry_backoff_seconds,
        "retry_backoff_max_seconds": event.retry_backoff_max_seconds,
        "callback_url": event.callback_url,
        "failure_callback_url": event.failure_callback_url,
    }


def build_event(
    fields: Mapping[str, object],
    *,
    event_id: str | None,
    now: datetime,
    limits: SubmissionLimits,
) -> Event:
    """Check a submission and build the PENDING event it asks for.

    ``fields`` holds the decoded request fields, with ``payload`` as the raw JSON bytes.
    ``event_id`` ``None``: the id the event's dedup key gives (a new submission's).
    Raises :class:`ValidationFailed` naming every bad field.
    """
    errors: list[FieldError] = []
    external_job_id = _check_text(
        "external_job_id", fields.get("external_job_id"), limits.max_external_job_id, errors
    )
    source = _check_text("source", fields.get("source"), limits.max_source, errors)
    delivery_type = _check_text(
        "delivery_type", fields.get("delivery_type"), limits.max_delivery_type, errors
    )
    destination = _check_text(
        "destination", fields.get("destination"), limits.max_destination, errors
    )
    scheduled_at = _check_scheduled_at(fields.get("scheduled_at"), now, limits, errors)
    http, payload = _check_http_and_payload(fields, delivery_type, limits, errors)
    max_retries = _check_int(
        "max_retries",
        fields.get("max_retries"),
        0,
        limits.max_retries_limit,
        DEFAULT_MAX_RETRIES,
        errors,
    )
    window = _check_seconds(
        "delivery_window_seconds",
        fields.get("delivery_window_seconds"),
        limits.max_window_seconds,
        errors,
    )
    backoff = _check_seconds(
        "retry_backoff_seconds",
        fields.get("retry_backoff_seconds"),
        limits.max_backoff_seconds,
        errors,
    )
    backoff_max = _check_seconds(
        "retry_backoff_max_seconds",
        fields.get("retry_backoff_max_seconds"),
        limits.max_backoff_seconds,
        errors,
    )
    if backoff is not None and backoff_max is not None and backoff_max < backoff:
        errors.append(
            FieldError(
                "retry_backoff_max_seconds",
                f"must not be below retry_backoff_seconds ({backoff:g})",
            )
        )
    callback_url = _check_callback("callback_url", fields.get("callback_url"), limits, errors)
    failure_callback_url = _check_callback(
        "failure_callback_url", fields.get("failure_callback_url"), limits, errors
    )
    if errors or scheduled_at is None:
        raise ValidationFailed(errors)
    if event_id is None:
        event_id = dedup_event_id(source, external_job_id, scheduled_at)
    return Event(
        id=event_id,
        external_job_id=external_job_id,
        source=source,
        scheduled_at=scheduled_at,
        delivery_type=delivery_type.lower(),
        destination=destination,
        payload=payload,
        http=http,
        next_attempt_at=first_due_time(event_id, scheduled_at, window or 0.0),
        created_at=now,
        updated_at=now,
        max_retries=max_retries,
        delivery_window_seconds=window or 0.0,
        retry_backoff_seconds=backoff,
        retry_backoff_max_seconds=backoff_max,
        destination_key=destination_key(delivery_type.lower(), destination),
        callback_url=callback_url,
        failure_callback_url=failure_callback_url,
    )
