"""The ingest record's value: an accepted event as a versioned JSON envelope.

The version travels as the ``v`` field, a msgspec tag: a later version adds a struct with
``tag=2`` to :data:`_ANY_VERSION`, and consumers keep reading the records older producers left
in the topic. The payload is embedded as raw JSON, so it is neither re-encoded nor escaped into
a string, and comes out byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from timefuse.domain.event import DEFAULT_MAX_RETRIES, Event

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]


class EnvelopeV1(msgspec.Struct, tag_field="v", tag=1, forbid_unknown_fields=False):
    """Everything the API decided about an event before it was accepted."""

    id: str
    external_job_id: str
    source: str
    scheduled_at: UtcTime
    delivery_type: str
    destination: str
    payload: msgspec.Raw
    next_attempt_at: UtcTime
    created_at: UtcTime
    max_retries: int = DEFAULT_MAX_RETRIES
    delivery_window_seconds: float = 0.0
    retry_backoff_seconds: float | None = None
    retry_backoff_max_seconds: float | None = None
    extra: dict[str, object] = {}


_ANY_VERSION = EnvelopeV1  # EnvelopeV1 | EnvelopeV2 once there is a second version

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_ANY_VERSION)


class EnvelopeError(ValueError):
    """A record value that is not an event envelope this timefuse can read."""


def encode_event(event: Event) -> bytes:
    return _encoder.encode(
        EnvelopeV1(
            id=event.id,
            external_job_id=event.external_job_id,
            source=event.source,
            scheduled_at=event.scheduled_at,
            delivery_type=event.delivery_type,
            destination=event.destination,
            payload=msgspec.Raw(event.payload),
            next_attempt_at=event.next_attempt_at,
            created_at=event.created_at,
            max_retries=event.max_retries,
            delivery_window_seconds=event.delivery_window_seconds,
            retry_backoff_seconds=event.retry_backoff_seconds,
            retry_backoff_max_seconds=event.retry_backoff_max_seconds,
            extra=event.extra,
        )
    )


def decode_event(value: bytes | None) -> Event:
    """The PENDING event an envelope describes; :class:`EnvelopeError` says what is wrong."""
    if not value:
        raise EnvelopeError("empty record value")
    try:
        envelope = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a timefuse event envelope: {exc}") from None
    return Event(
        id=envelope.id,
        external_job_id=envelope.external_job_id,
        source=envelope.source,
        scheduled_at=envelope.scheduled_at,
        delivery_type=envelope.delivery_type,
        destination=envelope.destination,
        payload=bytes(envelope.payload),
        next_attempt_at=envelope.next_attempt_at,
        created_at=envelope.created_at,
        # The store sets updated_at on every write; acceptance is the last change so far.
        updated_at=envelope.created_at,
        max_retries=envelope.max_retries,
        delivery_window_seconds=envelope.delivery_window_seconds,
        retry_backoff_seconds=envelope.retry_backoff_seconds,
        retry_backoff_max_seconds=envelope.retry_backoff_max_seconds,
        extra=envelope.extra,
    )
