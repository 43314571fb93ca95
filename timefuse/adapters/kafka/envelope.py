"""The ingest record's value: an accepted event as a versioned JSON envelope.

Its fields are the event's accepted columns (:data:`timefuse.domain.event.EVENT_COLUMNS`),
derived from them by name: a field added to the event travels with it, and records written
before it existed read with the field's default. The version travels as the ``v`` field, a
msgspec tag: a change that can't be read that way gets a struct with ``tag=2``, and consumers
keep reading the records older producers left in the topic. The payload is embedded as raw
JSON, so it is neither re-encoded nor escaped into a string, and comes out byte for byte.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

import msgspec

from timefuse.domain.event import EVENT_COLUMNS, Event, Kind

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]

_TYPES: dict[Kind, Any] = {
    Kind.ID: str,
    Kind.TEXT: str,
    Kind.INSTANT: UtcTime,
    Kind.INTEGER: int,
    Kind.REAL: float,
    Kind.BYTES: msgspec.Raw,  # the payload: JSON, embedded as it is
    Kind.JSON: dict[str, object],
}

_DEFAULTS = {f.name: f for f in dataclasses.fields(Event)}
_ACCEPTED = [column for column in EVENT_COLUMNS if column.accepted]


def _field(name: str, kind: Kind, nullable: bool) -> tuple[str, Any] | tuple[str, Any, Any]:
    kind_type = _TYPES[kind]
    declared = kind_type | None if nullable else kind_type
    default = _DEFAULTS[name]
    if default.default is not dataclasses.MISSING:
        return (name, declared, default.default)
    if default.default_factory is not dataclasses.MISSING:
        return (name, declared, msgspec.field(default_factory=default.default_factory))
    return (name, declared)


# Required fields first, as a struct wants them.
_FIELDS = sorted(
    (_field(c.name, c.kind, c.nullable) for c in _ACCEPTED), key=lambda field: len(field) == 3
)

EnvelopeV1 = msgspec.defstruct(
    "EnvelopeV1", _FIELDS, tag_field="v", tag=1, forbid_unknown_fields=False
)

_ANY_VERSION = EnvelopeV1  # EnvelopeV1 | EnvelopeV2 once there is a second version

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_ANY_VERSION)


class EnvelopeError(ValueError):
    """A record value that is not an event envelope this timefuse can read."""


def _to_envelope(value: object, kind: Kind) -> object:
    return msgspec.Raw(value) if kind is Kind.BYTES else value  # type: ignore[call-overload]


def _from_envelope(value: object, kind: Kind) -> object:
    return bytes(value) if kind is Kind.BYTES else value  # type: ignore[call-overload]


def encode_event(event: Event) -> bytes:
    return _encoder.encode(
        EnvelopeV1(**{c.name: _to_envelope(getattr(event, c.name), c.kind) for c in _ACCEPTED})
    )


def decode_event(value: bytes | None) -> Event:
    """The PENDING event an envelope describes; :class:`EnvelopeError` says what is wrong."""
    if not value:
        raise EnvelopeError("empty record value")
    try:
        envelope = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not a timefuse event envelope: {exc}") from None
    fields = {c.name: _from_envelope(getattr(envelope, c.name), c.kind) for c in _ACCEPTED}
    # The store sets updated_at on every write; acceptance is the last change so far.
    return Event(**fields, updated_at=fields["created_at"])  # type: ignore[arg-type]
