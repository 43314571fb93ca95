"""The status a receiver answered with, read from the first bytes of its answer.

A receiver's answer is its status line. When the response parser refuses what follows it (a
head too long, bare LF line ends, bad chunking in the same packet) or the connection breaks,
the status line read here from the recorded first bytes is still the answer, so a delivery
the receiver accepted is not retried and dead-lettered.
"""

from __future__ import annotations

import re

__all__ = ["final_status"]

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?:[ \t][^\r\n]*)?\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_SWITCHING_PROTOCOLS = 101


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
