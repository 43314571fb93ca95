"""The built-in ``http`` delivery type: one request per attempt to the event's destination.

By default a JSON ``POST`` of the payload; an event's ``http`` options
(:mod:`timefuse.domain.http_options`) choose the method, add headers, replace the body, set
the timeout and the statuses that count as success.

Registered through the same hook as third-party delivery types. Every request carries the
Standard Webhooks headers ``webhook-id`` (the event id, the same on every retry, so receivers
can drop duplicates) and ``webhook-timestamp``, plus ``webhook-signature`` when the event's
source has signing keys, and the operator's credentials for the destination, if any
(:mod:`http_credentials`). Destinations pass the SSRF guard of :mod:`http_guard`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import time
from collections.abc import Callable

from aiohttp.abc import AbstractResolver

from timefuse.domain.callback import response_excerpt
from timefuse.domain.event import Event
from timefuse.domain.http_options import HttpOptions, read_options
from timefuse.domain.outcome import DeliveryOutcome, classify_http_status, parse_retry_after
from timefuse.plugins.hookspecs import hookimpl
from timefuse.plugins.http_credentials import CredentialsUnavailable, HttpCredentials
from timefuse.plugins.http_guard import DestinationGuard, DestinationRefused, GuardedResolver
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.http_transport import (
    Answer,
    BadRequest,
    BadResponse,
    ConnectTimeout,
    PooledTransport,
    ServerDisconnectedError,
    TlsCertificateError,
    TlsHandshakeError,
)
from timefuse.plugins.webhook_signing import WebhookSigner
from timefuse.ports.delivery import DeliveryType

__all__ = ["HttpDelivery", "HttpPlugin", "HttpSettings"]

# Connections open at once when nothing says otherwise: the dispatcher's default concurrency.
DEFAULT_CONNECTION_LIMIT = 1000

# Room the dispatcher leaves above the transport's own timeout before it cuts an attempt off:
# the transport's timeout should fire first and yield a clear reason.
TIMEOUT_MARGIN_SECONDS = 5.0

# A receiver's answer is its status line; the body is read only so that the connection can go
# back to the pool. Past this many bytes the connection is closed instead of drained.
DISCARD_BODY_LIMIT = 64 * 1024

# Past this many seconds the body is not read further and the connection is closed: a
# receiver that drips its body must not hold a delivery after it has answered.
DISCARD_BODY_SECONDS = 1.0

_REASON_LIMIT = 200


class HttpDelivery:
    """Delivers events as HTTP POSTs through one pool of kept-alive connections
    (:mod:`timefuse.plugins.http_transport`).

    The pool is opened by :meth:`start` and closed by :meth:`stop`, never at import or
    construction. :meth:`deliver` never raises: every failure becomes an outcome.
    :meth:`validate_destination` is the submission-time check, with the same guard.

    :param connection_limit: connections open at once to one receiver (the dispatcher's
        concurrency: a backstop that never makes a delivery queue).
    :param resolver: resolves names before the guard filters the addresses (default: aiohttp's
        own resolver, getaddrinfo in a thread); :meth:`stop` closes it.
    """

    def __init__(
        self,
        settings: HttpSettings,
        *,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._settings = settings
        self._connection_limit = connection_limit
        self._guard = DestinationGuard.from_settings(settings)
        self._signer = WebhookSigner.from_settings(settings)
        self._credentials = HttpCredentials.from_settings(settings)
        self._inner_resolver = resolver
        self._resolver: GuardedResolver | None = None
        self._user_agent = f"timefuse/{_own_version()}"
        # No proxy (the environment's proxy variables would route past the guard), no cookie
        # jar (a receiver's cookies must not follow other events), no compression asked for:
        # the transport sends what the request below holds, nothing else.
        self._transport: PooledTransport | None = None

    async def start(self) -> None:
        if self._transport is not None:
            return
        self._resolver = GuardedResolver(self._guard.policy, self._inner_resolver)
        self._transport = PooledTransport(
            self._guard.policy,
            self._resolver,
            connect_timeout=self._settings.connect_timeout,
            limit_per_origin=self._connection_limit,
        )
        await self._credentials.start()

    async def stop(self) -> None:
        transport, self._transport = self._transport, None
        resolver, self._resolver = self._resolver, None
        if transport is not None:
            await transport.close()
        await self._credentials.stop()
        if resolver is not None:
            await resolver.close()

    def validate_destination(self, destination: str) -> str | None:
        return self._guard.validate_destination(destination)

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        transport = self._transport
        if transport is None:
            return DeliveryOutcome.retriable("http delivery is not started")
        # Checked again although checked at submission: IP literals never reach the guarded
        # resolver, and the allowed networks may have changed since.
        url = self._guard.check(event.destination)
        if isinstance(url, str):
            return DeliveryOutcome.permanent(f"invalid destination: {url}")
        options = read_options(event.http)
        body = options.request_body(event.payload)
        headers = self._headers(event, attempt, options, body)
        total = self._total_timeout(options)
        # The operator's credentials for this destination (none for most): headers, a TLS
        # context, and one more try with a fresh OAuth 2.0 token after a 401.
        credentials = self._credentials.for_url(url)
        try:
            # The body was encoded once at submission and is sent byte for byte.
            answer = await credentials.send(
                lambda auth: transport.send(
                    options.method,
                    url,
                    {**headers, **auth} if auth else headers,
                    body,
                    timeout=total,
                    tls=credentials.ssl,
                    body_bytes=DISCARD_BODY_LIMIT,
                    body_seconds=min(DISCARD_BODY_SECONDS, total),
                )
            )
        except CredentialsUnavailable as exc:
            return DeliveryOutcome.retriable(str(exc))
        except Exception as exc:
            return self._failure(exc, total)
        return _outcome(answer, options)

    def attempt_timeout(self, event: Event) -> float:
        """When the dispatcher cuts an attempt of ``event`` off: after the request's own."""
        return self._total_timeout(read_options(event.http)) + TIMEOUT_MARGIN_SECONDS

    def _total_timeout(self, options: HttpOptions) -> float:
        if options.timeout_seconds is None:
            return self._settings.total_timeout
        return options.timeout_seconds

    def _headers(
        self, event: Event, attempt: int, options: HttpOptions, body: bytes
    ) -> dict[str, str]:
        # One timestamp for the header and the signature: they are checked against each other.
        timestamp = int(time.time())
        headers = {"User-Agent": self._user_agent}
        # The sender's own headers; the names timefuse sets below were refused at submission.
        headers.update(options.headers)
        content_type = options.request_content_type(event.payload)
        if content_type is not None:
            headers["Content-Type"] = content_type
        headers["webhook-id"] = event.id
        headers["webhook-timestamp"] = str(timestamp)
        headers["timefuse-attempt"] = str(attempt)
        # The signature covers exactly the bytes sent.
        signature = self._signer.signature(event.source, event.id, timestamp, body)
        if signature is not None:
            headers["webhook-signature"] = signature
        return headers

    def _failure(self, exc: Exception, total: float) -> DeliveryOutcome:
        connect = min(self._settings.connect_timeout, total)
        if isinstance(exc, DestinationRefused):
            # The name resolved to addresses the guard refuses; retrying would not change
            # that unless the operator does, so the event fails with the reason instead.
            return DeliveryOutcome.permanent(exc.reason)
        if isinstance(exc, ConnectTimeout):
            return DeliveryOutcome.retriable(
                f"timeout while connecting (connect timeout {connect:g}s, total {total:g}s)"
            )
        if isinstance(exc, TimeoutError):
            return DeliveryOutcome.retriable(f"timeout: no response within {total:g}s")
        if isinstance(exc, BadRequest):
            return DeliveryOutcome.permanent(f"invalid request: {exc}")
        # A certificate can be renewed and a TLS set-up fixed: both are retried.
        if isinstance(exc, TlsCertificateError):
            return DeliveryOutcome.retriable(f"TLS certificate rejected: {exc.strerror}")
        if isinstance(exc, TlsHandshakeError):
            return DeliveryOutcome.retriable(f"TLS handshake failed: {exc.strerror}")
        if isinstance(exc, BadResponse):
            # An answer without a readable status line: the receiver may do better next time.
            return DeliveryOutcome.retriable(f"bad response: {_one_line(str(exc))}")
        if isinstance(exc, (ServerDisconnectedError, OSError)):
            return DeliveryOutcome.retriable(f"connection failed: {_describe(exc)}")
        # A bug here or in the transport must not lose the event: retry it, with the reason.
        return DeliveryOutcome.retriable(f"unexpected error: {_describe(exc)}")


def _outcome(answer: Answer, options: HttpOptions) -> DeliveryOutcome:
    # The status line is the receiver's answer. Nothing after it (odd header values, a body
    # that is endless, slow, cut short or badly chunked) may turn a 2xx into a failure.
    status = answer.status
    if options.is_success(status):
        outcome = DeliveryOutcome.success(status)
    elif options.success_statuses is not None and 200 <= status < 300:
        # A 2xx the sender did not list: the receiver did not do what was meant.
        outcome = DeliveryOutcome.permanent(f"HTTP {status} is not in success_statuses", status)
    else:
        retry_after = parse_retry_after(answer.header("Retry-After"), time.time())
        outcome = classify_http_status(status, retry_after)
    # The start of the answer's body, for completion callbacks.
    return dataclasses.replace(outcome, response_excerpt=response_excerpt(answer.body))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(text: str) -> str:
    # A parser's error may span lines and quote the receiver's bytes: one line, cut short,
    # is what an attempt's record needs.
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip() not in ("", "^"))
    return flat if len(flat) <= _REASON_LIMIT else flat[: _REASON_LIMIT - 1] + "…"


def _own_version() -> str:
    try:
        return importlib.metadata.version("timefuse")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class HttpPlugin:
    """The built-in ``http`` delivery type, registered through the same hooks as any plugin.

    :param connection_limit: the dispatcher's concurrency, which sizes the connection pool.
    """

    def __init__(self, connection_limit: int = DEFAULT_CONNECTION_LIMIT) -> None:
        self._connection_limit = connection_limit

    @hookimpl
    def declare_settings(self) -> type[HttpSettings]:
        return HttpSettings

    @hookimpl
    def register_delivery_types(
        self, register: Callable[[DeliveryType], None], settings: HttpSettings
    ) -> None:
        delivery = HttpDelivery(settings, connection_limit=self._connection_limit)
        register(
            DeliveryType(
                name="http",
                validate_destination=delivery.validate_destination,
                deliver=delivery.deliver,
                start=delivery.start,
                stop=delivery.stop,
                timeout_seconds=settings.total_timeout + TIMEOUT_MARGIN_SECONDS,
                attempt_timeout=delivery.attempt_timeout,
            )
        )
