"""Reading a JSON request body: media type, size bound, decoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from starlette.requests import Request

from timefuse.domain.validation import FieldError
from timefuse.entrypoints.api.errors import (
    JSON_TOO_DEEP,
    MALFORMED_JSON,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_FAILED,
    ApiError,
)
from timefuse.entrypoints.api.jsonscan import exceeds_depth

T = TypeVar("T")

# application/json or any structured-syntax +json type (application/merge-patch+json, ...).
_JSON_MEDIA_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")
# msgspec names where a value failed: "... - at `$.events[3].max_retries`".
_AT_PATH = re.compile(r"^(?P<message>.*) - at `\$\.?(?P<path>.*)`$")


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """What a request body may be: its size in bytes and how deep its JSON nests."""

    max_bytes: int
    max_depth: int


def is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return _JSON_MEDIA_TYPE.match(media_type) is not None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, MALFORMED_JSON, "Content-Length is not a number") from None
        if length > max_bytes:
            raise _too_large(max_bytes)
    # Counted while streaming too: a chunked body declares no length, and a declared length
    # is the client's word, not a bound.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, PAYLOAD_TOO_LARGE, f"request body exceeds {max_bytes} bytes")


async def read_json(request: Request, decoder: msgspec.json.Decoder[T], limits: BodyLimits) -> T:
    """Decode the body of a JSON request: 415, 413 or 400 when it can't be one."""
    if not is_json_media_type(request.headers.get("content-type")):
        raise ApiError(415, UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
    body = await read_body(request, limits.max_bytes)
    return decode_json(body, decoder, limits.max_depth)


def check_depth(body: bytes, max_depth: int) -> None:
    # Before decoding: msgspec recurses per level, and ~1000 levels is a RecursionError (500).
    if exceeds_depth(body, max_depth):
        message = f"the request body nests arrays and objects more than {max_depth} levels deep"
        raise ApiError(400, JSON_TOO_DEEP, message)


def decode_json(body: bytes, decoder: msgspec.json.Decoder[T], max_depth: int) -> T:
    # msgspec validates UTF-8 only in the strings it decodes; the payload is kept raw, so
    # the whole body is checked here, or invalid text would be stored and sent on.
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, MALFORMED_JSON, "the request body is not valid UTF-8") from None
    check_depth(body, max_depth)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ApiError(
            400, VALIDATION_FAILED, "the request is invalid", errors=[_shape_error(str(exc))]
        ) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, MALFORMED_JSON, f"malformed JSON: {exc}") from None


def _shape_error(text: str) -> FieldError:
    """A msgspec validation message as a field error (the body itself when no path)."""
    match = _AT_PATH.match(text)
    if match is None:
        if text.startswith("Expected `object`"):
            return FieldError("body", "must be a JSON object")
        return FieldError("body", text)
    return FieldError(match["path"], match["message"].lower())
