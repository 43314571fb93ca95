"""The bounded HTTP protocol driven in-process: bytes in, bytes and closes out, no sockets."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from timefuse.entrypoints.http_connections import Connections, ServerLimits
from timefuse.entrypoints.http_protocol import BoundedHttpProtocol, bounded_protocol


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.eof = False
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name in ("sockname", "peername") else default


async def answer_without_reading(scope: Any, receive: Any, send: Any) -> None:
    status = 413 if scope["method"] == "POST" else 200
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


LIMITS = ServerLimits(
    max_connections=10,
    header_timeout=0.05,
    max_header_bytes=4096,
    body_timeout=0.05,
    keepalive_seconds=5,
)


@pytest.fixture
def protocol_class() -> type[BoundedHttpProtocol]:
    return bounded_protocol(LIMITS, Connections(LIMITS.max_connections))


def open_connection(cls: type[BoundedHttpProtocol]) -> tuple[BoundedHttpProtocol, Transport]:
    config = uvicorn.Config(answer_without_reading, http=cls, ws="none", log_config=None)
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_cyclic_gc")
async def test_a_closed_connection_is_freed_at_once_not_by_the_cyclic_collector(
    protocol_class: type[BoundedHttpProtocol],
) -> None:
    protocol, transport = open_connection(protocol_class)
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await settle()
    assert transport.closed
    protocol.connection_lost(None)
    await settle()

    freed = weakref.ref(protocol)
    del protocol

    assert freed() is None


async def test_headers_over_the_limit_in_one_read_get_431_then_a_half_close(
    protocol_class: type[BoundedHttpProtocol],
) -> None:
    protocol, transport = open_connection(protocol_class)

    protocol.data_received(b"GET /x HTTP/1.1\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n")
    answered = transport.written
    protocol.data_received(b"more of whatever the client was sending")

    assert answered.startswith(b"HTTP/1.1 431 ")
    assert transport.written == answered  # the rest is dropped, not parsed or answered
    assert transport.eof
    assert not transport.closed  # until the client stops, or the body timeout passes
    await asyncio.sleep(LIMITS.body_timeout * 3)
    assert transport.closed


async def test_an_early_answer_to_a_connection_close_request_lingers_until_the_body_timeout(
    protocol_class: type[BoundedHttpProtocol],
) -> None:
    protocol, transport = open_connection(protocol_class)

    protocol.data_received(
        b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\ncontent-length: 100000\r\n\r\n"
        + b"x" * 1000
    )
    await settle()

    assert transport.written.startswith(b"HTTP/1.1 413 ")
    assert transport.eof
    assert not transport.closed
    await asyncio.sleep(LIMITS.body_timeout * 3)
    assert transport.closed


async def test_a_connection_close_request_read_whole_is_closed_at_once(
    protocol_class: type[BoundedHttpProtocol],
) -> None:
    protocol, transport = open_connection(protocol_class)

    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await settle()

    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert transport.closed
    assert not transport.eof


async def test_a_keep_alive_request_that_stalls_mid_headers_gets_408(
    protocol_class: type[BoundedHttpProtocol],
) -> None:
    protocol, transport = open_connection(protocol_class)
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    await settle()
    first = transport.written

    protocol.data_received(b"GET /y HTTP/1.1\r\nHo")
    await asyncio.sleep(LIMITS.header_timeout * 3)

    assert first.startswith(b"HTTP/1.1 200 ")
    assert transport.written[len(first) :].startswith(b"HTTP/1.1 408 ")
    assert transport.eof
