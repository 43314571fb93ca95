"""How failures become envelopes: one exception type for the handlers, one handler per cause.

Handlers raise :class:`ApiError` (or let a port or domain exception through) instead of
building error responses, so every error answer has the same shape and the same codes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from timefuse.config.parsers import MOST
from timefuse.domain.validation import FieldError, ValidationFailed
from timefuse.entrypoints.api.envelope import fail
from timefuse.ports.ingest import BufferUnavailable
from timefuse.ports.store import StoreError, StoreRefused
from timefuse.service.quotas import QuotaExceeded, QuotaReason, QuotaRefusal

log = structlog.get_logger("timefuse.api")

VALIDATION_FAILED = "VALIDATION_FAILED"
MALFORMED_JSON = "MALFORMED_JSON"
JSON_TOO_DEEP = "JSON_TOO_DEEP"
INVALID_EVENT_ID = "INVALID_EVENT_ID"
EVENT_NOT_FOUND = "EVENT_NOT_FOUND"
EVENT_NOT_PENDING = "EVENT_NOT_PENDING"
EVENT_NOT_REDELIVERABLE = "EVENT_NOT_REDELIVERABLE"
VERSION_MISMATCH = "VERSION_MISMATCH"
DUPLICATE_EVENT = "DUPLICATE_EVENT"
DESTINATION_NOT_FOUND = "DESTINATION_NOT_FOUND"
NO_KAFKA_INGEST = "NO_KAFKA_INGEST"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
NOT_READY = "NOT_READY"
CLIENT_DISCONNECTED = "CLIENT_DISCONNECTED"
INTERNAL_ERROR = "INTERNAL_ERROR"
# A source's quota (timefuse.service.quotas): its submission rate, or its PENDING events.
QUOTA_RATE = "QUOTA_RATE"
QUOTA_PENDING = "QUOTA_PENDING"
QUOTA_NOT_FOUND = "QUOTA_NOT_FOUND"

# Codes for the HTTP errors Starlette raises itself (unknown route, wrong method).
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


class ApiError(Exception):
    """An answer other than success, raised from anywhere in a handler."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        *,
        errors: Sequence[FieldError] | None = None,
        data: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.errors = errors
        self.data = data
        self.headers = headers


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return fail(
        exc.status,
        exc.error_code,
        exc.message,
        errors=exc.errors,
        data=exc.data,
        headers=exc.headers,
    )


def unprocessable(errors: Sequence[FieldError], message: str, *, data: object = None) -> ApiError:
    """422: the request was read, and a field of the event it holds breaks a rule.

    The events API answers 400 only for a request it can't read (malformed JSON, a body or
    envelope of the wrong shape, a malformed id, cursor or query parameter); a well-formed
    event with a bad value is 422 naming the field, as a schedule's is.
    """
    return ApiError(422, VALIDATION_FAILED, message, errors=errors, data=data)


async def _validation_failed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationFailed)
    return fail(422, VALIDATION_FAILED, f"invalid event: {exc}", errors=exc.errors)


# What a 503 tells clients to wait before they try again: outages of the store or the buffer
# are usually seconds (a failover, a restart).
RETRY_AFTER_SECONDS = 1


async def _buffer_unavailable(request: Request, exc: Exception) -> Response:
    # Nothing was made durable, so the client must hear "not accepted", never a 202.
    log.warning("ingest buffer unavailable", error=str(exc))
    return fail(
        503,
        SERVICE_UNAVAILABLE,
        str(exc) or "the ingest buffer is unavailable",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def quota_code(refusal: QuotaRefusal) -> str:
    return QUOTA_RATE if refusal.reason is QuotaReason.RATE else QUOTA_PENDING


def retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header in whole seconds, never 0 (a client would retry at once)."""
    # At most ten years: a source's slowest rate, and never an infinite or undefined wait.
    return {"Retry-After": str(max(1, math.ceil(seconds if seconds < MOST else MOST)))}


async def _quota_exceeded(request: Request, exc: Exception) -> Response:
    # 429 either way: the same request may pass later. Only a rate refusal knows when; room
    # under the PENDING cap comes back as the source's events are delivered, at no set time.
    assert isinstance(exc, QuotaExceeded)
    refusal = exc.refusal
    wait = refusal.retry_after
    return fail(
        429,
        quota_code(refusal),
        refusal.message,
        errors=[FieldError("source", refusal.message)],
        headers=retry_after(wait) if wait is not None else None,
    )


async def _store_error(request: Request, exc: Exception) -> Response:
    # Driver messages can name hosts and users: they go to the log, not to the client.
    log.warning("event store error", error=str(exc), path=request.url.path)
    if isinstance(exc, StoreRefused):
        # A value of the request the store can't hold (a NUL in a filter, say): retrying the
        # same request fails the same way, so it is the client's to fix, not a 503.
        return fail(400, VALIDATION_FAILED, "the store refused a value of this request")
    return fail(
        503,
        SERVICE_UNAVAILABLE,
        "the event store is unavailable; try again later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # The client left mid-body: nothing was accepted and nobody reads this answer, so it is
    # neither an error worth a traceback nor a 500.
    log.info("client disconnected before sending its whole request", path=request.url.path)
    return fail(400, CLIENT_DISCONNECTED, "the client disconnected")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
    return fail(exc.status_code, code, exc.detail, headers=exc.headers)


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    ValidationFailed: _validation_failed,
    QuotaExceeded: _quota_exceeded,
    BufferUnavailable: _buffer_unavailable,
    StoreError: _store_error,
    HTTPException: _http_exception,
    ClientDisconnect: _client_disconnect,
}


class CatchAll:
    """Answer any exception a handler let through with a 500 envelope, and log it once.

    Starlette's own last-resort handler re-raises after answering, so the server logs the
    same traceback a second time; this middleware, inside it, keeps the error to one entry.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in the API", path=scope.get("path"))
            if started:
                # Half a response is out: nothing valid can follow, let the server drop it.
                raise
            response = fail(500, INTERNAL_ERROR, "internal error")
            await response(scope, receive, send)
