"""What ``timefuse bench river`` measured: one row per system and size, medians over runs,
ratios against River with as many deliveries in flight, as a table or as JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TextIO

from timefuse.bench.report import Value

RAW_GO = "raw Go POST loop"
RAW_AIOHTTP = "raw aiohttp POST"
RIVER = "River"
TIMEFUSE = "timefuse"
TIMEFUSE_SERVE = "timefuse serve"


@dataclass
class Measurement:
    """One system draining one batch of deliveries.

    ``processes`` is 1 for River, the raw loops and ``timefuse serve``, and the number of
    ``timefuse dispatch`` processes otherwise. CPU and RSS are those of the processes that
    deliver (River's process, the dispatchers); ``db_cpu_per_1000_s`` is the PostgreSQL
    server's, when the bench runs it.
    """

    system: str
    processes: int
    in_flight: int
    run: int
    expected: int
    delivered: int
    duplicates: int = 0
    failed_attempts: int = 0
    drain_s: float = math.nan
    cpu_s: float | None = None
    db_cpu_s: float | None = None
    peak_rss_mb: float | None = None
    extra: dict[str, Value] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.system, self.processes, self.in_flight)

    @property
    def errors(self) -> int:
        return (self.expected - self.delivered) + self.duplicates + self.failed_attempts

    @property
    def drain_rate_per_s(self) -> float:
        return self.delivered / self.drain_s if self.drain_s > 0 else math.nan

    def per_1000(self, seconds: float | None) -> float | None:
        return None if seconds is None or not self.delivered else seconds * 1000 / self.delivered


@dataclass
class Row:
    """The medians of one system's runs, and its ratios against River."""

    system: str
    processes: int
    in_flight: int
    runs: int
    drain_rate_per_s: float
    cpu_per_1000_s: float | None
    db_cpu_per_1000_s: float | None
    peak_rss_mb: float | None
    errors: int
    rate_range: tuple[float, float]
    vs_river: dict[str, float | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.system == TIMEFUSE:
            return f"timefuse, {self.processes} dispatch"
        return self.system


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(known) if known else None


def summarise(measurements: Sequence[Measurement]) -> list[Row]:
    groups: dict[tuple[str, int, int], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault(m.key, []).append(m)
    rows = []
    for (system, processes, in_flight), runs in groups.items():
        rates = [m.drain_rate_per_s for m in runs]
        finite = [r for r in rates if math.isfinite(r)] or [math.nan]
        rows.append(
            Row(
                system=system,
                processes=processes,
                in_flight=in_flight,
                runs=len(runs),
                drain_rate_per_s=_median(rates) or math.nan,
                cpu_per_1000_s=_median([m.per_1000(m.cpu_s) for m in runs]),
                db_cpu_per_1000_s=_median([m.per_1000(m.db_cpu_s) for m in runs]),
                peak_rss_mb=_median([m.peak_rss_mb for m in runs]),
                errors=sum(m.errors for m in runs),
                rate_range=(min(finite), max(finite)),
            )
        )
    _compare_with_river(rows)
    return rows


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or not theirs or not math.isfinite(ours / theirs):
        return None
    return ours / theirs


def _compare_with_river(rows: list[Row]) -> None:
    river = {row.in_flight: row for row in rows if row.system == RIVER}
    for row in rows:
        peer = river.get(row.in_flight)
        if peer is None or row.system == RIVER:
            continue
        row.vs_river = {
            "drain_rate": _ratio(row.drain_rate_per_s, peer.drain_rate_per_s),
            "cpu_per_1000": _ratio(row.cpu_per_1000_s, peer.cpu_per_1000_s),
            "db_cpu_per_1000": _ratio(row.db_cpu_per_1000_s, peer.db_cpu_per_1000_s),
            "peak_rss": _ratio(row.peak_rss_mb, peer.peak_rss_mb),
        }


@dataclass
class RiverReport:
    parameters: dict[str, Value]
    target: dict[str, Value]
    measurements: list[Measurement]
    profiles: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        return summarise(self.measurements)

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.measurements)

    def to_dict(self) -> object:
        return _clean(
            {
                "scenario": "river",
                "parameters": self.parameters,
                "target": self.target,
                "summary": [{**asdict(r), "label": r.label} for r in self.rows],
                "measurements": [
                    {
                        **asdict(m),
                        "drain_rate_per_s": m.drain_rate_per_s,
                        "cpu_per_1000_s": m.per_1000(m.cpu_s),
                        "db_cpu_per_1000_s": m.per_1000(m.db_cpu_s),
                        "errors": m.errors,
                    }
                    for m in self.measurements
                ],
                "profiles": self.profiles,
                "errors": self.errors,
                "notes": self.notes,
            }
        )


def _clean(value: object) -> object:
    # JSON has no NaN: a figure that could not be measured is null.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(report: RiverReport, stream: TextIO) -> None:
    json.dump(report.to_dict(), stream, indent=2)
    stream.write("\n")


_HEADER = (
    "system",
    "in flight",
    "drain rate",
    "(range)",
    "CPU-s/1000",
    "PG CPU-s/1000",
    "peak RSS",
    "errors",
    "rate",
    "CPU",
    "PG CPU",
    "RSS",
)


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None or not math.isfinite(value) else pattern.format(value)


def _cells(row: Row) -> tuple[str, ...]:
    low, high = row.rate_range
    vs = row.vs_river
    return (
        row.label,
        f"{row.in_flight:,}",
        _number(row.drain_rate_per_s, "{:,.0f}/s"),
        f"{low:,.0f}-{high:,.0f}" if row.runs > 1 and math.isfinite(low) else "",
        _number(row.cpu_per_1000_s, "{:.3f}"),
        _number(row.db_cpu_per_1000_s, "{:.3f}"),
        _number(row.peak_rss_mb, "{:,.0f} MB"),
        f"{row.errors:,}",
        *(
            _number(vs.get(k), "{:.2f}")
            for k in ("drain_rate", "cpu_per_1000", "db_cpu_per_1000", "peak_rss")
        ),
    )


def write_table(report: RiverReport, stream: TextIO) -> None:
    p = report.parameters
    stream.write(
        f"timefuse bench river: {p['events']:,} deliveries due at once, {p['runs']} run(s), "
        "medians\n"
    )
    stream.write("  " + ", ".join(f"{k} {v}" for k, v in report.target.items()) + "\n")
    rows = [_HEADER, *(_cells(r) for r in report.rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    stream.write(f"  {'':<{sum(widths[:8]) + 2 * 8}}vs River with as many in flight\n")
    for n, cells in enumerate(rows):
        padded = [c.rjust(w) for c, w in zip(cells, widths, strict=True)]
        padded[0] = cells[0].ljust(widths[0])
        line = "  ".join(padded)
        stream.write(f"  {line}\n")
        if n == 0:
            stream.write(f"  {'-' * len(line)}\n")
    for name, split in report.profiles.items():
        stream.write(f"  profile of {name}: CPU per delivery by part\n")
        for part, figures in split.items():
            share, us = figures["share"], figures["us_per_delivery"]
            stream.write(f"    {part:<16} {share:6.1%}  {us:8.1f} µs\n")
    stream.write(f"  errors (missing + duplicates + failed attempts): {report.errors:,}\n")
    for note in report.notes:
        stream.write(f"  note: {note}\n")
