"""One client connection of :mod:`http_transport`: a request written, its answer parsed.

A connection carries one request at a time. Its answer is parsed by httptools (llhttp) as the
bytes arrive, and the request's future is resolved once, with whichever comes first: the
answer complete, a bound reached after the status line (the status line is the answer), or
an error before it. A connection whose answer was not read to its end is closed, never reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools

from timefuse.plugins.http_answer import final_status

if TYPE_CHECKING:
    from timefuse.plugins.http_transport import _Pool

__all__ = ["Answer", "BadResponse", "Connection", "ResponseTimeout", "ServerDisconnectedError"]

# The first bytes of each answer are kept: when llhttp refuses a head that a plain reading of
# its status line accepts (bare LF line ends), the status line is still the answer.
_RECORDED_BYTES = 1024
_MAX_HEAD_BYTES = 64 * 1024
_MAX_HEADERS = 128
_SWITCHING_PROTOCOLS = 101


class ResponseTimeout(TimeoutError):
    """No status line within the attempt's deadline."""


class ServerDisconnectedError(ConnectionError):
    """The receiver closed the connection before its answer's status line."""


class BadResponse(ValueError):
    """What came back has no readable status line."""


class Answer:
    """A receiver's answer: the status, the headers read, the start of the body.

    ``complete`` is ``False`` when the read stopped at a bound (a head too large, a body too
    long or too slow, bad framing, a reset) after the status line.
    """

    __slots__ = ("body", "complete", "headers", "status")

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, complete: bool
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.complete = complete

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), if it was read."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def close(self) -> None:
        """Nothing to release: the connection went back to its pool or was closed already."""


_Done = Callable[["Connection", bool], None]


class Connection(asyncio.Protocol):
    """A kept-alive HTTP/1.1 client connection (the protocol of one transport)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: _Pool) -> None:
        self._loop = loop
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._closed = False
        self._made = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self._idle_since = 0.0
        # The request in progress (None between requests).
        self._waiter: asyncio.Future[Answer] | None = None
        self._done: _Done | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._code: int | None = None
        self._status: int | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._in_head = True
        self._head_only = False
        self._body = bytearray()
        self._body_budget = 0
        self._body_seconds = 0.0
        self._recorded = b""

    # -- the pool's side -------------------------------------------------------------------

    @property
    def heard_back(self) -> bool:
        """Whether the receiver sent any byte for the last request."""
        return self._head_bytes > 0

    def reusable(self, idle_after: float) -> bool:
        return not self._closed and self._idle_since >= idle_after

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self.lost.done():
            self._closed = True
            self._transport.abort()

    def shut_down(self) -> None:
        """Close gracefully: end the sending side, and close once the receiver has (its end
        of the stream ends the connection); an answer in progress ends it at once."""
        transport = self._transport
        if transport is None or self._closed:
            return
        if self._waiter is None and transport.can_write_eof():
            self._closed = True  # nothing more is sent; the receiver's EOF closes it
            transport.write_eof()
        else:
            self.close()

    async def request(
        self,
        data: bytes,
        more: bytes | None,
        *,
        deadline: float,
        head_only: bool,
        body_bytes: int,
        body_seconds: float,
        done: _Done,
    ) -> Answer:
        assert self._transport is not None
        assert self._waiter is None
        waiter = self._waiter = self._loop.create_future()
        self._done = done
        self._code = None
        self._status = None
        self._headers = []
        self._head_bytes = 0
        self._in_head = True
        self._head_only = head_only
        self._body = bytearray()
        self._body_budget = body_bytes
        self._body_seconds = body_seconds
        self._recorded = b""
        self._timer = self._loop.call_at(deadline, self._timed_out)
        self._transport.write(data)
        if more is not None:
            self._transport.write(more)
        try:
            answer: Answer = await waiter
        except asyncio.CancelledError:
            # The attempt was cut off from outside: the answer will never be read.
            self._finish(None, None)
            self.close()
            raise
        return answer

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast("asyncio.Transport", transport)
        self._made = True
        self._pool.made(self)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: this connection's framing can't be trusted any more.
            self.close()
            return
        if self._in_head:
            if len(self._recorded) < _RECORDED_BYTES:
                self._recorded += data[: _RECORDED_BYTES - len(self._recorded)]
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answered(complete=False)
        except httptools.HttpParserError as exc:
            if self._waiter is None:
                self.close()
            else:
                self._broken(BadResponse(f"Bad status line ({_reason(exc)})"))
            return
        if self._in_head and self._head_bytes > _MAX_HEAD_BYTES and self._waiter is not None:
            # A head without end (one endless line, say): llhttp would keep it whole.
            self._head_too_large()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        if self._made:
            self._pool.lost(self)
        if self._waiter is not None:
            if exc is None:
                self._broken(ServerDisconnectedError("the receiver closed the connection"))
            else:
                self._broken(exc)

    # -- httptools callbacks -----------------------------------------------------------------

    # The status code counts as answered once its line is over: at the first header, or at
    # the end of the head. Before that, a bound or an error reads it from the recorded bytes.

    def on_status(self, status: bytes) -> None:
        self._code = self._parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        code = self._code
        if code is None or self._waiter is None or _interim(code):
            return
        self._status = code
        if len(self._headers) >= _MAX_HEADERS:
            self._head_too_large()
            return
        self._headers.append((name, value))

    def on_message_begin(self) -> None:
        if self._waiter is None:
            self.close()  # an answer nobody asked for, after the last one ended

    def on_headers_complete(self) -> None:
        code = self._code
        if code is None or self._waiter is None:
            return
        if _interim(code):
            self._code = None  # 100 Continue, 103 Early Hints: the final answer follows
            return
        self._status = code
        self._in_head = False
        if self._head_only or self._status == _SWITCHING_PROTOCOLS:
            self._answered(complete=False)
            return
        # The head is in: the body gets its own, short, allowance of time.
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._body_seconds, self._body_too_slow)

    def on_body(self, body: bytes) -> None:
        if self._status is None or self._waiter is None:
            return
        room = self._body_budget - len(self._body)
        if len(body) > room:
            self._body += body[:room]
            self._answered(complete=False)
            return
        self._body += body

    def on_message_complete(self) -> None:
        if self._status is None or self._waiter is None:
            return  # an interim answer ended, or a request already ended
        self._answered(complete=True)

    # -- endings ---------------------------------------------------------------------------

    def _answered(self, *, complete: bool) -> None:
        if self._waiter is None or self._status is None:
            return
        answer = Answer(self._status, self._headers, bytes(self._body), complete)
        reusable = complete and not self._closed and self._parser.should_keep_alive()
        self._idle_since = self._loop.time()
        self._finish(answer, None, reusable=reusable)

    def _broken(self, exc: BaseException) -> None:
        if self._waiter is None:
            return
        status = self._status
        if status is None and self._in_head:
            status = final_status(self._recorded)
        if status is not None:
            # The status line arrived before whatever went wrong after it: it is the answer.
            self._status = status
            self._finish(Answer(status, self._headers, bytes(self._body), False), None)
        else:
            self._finish(None, exc)
        self.close()

    def _head_too_large(self) -> None:
        self._broken(BadResponse("Bad status line (no end of the head in 64 KiB)"))

    def _timed_out(self) -> None:
        # Until the head is complete the attempt is a timeout, even past a status line: a
        # receiver that starts an answer and stalls has not answered.
        self._timer = None
        if self._waiter is not None:
            self._finish(None, ResponseTimeout("no answer within the attempt's timeout"))
            self.close()

    def _body_too_slow(self) -> None:
        self._timer = None
        self._answered(complete=False)

    def _finish(
        self, answer: Answer | None, exc: BaseException | None, *, reusable: bool = False
    ) -> None:
        waiter, done = self._waiter, self._done
        self._waiter = self._done = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if done is not None:
            # Back in the pool (or closed) before the caller resumes: the next request may
            # take the connection at once.
            done(self, reusable)
        if waiter is None or waiter.done():
            return
        if exc is not None:
            waiter.set_exception(exc)
        else:
            assert answer is not None
            waiter.set_result(answer)


def _interim(code: int) -> bool:
    return 100 <= code < 200 and code != _SWITCHING_PROTOCOLS


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:120]
