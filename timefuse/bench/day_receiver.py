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

import bisect
import itertools
import json
import math
import re
import sys
from array import array

from timefuse.bench.receiver import ReceiverProtocol, run

_MARK = re.compile(rb'\{"p":(\d+),"s":(\d+),"d":([0-9.]+)')
# Lateness histogram bucket edges, in seconds: what a report shows as a distribution.
HISTOGRAM_EDGES = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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


class _Protocol(ReceiverProtocol):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    def request(self, head: bytes, body: bytes, arrived: float) -> None:
        self._recorder.body(body, arrived)

    def respond(self, answers: int) -> None:
        self._recorder.count += answers
        super().respond(answers)


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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    recorder = Recorder()
    run(
        args[0] if args else "127.0.0.1",
        lambda: _Protocol(recorder),
        lambda line: answer(recorder, line),
    )


if __name__ == "__main__":
    main()
