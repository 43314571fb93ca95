"""Per-event HTTP options: the method, headers, body and timeout a sender means.

An event's ``http`` field holds them as a JSON object, checked here once when the event is
accepted (or changed) and read back by the http delivery type at every attempt. Only the keys
a sender gave are kept; an empty object means a JSON ``POST`` of the payload with the delivery
type's defaults.

The body sent is either the event's JSON ``payload`` or, as an alternative, ``http.body``:
text, or base64 bytes with ``body_encoding`` ``"base64"``. Signatures cover exactly the bytes
sent, whichever they are.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

METHODS = ("POST", "PUT", "PATCH", "DELETE", "GET")
BODYLESS_METHODS = ("GET", "DELETE")
DEFAULT_METHOD = "POST"
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
BYTES_CONTENT_TYPE = "application/octet-stream"
BODY_ENCODINGS = ("text", "base64")
# The payload column's value when the body is http.body, or when a GET or DELETE sends none.
NO_PAYLOAD = b"null"

MAX_HEADERS = 32
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 4096
MAX_HEADERS_BYTES = 16 * 1024
MAX_CONTENT_TYPE = 256
MAX_SUCCESS_STATUSES = 50
MIN_TIMEOUT_SECONDS = 0.1

# Headers a sender may not set, lower case, with the reason given back.
# Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the request; the
# framing headers are computed from the body sent; credentials toward a receiver belong in the
# operator's credentials file, never in an event that anyone with read access can see.
_HOP_BY_HOP = (
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade",
)  # fmt: skip
FORBIDDEN_HEADERS: dict[str, str] = {
    **dict.fromkeys(_HOP_BY_HOP, "is a hop-by-hop header"),
    "host": "is set from the destination",
    "content-length": "is computed from the body sent",
    "expect": "is not supported",
    "content-type": "is set from http.content_type",
    "authorization": "belongs in the operator's credentials file, not in an event",
    "proxy-authorization": "belongs in the operator's credentials file, not in an event",
    "proxy-authenticate": "is a hop-by-hop header",
    "cookie": "is not forwarded: receivers' state must not ride on events",
}
# Set by timefuse on every delivery (Standard Webhooks headers and timefuse's own).
RESERVED_PREFIXES = ("webhook-", "timefuse-")

# RFC 9110 token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Visible ASCII, space and tab: no CR, LF or NUL can split a header.
_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")


class HttpOptionsError(ValueError):
    """One bad http option: ``field`` names it (``http.headers.Host``), the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """The http options of one event, as the delivery reads them."""

    method: str = DEFAULT_METHOD
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    content_type: str | None = None
    timeout_seconds: float | None = None
    success_statuses: frozenset[int] | None = None
    body_was_base64: bool = False

    def request_body(self, payload: bytes) -> bytes:
        """The bytes to send: ``http.body``, else the JSON payload, else nothing."""
        if self.body is not None:
            return self.body
        return b"" if payload == NO_PAYLOAD else payload

    def request_content_type(self, payload: bytes) -> str | None:
        if self.content_type is not None:
            return self.content_type
        if self.body is not None:
            return BYTES_CONTENT_TYPE if self.body_was_base64 else TEXT_CONTENT_TYPE
        return None if payload == NO_PAYLOAD else JSON_CONTENT_TYPE

    def is_success(self, status: int) -> bool:
        if self.success_statuses is None:
            return 200 <= status < 300
        return status in self.success_statuses


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_body_bytes: int = 1024 * 1024
    max_timeout_seconds: float = 300.0


def read_options(stored: Mapping[str, object]) -> HttpOptions:
    """The options of a stored ``http`` object (checked when it was accepted)."""
    if not stored:
        return HttpOptions()
    headers = stored.get("headers")
    if not isinstance(headers, Mapping):
        headers = {}
    body_text = stored.get("body")
    base64_body = stored.get("body_encoding") == "base64"
    body = None
    if isinstance(body_text, str):
        body = base64.b64decode(body_text) if base64_body else body_text.encode("utf-8")
    statuses = stored.get("success_statuses")
    timeout = stored.get("timeout_seconds")
    content_type = stored.get("content_type")
    return HttpOptions(
        method=str(stored.get("method") or DEFAULT_METHOD),
        headers=tuple((str(name), str(value)) for name, value in headers.items()),
        body=body,
        content_type=content_type if isinstance(content_type, str) else None,
        timeout_seconds=float(timeout) if isinstance(timeout, int | float) else None,
        success_statuses=(
            frozenset(int(s) for s in statuses) if isinstance(statuses, list) else None
        ),
        body_was_base64=base64_body,
    )


def check_options(
    value: object, limits: HttpLimits
) -> tuple[dict[str, object], list[HttpOptionsError]]:
    """The ``http`` object to store for ``value`` (a decoded JSON value, or ``None``), and every
    bad option found in it."""
    if value is None:
        return {}, []
    if not isinstance(value, Mapping):
        return {}, [HttpOptionsError("http", "must be a JSON object")]
    errors: list[HttpOptionsError] = []
    unknown = sorted(set(value) - set(_CHECKS))
    for name in unknown:
        errors.append(HttpOptionsError(f"http.{name}", "is not an http option"))
    stored: dict[str, object] = {}
    for name, check in _CHECKS.items():
        given = value.get(name)
        if given is None:
            continue
        try:
            stored[name] = check(given, limits)
        except HttpOptionsError as exc:
            errors.append(exc)
    if "body_encoding" in stored and "body" not in stored and not _errors_on(errors, "body"):
        errors.append(HttpOptionsError("http.body_encoding", "is only meaningful with http.body"))
    body = stored.get("body")
    if isinstance(body, str):
        try:
            size = _body_size(body, base64_body=stored.get("body_encoding") == "base64")
        except HttpOptionsError as exc:
            errors.append(exc)
        else:
            if size > limits.max_body_bytes:
                errors.append(_too_long_body(limits))
    return stored, errors


def _body_size(body: str, *, base64_body: bool) -> int:
    if not base64_body:
        return len(body.encode("utf-8"))
    try:
        return len(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError):
        raise HttpOptionsError("http.body", "is not valid base64") from None


def _errors_on(errors: list[HttpOptionsError], name: str) -> bool:
    return any(error.field == f"http.{name}" for error in errors)


def _too_long_body(limits: HttpLimits) -> HttpOptionsError:
    return HttpOptionsError("http.body", f"must be at most {limits.max_body_bytes} bytes")


def _method(value: object, limits: HttpLimits) -> str:
    if not isinstance(value, str) or value.upper() not in METHODS:
        raise HttpOptionsError("http.method", f"must be one of {', '.join(METHODS)}")
    return value.upper()


def _headers(value: object, limits: HttpLimits) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise HttpOptionsError("http.headers", "must be a JSON object of header names to values")
    if len(value) > MAX_HEADERS:
        raise HttpOptionsError("http.headers", f"must hold at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    total = 0
    for name, header_value in value.items():
        _check_header(str(name), header_value, seen)
        total += len(str(name)) + len(str(header_value))
    if total > MAX_HEADERS_BYTES:
        raise HttpOptionsError("http.headers", f"must total at most {MAX_HEADERS_BYTES} bytes")
    return {str(name): str(header_value) for name, header_value in value.items()}


def _check_header(name: str, value: object, seen: set[str]) -> None:
    shown = name[:64]
    if not name or len(name) > MAX_HEADER_NAME or not _TOKEN.match(name):
        raise HttpOptionsError(f"http.headers.{shown}", "is not a valid header name")
    lower = name.lower()
    reason = FORBIDDEN_HEADERS.get(lower)
    if reason is not None:
        raise HttpOptionsError(f"http.headers.{name}", f"may not be set: it {reason}")
    if lower.startswith(RESERVED_PREFIXES):
        raise HttpOptionsError(f"http.headers.{name}", "may not be set: the name is reserved")
    if lower in seen:
        raise HttpOptionsError(f"http.headers.{name}", "is given twice")
    seen.add(lower)
    if not isinstance(value, str):
        raise HttpOptionsError(f"http.headers.{name}", "must be a string")
    if len(value) > MAX_HEADER_VALUE:
        raise HttpOptionsError(
            f"http.headers.{name}", f"must be at most {MAX_HEADER_VALUE} characters"
        )
    if not _VALUE.match(value):
        raise HttpOptionsError(
            f"http.headers.{name}", "must hold visible ASCII characters, spaces and tabs only"
        )


def _body(value: object, limits: HttpLimits) -> str:
    if not isinstance(value, str):
        raise HttpOptionsError("http.body", "must be a string (text, or base64 bytes)")
    if "\x00" in value:
        # The options are stored as JSON, which PostgreSQL's jsonb can't hold a NUL in.
        raise HttpOptionsError(
            "http.body", 'must not contain NUL characters (send such bytes as "base64")'
        )
    return value


def _body_encoding(value: object, limits: HttpLimits) -> str:
    if value not in BODY_ENCODINGS:
        raise HttpOptionsError("http.body_encoding", 'must be "text" or "base64"')
    return str(value)


def _content_type(value: object, limits: HttpLimits) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HttpOptionsError("http.content_type", "must be a media type such as text/xml")
    if len(value) > MAX_CONTENT_TYPE or not _VALUE.match(value) or "/" not in value:
        raise HttpOptionsError("http.content_type", "must be a media type such as text/xml")
    return value


def _timeout(value: object, limits: HttpLimits) -> float:
    high = limits.max_timeout_seconds
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HttpOptionsError("http.timeout_seconds", "must be a number of seconds")
    if not MIN_TIMEOUT_SECONDS <= value <= high:
        raise HttpOptionsError(
            "http.timeout_seconds", f"must be between {MIN_TIMEOUT_SECONDS:g} and {high:g}"
        )
    return float(value)


def _success_statuses(value: object, limits: HttpLimits) -> list[int]:
    message = f"must be a list of 1 to {MAX_SUCCESS_STATUSES} status codes from 200 to 599"
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SUCCESS_STATUSES:
        raise HttpOptionsError("http.success_statuses", message)
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise HttpOptionsError("http.success_statuses", message)
    return sorted(set(value))


_CHECKS = {
    "method": _method,
    "headers": _headers,
    "body": _body,
    "body_encoding": _body_encoding,
    "content_type": _content_type,
    "timeout_seconds": _timeout,
    "success_statuses": _success_statuses,
}
