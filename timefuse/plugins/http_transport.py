"""The HTTP/1.1 client under http delivery: kept-alive connections, one request at a time each.

:class:`Transport` is the whole interface the delivery type sees: ``send(method, url, headers,
body, ...)`` returns an :class:`Answer` (status, headers, the start of the body) or raises one
of this module's errors. Building the request (which headers, which body) stays with the
caller; this module only carries it. It is written on asyncio protocols with httptools'
response parser (llhttp) because a delivery's cost was mostly the client library's own
bookkeeping: a request here is one write, one parse and one future.

What it guarantees:

- **The SSRF guard at connect time**: a name is resolved by the guarded resolver (only allowed
  addresses come back) when a connection is opened, and an IP literal is checked against the
  same policy there; nothing reaches an address the policy refuses.
- **TLS with verification**: the default context verifies the certificate and the host name;
  a destination's own context (client certificate, CA bundle) is used only on connections
  opened with it: connections are pooled per origin *and* context.
- **Bounds**: a deadline per attempt (connect, write, the answer's head), a connect timeout, a
  head of at most :data:`MAX_HEAD_BYTES` bytes and :data:`MAX_HEADERS` headers, and a body read
  for at most ``body_bytes`` bytes and ``body_seconds`` seconds; past a bound the connection
  is closed instead of drained. Redirects are answers: nothing is followed.
- **The status line is the answer**: once a final status line has arrived, what follows (a
  head too large, bad chunking, a reset, a timeout) ends the read, never the answer.
- **Connection reuse** with a per-origin limit of open connections; idle connections are
  closed after :data:`KEEPALIVE_SECONDS`, before common servers' own idle timeouts. A request
  on a kept-alive connection that the receiver closes before sending back a single byte (it
  closed the idle connection as the request went out) is sent once more on a new connection,
  within the same deadline: that close is no answer, and must not cost the event an attempt.
  (A receiver that took the request and then closed without a byte may so get it twice: at
  least once allows that.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import socket
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp.abc import AbstractResolver
from yarl import URL

from timefuse.plugins.http_connection import (
    Answer,
    BadResponse,
    Connection,
    ResponseTimeout,
    ServerDisconnectedError,
)
from timefuse.plugins.http_guard import AddressPolicy, DestinationRefused, parse_address

__all__ = [
    "KEEPALIVE_SECONDS",
    "Answer",
    "BadResponse",
    "ConnectFailed",
    "ConnectTimeout",
    "PooledTransport",
    "ResponseTimeout",
    "ServerDisconnectedError",
    "TlsCertificateError",
    "TlsHandshakeError",
    "Transport",
]

# Idle keep-alive connections are dropped before the 5 s idle timeout of common servers
# (uvicorn, Node), so a request rarely meets a connection the receiver is closing (and is sent
# again on a new one when it does).
KEEPALIVE_SECONDS = 4.0
DNS_CACHE_SECONDS = 60.0
# Origins whose (empty) connection pools are kept before the empty ones are forgotten.
POOLS_KEPT = 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
CLOSE_WAIT_SECONDS = 1.0
# How a kept-alive connection that the receiver closed under a request ends that request.
_CLOSED_UNDER_US = (ServerDisconnectedError, ConnectionResetError, BrokenPipeError)


class ConnectTimeout(TimeoutError):
    """No connection (TCP and TLS) within the connect timeout or the attempt's deadline."""


class ConnectFailed(OSError):
    """The connection could not be opened (refused, unreachable, a name that doesn't resolve)."""


class TlsCertificateError(ConnectFailed):
    """The receiver's certificate was not accepted (untrusted, expired, another host's)."""


class TlsHandshakeError(ConnectFailed):
    """TLS could not be set up (the receiver does not speak it, or no common parameters)."""


class Transport(Protocol):
    """What http delivery sends requests through."""

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float,
        tls: ssl.SSLContext | bool = True,
        body_bytes: int = 64 * 1024,
        body_seconds: float = 1.0,
    ) -> Answer:
        """Send one request; the answer once its head is in and its body read within bounds.

        :param url: absolute http(s) URL; its path and query are sent as they are.
        :param timeout: seconds for the whole attempt up to the answer's head.
        :param tls: ``True`` for the default verified context, or the destination's own.
        :param body_bytes: the most of the body read (and kept); past it the connection closes.
        :param body_seconds: the longest the body is read after the head.
        :raises ConnectTimeout, ResponseTimeout: a deadline passed before the status line.
        :raises DestinationRefused: every address of the host is one the policy refuses.
        :raises ConnectFailed: (and its TLS subclasses) no connection could be opened.
        :raises ServerDisconnectedError, BadResponse: no readable status line came back.
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a URL's requests go, and the start of every request's head there."""

    host: str  # as connected to: an IP literal without brackets, or an IDNA name
    port: int
    tls: bool
    host_header: str
    target: str

    @staticmethod
    def of(url: URL) -> _Origin:
        host = url.raw_host
        port = url.port
        if not host or port is None or url.scheme not in ("http", "https"):
            raise BadRequest(f"not an absolute http(s) URL: {url}")
        shown = f"[{host}]" if ":" in host else host
        explicit = url.explicit_port
        default = 443 if url.scheme == "https" else 80
        host_header = shown if explicit is None or explicit == default else f"{shown}:{port}"
        return _Origin(host.removesuffix("."), port, url.scheme == "https", host_header,
                       url.raw_path_qs or "/")  # fmt: skip


class BadRequest(ValueError):
    """The request can't be sent as given (a header with a line break, a URL without host)."""


class PooledTransport:
    """Kept-alive connections per origin and TLS context, opened through the guard.

    :param policy: the addresses connections may be opened to.
    :param resolver: names to addresses; the caller wraps it in the guard (and closes it).
    :param connect_timeout: seconds to open a connection (TCP and TLS).
    :param limit_per_origin: connections open at once to one origin; a request beyond waits
        for one, within its own deadline.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: AbstractResolver,
        *,
        connect_timeout: float,
        limit_per_origin: int,
        user_tls: ssl.SSLContext | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._limit = max(1, limit_per_origin)
        self._default_tls = user_tls
        self._pools: dict[tuple[str, int, bool, object], _Pool] = {}
        self._origins: dict[URL, _Origin] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[tuple[str, int]]]] = {}
        # Pools are forgotten once this many are kept, those with no connection left.
        self._forget_at = POOLS_KEPT
        self._closed = False

    @property
    def open_connections(self) -> int:
        return sum(pool.open for pool in self._pools.values())

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float,
        tls: ssl.SSLContext | bool = True,
        body_bytes: int = 64 * 1024,
        body_seconds: float = 1.0,
    ) -> Answer:
        origin = self._origins.get(url)
        if origin is None:
            origin = _Origin.of(url)
            if len(self._origins) > 4096:
                self._origins.clear()
            self._origins[url] = origin
        context = self._context(tls) if origin.tls else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        head = _head(method, origin, headers, len(body))
        key = (origin.host, origin.port, origin.tls, context)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= self._forget_at:
                self._forget_empty_pools()
            pool = self._pools[key] = _Pool(self._limit)
        small = len(body) < 65536
        data, more = (head + body, None) if small else (head, body)
        send = functools.partial(
            Connection.request,
            data=data,
            more=more,
            deadline=deadline,
            head_only=method == "HEAD",
            body_bytes=body_bytes,
            body_seconds=body_seconds,
            done=pool.release,
        )
        # Held while this request may still reserve a connection of the pool: a pool in use
        # is never forgotten, so its origin keeps one pool and one limit.
        pool.users += 1
        try:
            connection = pool.idle_connection(loop.time())
            if connection is not None:
                try:
                    return await send(connection)
                except _CLOSED_UNDER_US:
                    if connection.heard_back:
                        raise
                # A kept-alive connection the receiver closed as this request went out (its
                # idle timeout ended then): nothing came back, so this is no answer of the
                # receiver's and costs no attempt. Once more, on another connection (a new
                # one, unless one came back idle meanwhile); what that one does is the
                # attempt's answer.
            connection = await self._open(pool, origin, context, deadline)
            return await send(connection)
        finally:
            pool.users -= 1

    def _forget_empty_pools(self) -> None:
        """Drop the pools of origins with no connection open or awaited: a sender spraying
        receivers must not grow the process. Next time when twice as many are kept (at least
        ``POOLS_KEPT``), so the sweeps cost as little per request as the pools do."""
        self._pools = {key: pool for key, pool in self._pools.items() if not pool.empty}
        self._forget_at = max(POOLS_KEPT, 2 * len(self._pools))

    def _context(self, tls: ssl.SSLContext | bool) -> ssl.SSLContext:
        if isinstance(tls, ssl.SSLContext):
            return tls
        if self._default_tls is None:
            self._default_tls = ssl.create_default_context()
        return self._default_tls

    async def _open(
        self, pool: _Pool, origin: _Origin, context: ssl.SSLContext | None, deadline: float
    ) -> Connection:
        """A new connection, or, at the pool's limit, the first one another request frees."""
        loop = asyncio.get_running_loop()
        idle = await pool.reserve(deadline)
        if idle is not None:
            return idle  # one came back to the pool while this request waited for room
        try:
            limit = min(deadline, loop.time() + self._connect_timeout)
            async with asyncio.timeout_at(limit):
                return await self._connect(pool, origin, context, limit)
        except TimeoutError:
            pool.unreserve()
            raise ConnectTimeout(
                f"no connection to {origin.host_header} within "
                f"{self._connect_timeout:g} s (connect timeout) or the attempt's deadline"
            ) from None
        except BaseException:
            pool.unreserve()
            raise

    async def _connect(
        self, pool: _Pool, origin: _Origin, context: ssl.SSLContext | None, deadline: float
    ) -> Connection:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for address, port in await self._resolve(origin):
            try:
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, pool),
                    address,
                    port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                    ssl_handshake_timeout=max(0.001, deadline - loop.time())
                    if context is not None
                    else None,
                )
            except ssl.SSLCertVerificationError as exc:
                raise TlsCertificateError(errno.EPROTO, _describe(exc)) from exc
            except ssl.SSLError as exc:
                raise TlsHandshakeError(errno.EPROTO, _describe(exc)) from exc
            except OSError as exc:
                last = exc
                continue
            return connection
        assert last is not None
        raise ConnectFailed(last.errno or errno.ECONNREFUSED, _describe(last)) from last

    async def _resolve(self, origin: _Origin) -> list[tuple[str, int]]:
        literal = parse_address(origin.host)
        if literal is not None:
            # Checked at submission and before the post too; here it is the connection's turn.
            refused = self._policy.refusal_message(literal)
            if refused is not None:
                raise DestinationRefused(refused)
            return [(origin.host, origin.port)]
        loop = asyncio.get_running_loop()
        cached = self._addresses.get((origin.host, origin.port))
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            results = await self._resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC)
        except DestinationRefused:
            raise
        except OSError as exc:
            raise ConnectFailed(exc.errno or errno.EHOSTUNREACH, _describe(exc)) from exc
        # The guarded resolver returns only allowed addresses; each is checked once more
        # here, so a resolver that is not the guard can't open a way past it.
        found = []
        for result in results:
            address = parse_address(str(result["host"]))
            if address is not None and self._policy.refusal(address) is None:
                found.append((str(result["host"]), int(result["port"])))
        if not found:
            raise ConnectFailed(errno.EHOSTUNREACH, f"{origin.host} resolved to no address")
        if len(self._addresses) > 4096:
            self._addresses.clear()
        self._addresses[(origin.host, origin.port)] = (loop.time() + DNS_CACHE_SECONDS, found)
        return found

    async def close(self) -> None:
        """Close every connection, and wait (briefly) until each one is closed."""
        self._closed = True
        lost: list[asyncio.Future[None]] = []
        closing = [pool.close() for pool in self._pools.values()]
        for connections in closing:
            lost.extend(connection.lost for connection in connections if not connection.lost.done())
        self._pools.clear()
        if lost:
            # Receivers close their side when they read the end of the stream; the bound
            # covers one that doesn't. Past it the rest are cut off.
            await asyncio.wait(lost, timeout=CLOSE_WAIT_SECONDS)
            for connections in closing:
                for connection in connections:
                    connection.abort()


class _Pool:
    """One origin's connections: idle ones (most recently used last) and a count of open."""

    __slots__ = ("_all", "_idle", "_limit", "_sweep", "_waiters", "open", "users")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._idle: deque[Connection] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._all: set[Connection] = set()
        self.open = 0
        self.users = 0  # requests between taking the pool and their answer

    def idle_connection(self, now: float) -> Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.reusable(now - KEEPALIVE_SECONDS):
                return connection
            connection.close()
        return None

    async def reserve(self, deadline: float) -> Connection | None:
        """Count a connection about to be opened (``None``), waiting for room under the limit;
        or an idle connection, when one comes back to the pool first."""
        loop = asyncio.get_running_loop()
        while self.open >= self._limit:
            idle = self.idle_connection(loop.time())
            if idle is not None:
                return idle
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise ResponseTimeout("no connection free within the attempt's deadline") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.open += 1
        return None

    def unreserve(self) -> None:
        self.open -= 1
        self._wake()

    def release(self, connection: Connection, reusable: bool) -> None:
        """A request on ``connection`` ended; keep it for the next one or let it go."""
        if reusable:
            self._idle.append(connection)
            if self._waiters:
                self._wake()
            elif self._sweep is None:
                self._sweep = asyncio.get_running_loop().call_later(
                    KEEPALIVE_SECONDS, self._close_stale
                )
        else:
            connection.close()

    @property
    def empty(self) -> bool:
        """No connection open or being opened, no request using it: nothing here to keep."""
        return not self.open and not self.users

    def made(self, connection: Connection) -> None:
        """``connection`` is open (counted already by :meth:`reserve`)."""
        self._all.add(connection)

    def lost(self, connection: Connection) -> None:
        """``connection`` closed (either side)."""
        self.open -= 1
        self._all.discard(connection)
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_stale(self) -> None:
        self._sweep = None
        cutoff = asyncio.get_running_loop().time() - KEEPALIVE_SECONDS
        while self._idle and not self._idle[0].reusable(cutoff):
            self._idle.popleft().close()
        if self._idle:
            self._sweep = asyncio.get_running_loop().call_later(
                KEEPALIVE_SECONDS, self._close_stale
            )

    def close(self) -> list[Connection]:
        """Close every connection, idle or busy; each one's ``lost`` resolves when it is."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        self._idle.clear()
        connections = list(self._all)
        for connection in connections:
            connection.shut_down()
        return connections


def _head(method: str, origin: _Origin, headers: Mapping[str, str], length: int) -> bytes:
    lines = [f"{method} {origin.target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name:
            raise BadRequest(f"header {name!r} can't be sent: it holds a line break or colon")
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise BadRequest("a header holds characters HTTP/1.1 can't carry") from None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
