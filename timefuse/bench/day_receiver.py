"""The webhook receiver of ``timefuse bench day``: lateness and duplicates from the bodies.

A day is millions of events: the bench keeps no table of their ids. Each payload it submits
starts with its phase, its sequence number in the phase and its due time
(``{"p":3,"s":12345,"d":1712345678.123456,...}``), and timefuse delivers a payload byte for byte,
so the receiver alone knows, per phase, which sequence numbers arrived (a bit each), how many
arrived more than once, and each first arrival's lateness (arrival - due).

Like :mod:`timefuse.bench.receiver` it is a bare asyncio protocol in a process of its own (on
uvloop when installed), answers every request 204, and is driven over its standard streams, one
command a line, one answer a line (JSON unless said):

- ``count``: requests answered so far (a number);
- ``stats P``: ``{"distinct": n, "duplicates": n}`` of phase P;
- ``summary P``: the same with the lateness of phase P's first arrivals, in seconds
  (``p50``, ``p90``, ``p99``, ``p999``, ``max``, ``min``, ``mean``), a histogram, and the
  times of the phase's first and last (first) arrival;
- ``missing P N LIMIT``: up to LIMIT sequence numbers below N that never arrived;
- ``unmatched``: requests whose body did not carry a phase and sequence number.

It exits when its standard input closes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import math
import re
import sys
import time
from array import array
from typing import cast

from timefuse.entrypoints.loops import install_uvloop

_ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"
_LENGTH_HEADER = b"\r\ncontent-length:"
_MARK = re.compile(rb'\{"p":(\d+),"s":(\d+),"d":([0-9.]+)')
# Lateness histogram bucket edges, in seconds: what a report shows as a distribution.
HISTOGRAM_EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _length(head: bytes) -> int:
    start = head.find(_LENGTH_HEADER)
    if start < 0:
        start = head.lower().find(_LENGTH_HEADER)
        if start < 0:
            return 0
    start += len(_LENGTH_HEADER)
    end = head.find(b"\r\n", start)
    return int(head[start : end if end >= 0 else len(head)].strip() or b"0")


class PhaseRecord:
    """What arrived of one phase: a bit per sequence number, duplicates, first latenesses."""

    __slots__ = ("duplicates", "first", "last", "lateness", "seen")

    def __init__(self) -> None:
        self.seen = bytearray()
        self.duplicates = 0
        self.lateness = array("d")
        self.first: float | None = None
        self.last: float | None = None

    def arrived(self, seq: int, lateness: float, at: float) -> None:
        byte, bit = seq >> 3, 1 << (seq & 7)
        seen = self.seen
        if byte >= len(seen):
            seen.extend(bytes(max(byte + 1 - len(seen), len(seen))))
        if seen[byte] & bit:
            self.duplicates += 1
            return
        seen[byte] |= bit
        self.lateness.append(lateness)
        if self.first is None:
            self.first = at
        self.last = at

    @property
    def distinct(self) -> int:
        return len(self.lateness)

    def missing(self, expected: int, limit: int) -> list[int]:
        seen = self.seen
        found: list[int] = []
        for seq in range(expected):
            byte = seq >> 3
            if byte >= len(seen) or not seen[byte] & (1 << (seq & 7)):
                found.append(seq)
                if len(found) >= limit:
                    break
        return found

    def summary(self) -> dict[str, object]:
        ordered = sorted(self.lateness)
        count = len(ordered)

        def rank(q: float) -> float | None:
            if not count:
                return None
            return ordered[min(count, max(1, math.ceil(q * count))) - 1]

        # Sorted already: each bucket's bounds are two binary searches.
        bounds = [0, *(bisect.bisect_left(ordered, edge) for edge in HISTOGRAM_EDGES), count]
        histogram = [high - low for low, high in itertools.pairwise(bounds)]
        return {
            "distinct": count,
            "duplicates": self.duplicates,
            "first_arrival": self.first,
            "last_arrival": self.last,
            "lateness": {
                "p50": rank(0.50),
                "p90": rank(0.90),
                "p99": rank(0.99),
                "p999": rank(0.999),
                "max": ordered[-1] if count else None,
                "min": ordered[0] if count else None,
                "mean": sum(ordered) / count if count else None,
            },
            "histogram": {
                "edges_s": list(HISTOGRAM_EDGES),
                "counts": histogram,
            },
        }


class Recorder:
    def __init__(self) -> None:
        self.count = 0
        self.unmatched = 0
        self.phases: dict[int, PhaseRecord] = {}

    def phase(self, number: int) -> PhaseRecord:
        record = self.phases.get(number)
        if record is None:
            record = self.phases[number] = PhaseRecord()
        return record

    def body(self, body: bytes, arrived: float) -> None:
        match = _MARK.match(body)
        if match is None:
            self.unmatched += 1
            return
        phase, seq, due = match.groups()
        self.phase(int(phase)).arrived(int(seq), arrived - float(due), arrived)


class _Protocol(asyncio.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports don't subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        arrived = time.time()
        answers = 0
        recorder = self._recorder
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            length = _length(buffer[: end + 2])
            body_end = end + 4 + length
            if len(buffer) < body_end:
                break
            recorder.body(buffer[end + 4 : body_end], arrived)
            buffer = buffer[body_end:]
            answers += 1
        self._buffer = buffer
        if answers:
            recorder.count += answers
            if self._transport is not None:
                self._transport.write(_ANSWER * answers)


def answer(recorder: Recorder, line: bytes) -> str:
    """The answer to one control command (without its newline)."""
    words = line.decode(errors="replace").split()
    command, args = (words[0], words[1:]) if words else ("", [])
    try:
        if command == "count":
            return str(recorder.count)
        if command == "unmatched":
            return str(recorder.unmatched)
        if command == "stats" and len(args) == 1:
            record = recorder.phase(int(args[0]))
            return json.dumps({"distinct": record.distinct, "duplicates": record.duplicates})
        if command == "summary" and len(args) == 1:
            return json.dumps(recorder.phase(int(args[0])).summary())
        if command == "missing" and len(args) == 3:
            phase, expected, limit = map(int, args)
            return json.dumps(recorder.phase(phase).missing(expected, limit))
    except ValueError:
        pass
    return json.dumps({"error": f"unknown command {line.strip()!r}"})


async def _control(recorder: Recorder) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    while line := await reader.readline():
        out.write(answer(recorder, line) + "\n")
        out.flush()


async def serve(host: str) -> None:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(recorder), host, 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        await _control(recorder)


class DayReceiverProcess:
    """The bench's handle on this receiver, run as a child process."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "timefuse.bench.day_receiver",
            self.host,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**26,
        )
        line = await self._readline(timeout=30.0)
        try:
            self.port = int(line)
        except ValueError:
            raise ReceiverFailed(f"the receiver did not start: {line!r}") from None

    async def ask(self, command: str, timeout: float = 60.0) -> str:
        async with self._lock:
            if self._proc is None or self._proc.stdin is None:
                raise ReceiverFailed("the receiver is not running")
            self._proc.stdin.write(command.encode() + b"\n")
            return await self._readline(timeout)

    async def stats(self, phase: int) -> tuple[int, int]:
        """Distinct sequence numbers arrived in ``phase``, and the arrivals beyond the first."""
        answer = json.loads(await self.ask(f"stats {phase}"))
        return int(answer["distinct"]), int(answer["duplicates"])

    async def summary(self, phase: int) -> dict[str, object]:
        result: dict[str, object] = json.loads(await self.ask(f"summary {phase}", timeout=300.0))
        return result

    async def missing(self, phase: int, expected: int, limit: int) -> list[int]:
        found: list[int] = json.loads(await self.ask(f"missing {phase} {expected} {limit}"))
        return found

    async def unmatched(self) -> int:
        return int(await self.ask("unmatched"))

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _readline(self, timeout: float) -> str:
        if self._proc is None or self._proc.stdout is None:
            raise ReceiverFailed("the receiver is not running")
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout)
        if not line:
            raise ReceiverFailed("the receiver exited unexpectedly")
        return line.decode().strip()


class ReceiverFailed(RuntimeError):
    """The receiver did not start or stopped answering."""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    host = args[0] if args else "127.0.0.1"
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host))


if __name__ == "__main__":
    main()
