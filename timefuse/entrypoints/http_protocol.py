"""The HTTP/1.1 protocol every listener serves with: uvicorn's httptools protocol, bounded.

timefuse answers clients directly (no proxy in front by default), so the server itself bounds
what a client may hold before the application sees a request: how many connections are open,
how long headers and a body may take to arrive, how large headers may be, how long an idle
connection stays open. Each guard is a counter or one timer on the connection; a request whose
headers and body arrive in one read arms no timer at all.

When the server answers before it has read a whole request (413, 431, 408, 400), it half-closes
and discards what the client still sends, for a bounded time, before closing: closing a socket
with unread data makes the kernel send a reset, and a client still writing its body would see
"connection reset" instead of the answer.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from timefuse.entrypoints.api.envelope import ErrorEnvelope, encode
from timefuse.entrypoints.http_connections import Connections, ServerLimits

REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
HEADERS_TOO_LARGE = "HEADERS_TOO_LARGE"
MALFORMED_REQUEST = "MALFORMED_REQUEST"
SERVER_BUSY = "SERVER_BUSY"


# Phases of a connection. Identity-compared constants: this is the per-request hot path.
_HEADERS = "headers"  # waiting for, or reading, a request's headers
_REQUEST = "request"  # headers read: the application has the request
_IDLE = "idle"  # keep-alive, between requests
_LINGER = "linger"  # answered early and half-closed: discarding the rest, then closing
_CLOSED = "closed"


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards above; one subclass per listener.

    Use :func:`bounded_protocol` to make the subclass, which carries the limits and the
    listener's :class:`Connections`.
    """

    limits: ClassVar[ServerLimits]
    connections_of_listener: ClassVar[Connections]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._socket: asyncio.Transport | None = None
        self._graceful: _GracefulClose | None = None
        self._phase = _HEADERS
        # Whether the current request has begun (a first byte arrived), and the header bytes
        # received for it, counted in whole reads. After the first request, the read a request
        # began in is left out: it may hold the end of the previous request's body.
        self._began = False
        self._header_bytes = 0
        self._read_size = 0
        # One timer at a time: the header deadline, the body deadline, or the end of lingering.
        # The header and body clocks start at the end of the read in which the request began,
        # or its headers ended: a request that arrives in one read never arms one.
        self._timer: asyncio.TimerHandle | None = None
        self._body_open = False
        self._stopping = False

    # Connection life

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        self._socket = transport
        super().connection_made(transport)
        # Every close from here on (the request cycles', uvicorn's own) goes through this.
        self._graceful = self.transport = _GracefulClose(transport, self)
        if not self.connections_of_listener.admit(self):
            self._phase = _CLOSED
            self.connections_of_listener.closed("refused")
            message = "the server holds as many connections as it may; retry shortly"
            transport.write(self._error(503, SERVER_BUSY, message))
            transport.close()
            return
        self._timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self._cancel_timer()
        self.connections_of_listener.leave(self)
        super().connection_lost(exc)
        if self._graceful is not None:
            # The transport uvicorn holds points back here: without this the connection's
            # objects would wait for the cyclic garbage collector instead of going now.
            self._graceful.release()

    def shed(self) -> None:
        """Close now: the listener needs the descriptor for a newer connection."""
        self.connections_of_listener.closed("shed")
        self._phase = _CLOSED
        self._cancel_timer()
        if self._socket is not None:
            self._socket.close()

    def shutdown(self) -> None:
        self._stopping = True
        if self._phase is _LINGER and self._socket is not None:
            self._socket.close()
            return
        super().shutdown()

    # Reading

    def data_received(self, data: bytes) -> None:
        if self._phase is _LINGER or self._phase is _CLOSED:
            return
        self._read_size = len(data)
        if self._phase is _HEADERS:
            self._header_bytes += self._read_size
        super().data_received(data)
        if self._phase is _HEADERS:
            if self._header_bytes > self.limits.max_header_bytes:
                self._headers_too_large()
            elif self._timer is None:
                self._timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)
        elif self._body_open and self._timer is None and self._phase is not _LINGER:
            self._timer = self.loop.call_later(self.limits.body_timeout, self._body_late)

    def on_message_begin(self) -> None:
        if self._phase is _LINGER:
            return
        if self._phase is not _HEADERS:
            # The next request on a kept-alive (or pipelined) connection.
            self._phase = _HEADERS
            self._header_bytes = 0
        self._began = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._phase is _LINGER:
            return
        limit = self.limits.max_header_bytes
        # Counting the headers costs a loop: only when the reads were large enough to matter.
        if self._header_bytes + self._read_size > limit and self._header_size() > limit:
            self._headers_too_large()
            return
        if self._timer is not None:
            self._cancel_timer()
        self._phase = _REQUEST
        self._body_open = True
        self.connections_of_listener.works(self)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._phase is not _LINGER:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._phase is _LINGER:
            return
        self._body_open = False
        if self._timer is not None:
            self._cancel_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle.response_complete and not self._closing():
            # No request left with the application: the connection waits (for the rest of a
            # body the answer didn't need, or the next request), and may be shed.
            if self._phase is _REQUEST:
                self._phase = _IDLE
                self._began = False
            self.connections_of_listener.waits(self)

    def send_400_response(self, msg: str) -> None:
        if self._phase is _LINGER or self._phase is _CLOSED:
            return  # already answered
        self.connections_of_listener.closed("malformed")
        self._answer_and_close(400, MALFORMED_REQUEST, msg)

    # Deadlines and limits

    def _headers_late(self) -> None:
        self._timer = None
        self.connections_of_listener.closed("header_timeout")
        cycle: RequestResponseCycle | None = self.cycle
        if not self._began or (cycle is not None and not cycle.response_complete):
            # Nothing sent at all, so nothing to answer; or a pipelined request stalled behind
            # one whose answer is still to come, which a 408 written now would precede.
            self._close_now()
            return
        seconds = f"{self.limits.header_timeout:g}"
        message = f"the request headers did not arrive within {seconds} s"
        self._answer_and_close(408, REQUEST_TIMEOUT, message)

    def _body_late(self) -> None:
        self._timer = None
        self.connections_of_listener.closed("body_timeout")
        cycle = self.cycle
        if cycle.response_started:
            # Answered already (without reading the whole body): nothing more to say.
            self._close_now()
            return
        cycle.disconnected = True
        cycle.message_event.set()
        seconds = f"{self.limits.body_timeout:g}"
        message = f"the request body did not arrive within {seconds} s"
        self._answer_and_close(408, REQUEST_TIMEOUT, message)

    def _headers_too_large(self) -> None:
        self.connections_of_listener.closed("headers_too_large")
        message = f"the request headers exceed {self.limits.max_header_bytes} bytes"
        self._answer_and_close(431, HEADERS_TOO_LARGE, message)

    def _header_size(self) -> int:
        # The request line and each "name: value\r\n", as received.
        size = len(self.url) + 16
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    # Closing

    def _answer_and_close(self, status: int, error_code: str, message: str) -> None:
        socket = self._socket
        if socket is None or socket.is_closing():
            return
        socket.write(self._error(status, error_code, message))
        self._linger()

    def _error(self, status: int, error_code: str, message: str) -> bytes:
        body = encode(ErrorEnvelope(False, None, message, error_code, None, datetime.now(UTC)))
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("ascii")]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        return b"".join(head) + body

    def _closing(self) -> bool:
        return self._phase is _LINGER or self._socket is None or self._socket.is_closing()

    def close_requested(self) -> None:
        """The protocol or a request cycle closes: linger if the client is still sending."""
        unread = self._body_open or (self._phase is _HEADERS and self._began)
        if unread and not self._stopping and self._phase is not _CLOSED:
            self._linger()
        else:
            self._close_now()

    def _linger(self) -> None:
        socket = self._socket
        if socket is None or self._phase is _LINGER or socket.is_closing():
            return
        self._phase = _LINGER
        self._cancel_timer()
        self.connections_of_listener.waits(self)
        self.flow.resume_reading()
        if not socket.can_write_eof():
            socket.close()
            return
        # The answer, then FIN: the client reads it once it has sent what it was sending.
        socket.write_eof()
        self._timer = self.loop.call_later(self.limits.body_timeout, socket.close)

    def _close_now(self) -> None:
        self._cancel_timer()
        if self._socket is not None:
            self._socket.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _GracefulClose(asyncio.Transport):
    """The connection's transport as uvicorn sees it: ``close`` asks the protocol first.

    uvicorn closes a connection right after the answer to a ``Connection: close`` request,
    whether or not the request's body has been read; this routes that close through
    :meth:`BoundedHttpProtocol.close_requested`.
    """

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpProtocol) -> None:
        super().__init__()
        self._transport = transport
        self._protocol: BoundedHttpProtocol | None = protocol

    def release(self) -> None:
        self._protocol = None

    def close(self) -> None:
        if self._protocol is None:
            self._transport.close()
        else:
            self._protocol.close_requested()

    def is_closing(self) -> bool:
        protocol = self._protocol
        return self._transport.is_closing() or (protocol is not None and protocol._phase is _LINGER)

    def write(self, data: bytes | bytearray | memoryview[int]) -> None:
        self._transport.write(data)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def abort(self) -> None:
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


def bounded_protocol(limits: ServerLimits, connections: Connections) -> type[BoundedHttpProtocol]:
    """The protocol class for one listener: uvicorn's ``Config(http=...)`` takes it."""

    class ListenerProtocol(BoundedHttpProtocol):
        pass

    ListenerProtocol.limits = limits
    ListenerProtocol.connections_of_listener = connections
    return ListenerProtocol
