"""The one response envelope every JSON answer travels in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec
from starlette.responses import Response

from timefuse.domain.validation import FieldError


class FieldErrorOut(msgspec.Struct):
    field: str
    message: str


class Envelope(msgspec.Struct):
    success: bool
    data: object
    message: str | None
    error_code: str | None
    errors: list[FieldErrorOut] | None
    timestamp: datetime


# One encoder for the process: msgspec encoders are reusable and cheaper than one per call.
_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def _response(envelope: Envelope, status: int, headers: Mapping[str, str] | None) -> Response:
    return Response(
        _encoder.encode(envelope),
        status_code=status,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def ok(
    data: object,
    status: int = 200,
    *,
    message: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    envelope = Envelope(True, data, message, None, None, datetime.now(UTC))
    return _response(envelope, status, headers)


def fail(
    status: int,
    error_code: str,
    message: str,
    *,
    errors: Sequence[FieldError] | None = None,
    data: object = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    listed = [FieldErrorOut(e.field, e.message) for e in errors] if errors is not None else None
    envelope = Envelope(False, data, message, error_code, listed, datetime.now(UTC))
    return _response(envelope, status, headers)
