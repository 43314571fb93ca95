"""The one response envelope every JSON answer travels in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec
from starlette.responses import Response

from timefuse.domain.validation import FieldError


class FieldErrorOut(msgspec.Struct):
    field: str
    message: str


T = TypeVar("T")


class Envelope(msgspec.Struct, Generic[T]):
    """A successful answer: ``data`` holds the result."""

    success: bool
    data: T
    message: str | None
    error_code: None
    errors: None
    timestamp: datetime


class ErrorEnvelope(msgspec.Struct):
    """A failed answer: ``error_code`` says why, ``errors`` names each bad field.

    ``data`` is null, or details: the batch result when no event of a batch was accepted,
    the state of each part when not ready.
    """

    success: bool
    data: Any
    message: str
    error_code: str
    errors: list[FieldErrorOut] | None
    timestamp: datetime


# One encoder for the process: msgspec encoders are reusable and cheaper than one per call.
_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def _response(
    envelope: Envelope[Any] | ErrorEnvelope, status: int, headers: Mapping[str, str] | None
) -> Response:
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
    envelope: Envelope[Any] = Envelope(True, data, message, None, None, datetime.now(UTC))
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
    envelope = ErrorEnvelope(False, data, message, error_code, listed, datetime.now(UTC))
    return _response(envelope, status, headers)
