"""The built-in ``http`` delivery type: one POST of the event's payload to its destination.

Registered through the same hook as third-party delivery types. Every request carries the
Standard Webhooks headers ``webhook-id`` (the event id, the same on every retry, so receivers
can drop duplicates) and ``webhook-timestamp``, plus ``webhook-signature`` when the event's
source has signing keys, and the operator's credentials for the destination, if any
(:mod:`http_credentials`). Destinations pass the SSRF guard of :mod:`http_guard`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import time
from collections.abc import Callable

import aiohttp
from aiohttp.abc import AbstractResolver

from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, classify_http_status, parse_retry_after
from timefuse.plugins.hookspecs import hookimpl
from timefuse.plugins.http_answer import answered_status
from timefuse.plugins.http_credentials import CredentialsUnavailable, HttpCredentials
from timefuse.plugins.http_guard import (
    DestinationGuard,
    DestinationRefused,
    GuardedResolver,
    build_connector,
)
from timefuse.plugins.http_settings import HttpSettings
from timefuse.plugins.webhook_signing import WebhookSigner
from timefuse.ports.delivery import DeliveryType

__all__ = ["HttpDelivery", "HttpPlugin", "HttpSettings"]

# Connections open at once when nothing says otherwise: the dispatcher's default concurrency.
DEFAULT_CONNECTION_LIMIT = 1000

# Room the dispatcher leaves above aiohttp's own total timeout before it cuts an attempt off:
# aiohttp's timeout should fire first and yield a clear reason.
TIMEOUT_MARGIN_SECONDS = 5.0

# A receiver's answer is its status line; the body is read only so that the connection can go
# back to the pool. Past this many bytes the connection is closed instead of drained.
DISCARD_BODY_LIMIT = 64 * 1024

# Past this many seconds the body is not read further and the connection is closed: a
# receiver that drips its body must not hold a delivery after it has answered.
DISCARD_BODY_SECONDS = 1.0

_REASON_LIMIT = 200

# Headers aiohttp would add on its own that a webhook has no use for: Accept-Encoding would
# invite a compressed answer we would only throw away, and Accept says nothing useful.
_SKIPPED_AUTO_HEADERS = ("Accept", "Accept-Encoding")


class HttpDelivery:
    """Delivers events as HTTP POSTs through one pooled :class:`aiohttp.ClientSession`.

    The session is opened by :meth:`start` and closed by :meth:`stop`, never at import or
    construction. :meth:`deliver` never raises: every failure becomes an outcome.
    :meth:`validate_destination` is the submission-time check, with the same guard.

    :param connection_limit: connections open at once (the dispatcher's concurrency: a
        backstop that never makes a delivery queue).
    :param resolver: resolves names before the guard filters the addresses (default: aiohttp's
        own resolver); :meth:`stop` closes it.
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
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout, sock_connect=settings.connect_timeout
        )
        self._user_agent = f"timefuse/{_own_version()}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        self._resolver = GuardedResolver(self._guard.policy, self._inner_resolver)
        self._session = aiohttp.ClientSession(
            connector=build_connector(self._connection_limit, self._resolver),
            timeout=self._timeout,
            # Proxy variables would route deliveries through a proxy that connects wherever it
            # is told, past the guarded resolver: the environment is ignored on purpose.
            trust_env=False,
            # Receivers' cookies must not follow other events to the same host, and a real
            # jar would filter cookies on every request.
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIPPED_AUTO_HEADERS,
            auto_decompress=False,
        )
        await self._credentials.start()

    async def stop(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        await self._credentials.stop()
        if resolver is not None:
            await resolver.close()

    def validate_destination(self, destination: str) -> str | None:
        return self._guard.validate_destination(destination)

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        session = self._session
        if session is None:
            return DeliveryOutcome.retriable("http delivery is not started")
        # Checked again although checked at submission: IP literals never reach the guarded
        # resolver, and the allowed networks may have changed since.
        url = self._guard.check(event.destination)
        if isinstance(url, str):
            return DeliveryOutcome.permanent(f"invalid destination: {url}")
        headers = self._headers(event, attempt)
        # The operator's credentials for this destination (none for most): headers, a TLS
        # context, and one more try with a fresh OAuth 2.0 token after a 401.
        credentials = self._credentials.for_url(url)
        try:
            # The payload was JSON-encoded once at submission and is sent byte for byte.
            response = await credentials.send(
                lambda auth: session.post(
                    url,
                    data=event.payload,
                    headers={**headers, **auth},
                    ssl=credentials.ssl,
                    allow_redirects=False,
                )
            )
        except CredentialsUnavailable as exc:
            return DeliveryOutcome.retriable(str(exc))
        except Exception as exc:
            return self._failure(exc)
        return await _answer(response, self._settings.total_timeout)

    def _headers(self, event: Event, attempt: int) -> dict[str, str]:
        # One timestamp for the header and the signature: they are checked against each other.
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "timefuse-attempt": str(attempt),
        }
        signature = self._signer.signature(event.source, event.id, timestamp, event.payload)
        if signature is not None:
            headers["webhook-signature"] = signature
        return headers

    def _failure(self, exc: Exception) -> DeliveryOutcome:
        settings = self._settings
        answered = answered_status(exc)
        if answered is not None:
            # The status line arrived before whatever went wrong after it (a head too large
            # to read, bad chunking, a reset): it is the receiver's answer.
            return classify_http_status(answered)
        refused = DestinationRefused.from_client_error(exc)
        if refused is not None:
            # The name resolved to addresses the guard refuses; retrying would not change
            # that unless the operator does, so the event fails with the reason instead.
            return DeliveryOutcome.permanent(refused.reason)
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            # Raised for the connect timeout and for the total one if it expires first.
            return DeliveryOutcome.retriable(
                f"timeout while connecting (connect timeout {settings.connect_timeout:g}s,"
                f" total {settings.total_timeout:g}s)"
            )
        if isinstance(exc, asyncio.TimeoutError):  # aiohttp.ServerTimeoutError included
            return DeliveryOutcome.retriable(
                f"timeout: no response within {settings.total_timeout:g}s"
            )
        if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
            return DeliveryOutcome.permanent(f"invalid destination: {exc}")
        # A certificate can be renewed and a TLS set-up fixed: both are retried.
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return DeliveryOutcome.retriable(
                f"TLS certificate rejected: {_describe(exc.certificate_error)}"
            )
        if isinstance(exc, aiohttp.ClientSSLError):
            return DeliveryOutcome.retriable(f"TLS handshake failed: {_describe(exc.os_error)}")
        if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
            return DeliveryOutcome.retriable(f"connection failed: {_describe(exc)}")
        if isinstance(exc, aiohttp.ClientResponseError):
            # An answer without a readable status line: the receiver may do better next time.
            return DeliveryOutcome.retriable(f"bad response: {_one_line(exc.message)}")
        if isinstance(exc, aiohttp.ClientError):
            # A malformed or truncated response: the receiver may answer properly next time.
            return DeliveryOutcome.retriable(f"bad response: {_describe(exc)}")
        # A bug here or in aiohttp must not lose the event: retry it, with the reason recorded.
        return DeliveryOutcome.retriable(f"unexpected error: {_describe(exc)}")


async def _answer(response: aiohttp.ClientResponse, total_timeout: float) -> DeliveryOutcome:
    # The status line is the receiver's answer. Nothing after it (odd header values, a body
    # that is endless, slow, cut short or badly chunked) may raise or turn a 2xx into a failure.
    status = response.status
    retry_after = None
    if not 200 <= status < 300:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
    drained = await _discard_body(response, min(DISCARD_BODY_SECONDS, total_timeout))
    if drained:
        response.release()  # the connection goes back to the pool
    else:
        response.close()
    return classify_http_status(status, retry_after)


async def _discard_body(response: aiohttp.ClientResponse, seconds: float) -> bool:
    """Read and drop the body; ``False`` if it was not read to its end within the bounds."""
    content = response.content
    budget = DISCARD_BODY_LIMIT
    try:
        async with asyncio.timeout(seconds):
            while budget > 0 and not content.at_eof():
                chunk = await content.readany()
                if not chunk:
                    break
                budget -= len(chunk)
    except Exception:
        # Timeout, reset, bad chunking: the connection can't be reused, nothing more.
        return False
    return content.at_eof()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _one_line(text: str) -> str:
    # aiohttp's parser errors span lines and quote the receiver's bytes with a caret under
    # them: one line, cut short, is what an attempt's record needs.
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
            )
        )
