"""The status a receiver answered with, even when aiohttp can't read the rest of its answer.

A receiver's answer is its status line. aiohttp reads a response whole before handing it over,
so a ``200 OK`` followed by a header too long, too many headers, bad chunking in the same
packet or a reset would surface only as an error, and a delivery the receiver accepted would
be retried and end dead-lettered. The connection protocol here keeps the first bytes of each
answer; when aiohttp gives up on it, the error carries the status line's code, which
:func:`answered_status` finds again.
"""

from __future__ import annotations

import contextlib
import functools
import re
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler

__all__ = ["AnswerRecordingConnector", "answered_status", "final_status"]

# Enough for a status line, or a few interim (1xx) answers and the final status line.
_RECORDED_BYTES = 16 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?:[ \t][^\r\n]*)?\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_SWITCHING_PROTOCOLS = 101
_STATUS_ATTRIBUTE = "timefuse_answered_status"


def final_status(received: bytes) -> int | None:
    """The code of the final (not 1xx) status line at the start of ``received``, if complete."""
    position = 0
    while True:
        match = _STATUS_LINE.match(received, position)
        if match is None:
            return None
        status = int(match.group(1))
        if not 100 <= status < 200 or status == _SWITCHING_PROTOCOLS:
            return status
        # An interim answer (100 Continue, 103 Early Hints): the final one follows its head.
        end = _HEAD_END.search(received, match.end() - 2)
        if end is None:
            return None
        position = end.end()


def answered_status(exc: BaseException) -> int | None:
    """The status line's code recorded on ``exc`` or the errors it was raised from."""
    seen: BaseException | None = exc
    for _ in range(5):  # aiohttp wraps a protocol error at most a couple of times
        if seen is None:
            return None
        status = getattr(seen, _STATUS_ATTRIBUTE, None)
        if isinstance(status, int):
            return status
        seen = seen.__cause__ or seen.__context__
    return None


class _AnswerRecordingHandler(ResponseHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._received = bytearray()

    def set_response_params(self, **kwargs: Any) -> None:
        # Called once per request on the connection, before its answer can arrive.
        self._received = bytearray()
        super().set_response_params(**kwargs)

    def data_received(self, data: bytes) -> None:
        room = _RECORDED_BYTES - len(self._received)
        if room > 0:
            self._received += data[:room]
        super().data_received(data)

    def set_exception(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
        status = final_status(bytes(self._received))
        if status is not None:
            with contextlib.suppress(AttributeError):  # an exception type with __slots__
                setattr(exc, _STATUS_ATTRIBUTE, status)
        super().set_exception(exc, *args, **kwargs)


class AnswerRecordingConnector(aiohttp.TCPConnector):
    """A :class:`aiohttp.TCPConnector` whose connections record each answer's status line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # aiohttp builds each connection's protocol with this factory. It is a private
        # attribute (the same since aiohttp 3.0); the hostile-receiver tests fail if it goes.
        factory = functools.partial(_AnswerRecordingHandler, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", factory)
