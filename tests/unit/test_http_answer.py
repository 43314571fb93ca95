"""Reading the final status line out of the first bytes of a receiver's answer."""

from __future__ import annotations

import pytest

from timefuse.plugins.http_answer import final_status


@pytest.mark.parametrize(
    ("received", "status"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200),
        (b"HTTP/1.1 204\r\n", 204),
        (b"HTTP/1.0 503 Busy\r\nRetry-After: 5\r\n", 503),
        (b"HTTP/1.1 200 OK\n", 200),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n", 201),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\n", 404),
        (b"HTTP/1.1 101 Switching Protocols\r\n", 101),
        # Not (yet) a complete final status line.
        (b"", None),
        (b"HTTP/1.1 20", None),
        (b"HTTP/1.1 200 OK", None),
        (b"HTTP/1.1 100 Continue\r\n\r\n", None),
        (b"HTTP/1.1 100 Continue\r\nX: y\r\n", None),
        (b"HTTP/1.1 42 Odd\r\n", None),
        (b"HTTP/1.1 abc OK\r\n", None),
        (b"HTTP/2 200\r\n", None),
        (b"SSH-2.0-OpenSSH\r\n", None),
        (b" HTTP/1.1 200 OK\r\n", None),
    ],
)
def test_the_final_status_line_is_found_only_when_complete(
    received: bytes, status: int | None
) -> None:
    assert final_status(received) == status
