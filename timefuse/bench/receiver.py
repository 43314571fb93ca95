"""The built-in webhook receiver: a bare asyncio protocol in its own process.

It answers every HTTP/1.1 request with 204 and records each request's ``webhook-id`` and
arrival time (``time.time()``), so the bench can compute lateness = arrival - scheduled_at. It
runs in a subprocess so it neither shares the bench client's event loop nor its core, and on
uvloop when installed. It is driven over its standard streams: it prints its port, then answers
``count`` with the number of requests so far and ``take`` with the records since the last
``take`` (one ``<webhook-id> <arrival>`` line each, then ``end``); it exits when its standard
input closes.

Given a delay (its second argument, in seconds), it holds each answer that long, like a receiver
doing work, and counts the requests it holds at once: ``peak`` answers the most held at one
moment since the last ``peak``. That is how ``timefuse bench chaos`` checks a destination's
concurrency cap across processes.

Only what timefuse's and aiohttp's clients send is parsed: bodies framed by Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import cast

from timefuse.entrypoints.loops import install_uvloop

_ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"
_ID_HEADER = b"\r\nwebhook-id:"
_LENGTH_HEADER = b"\r\ncontent-length:"


def _header(head: bytes, name: bytes) -> bytes | None:
    start = head.find(name)
    if start < 0:
        # Header names are case-insensitive; lower-casing only when the usual spelling misses
        # keeps the common path cheap.
        start = head.lower().find(name)
        if start < 0:
            return None
    start += len(name)
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.count = 0
        self.records: list[tuple[bytes, float]] = []
        self.delay = delay
        self.holding = 0
        self.peak = 0

    def take_peak(self) -> int:
        peak, self.peak = self.peak, self.holding
        return peak

    def take(self) -> list[tuple[bytes, float]]:
        records, self.records = self.records, []
        return records


class ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 requests framed by Content-Length, each answered 204.

    A subclass says what it records of a request in :meth:`request` and may hold its answers in
    :meth:`respond`; :mod:`timefuse.bench.day_receiver` is one too.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports don't subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        arrived = time.time()
        answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[: end + 2]
            length_text = _header(head, _LENGTH_HEADER)
            body_end = end + 4 + (int(length_text) if length_text else 0)
            if len(buffer) < body_end:
                break
            self.request(head, buffer[end + 4 : body_end], arrived)
            buffer = buffer[body_end:]
            answers += 1
        self._buffer = buffer
        if answers:
            self.respond(answers)

    def request(self, head: bytes, body: bytes, arrived: float) -> None:
        """Records one request: its head (up to the last header's CRLF), its body, its arrival.

        ``arrived`` is ``time.time()`` when the read that completed it began.
        """

    def respond(self, answers: int) -> None:
        """Answers the requests framed by one read."""
        if self._transport is not None:
            self._transport.write(_ANSWER * answers)


class _Protocol(ReceiverProtocol):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    def request(self, head: bytes, body: bytes, arrived: float) -> None:
        webhook_id = _header(head, _ID_HEADER)
        if webhook_id:
            self._recorder.records.append((webhook_id, arrived))

    def respond(self, answers: int) -> None:
        recorder = self._recorder
        recorder.count += answers
        if recorder.delay > 0:
            recorder.holding += answers
            recorder.peak = max(recorder.peak, recorder.holding)
            asyncio.get_running_loop().call_later(recorder.delay, self._answer_late, answers)
        else:
            super().respond(answers)

    def _answer_late(self, answers: int) -> None:
        self._recorder.holding -= answers
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_ANSWER * answers)


def answer(recorder: Recorder, line: bytes) -> str:
    """The answer to one control command (without its last newline)."""
    command = line.strip()
    if command == b"count":
        return str(recorder.count)
    if command == b"peak":
        return str(recorder.take_peak())
    if command == b"take":
        lines = [f"{i.decode(errors='replace')} {t:.6f}\n" for i, t in recorder.take()]
        return "".join(lines) + "end"
    return f"error unknown command {command!r}"


def run(
    host: str, protocol: Callable[[], asyncio.Protocol], answer: Callable[[bytes], str]
) -> None:
    """Serves ``protocol`` on a free port of ``host`` until the standard input closes.

    It prints the port first, then the answer to each line of the standard input, one a line.
    """
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, protocol, answer))


async def _serve(
    host: str, protocol: Callable[[], asyncio.Protocol], answer: Callable[[bytes], str]
) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host, 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        reader = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        out = sys.stdout
        while line := await reader.readline():
            out.write(answer(line) + "\n")
            out.flush()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    host = args[0] if args else "127.0.0.1"
    recorder = Recorder(float(args[1]) if len(args) > 1 else 0.0)
    run(host, lambda: _Protocol(recorder), lambda line: answer(recorder, line))


if __name__ == "__main__":
    main()
