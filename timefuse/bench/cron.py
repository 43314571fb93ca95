"""``timefuse bench cron``: the cron libraries compared, on the DST rules and on speed.

Runs in-process; no deployment. Four ways to compute a schedule's next instant:

- ``cronsim`` and ``croniter``: each library as documented, given an aware start in the zone;
- ``timefuse``: the recurrence adapter (cronsim on wall-clock time + timefuse's DST rules);
- ``croniter_rules``: croniter on wall-clock time + the same rules, for a like-for-like speed.

Correctness: around each 2025 DST change of Europe/Berlin, America/New_York and
Australia/Lord_Howe, every expression's instants are compared with the rules applied by brute
force (each matching local time, moved minute by minute out of a gap, at its first
occurrence). Speed: one next-instant computation for each of N schedules (mixed expressions,
zones and start instants), the median of several passes, libraries interleaved.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim

from timefuse.adapters.cron import CronRecurrence
from timefuse.adapters.cron.wallclock import next_instant
from timefuse.bench.options import BenchOptions
from timefuse.bench.processes import BenchError
from timefuse.bench.report import Baseline, Report, Value

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
EXPRESSIONS = (
    "30 2 * * *",
    "30 1 * * *",
    "15 2 * * *",
    "45 1 * * *",
    "0 * * * *",
    "*/15 * * * *",
    "0 9 * * 1-5",
    "0 0 L * *",
    "30 2 L * *",
    "0 30 2 * * *",
    "*/20 * * * * *",
)
SPEED_ZONES = (*ZONES, "UTC", "Asia/Tokyo", "America/Sao_Paulo", "Asia/Kolkata")
PASSES = 5
LIBRARIES = ("cronsim", "croniter", "timefuse", "croniter_rules")

Next = Callable[[str, str, datetime], datetime | None]


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise BenchError(
            "the cron comparison needs croniter: pip install croniter (it is in timefuse[dev])"
        ) from None
    return croniter


def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def _six(expression: str) -> bool:
    return len(expression.split()) == 6


def libraries() -> dict[str, Next]:
    """Each way's next-instant function: (expression, zone, after) -> instant (UTC)."""
    croniter = _croniter()
    adapter = CronRecurrence()

    def cronsim_native(expr: str, zone: str, after: datetime) -> datetime | None:
        found = next(CronSim(expr, after.astimezone(_zone(zone))), None)
        return None if found is None else found.astimezone(UTC)

    def croniter_native(expr: str, zone: str, after: datetime) -> datetime | None:
        it = croniter(expr, after.astimezone(_zone(zone)), second_at_beginning=_six(expr))
        found: datetime = it.get_next(datetime)
        return found.astimezone(UTC)

    def croniter_rules(expr: str, zone: str, after: datetime) -> datetime | None:
        def naive(local: datetime) -> datetime | None:
            found: datetime = croniter(expr, local, second_at_beginning=_six(expr)).get_next(
                datetime
            )
            return found

        return next_instant(naive, _zone(zone), after)

    return {
        "cronsim": cronsim_native,
        "croniter": croniter_native,
        "timefuse": adapter.next_after,
        "croniter_rules": croniter_rules,
    }


def _changes(zone: str, year: int = 2025) -> list[datetime]:
    tz, step = _zone(zone), timedelta(minutes=15)
    at, end, found = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC), []
    while at < end:
        if (at + step).astimezone(tz).utcoffset() != at.astimezone(tz).utcoffset():
            found.append(at + step)
        at += step
    return found


def _window(expression: str) -> timedelta:
    if "L" in expression:
        return timedelta(days=40)
    return timedelta(hours=3) if _six(expression) else timedelta(hours=26)


def rules_by_brute_force(
    expression: str, zone: str, start: datetime, end: datetime
) -> list[datetime]:
    """The instants in ``(start, end]`` as the rules state them, without the adapter's code."""
    tz = _zone(zone)
    local = (start.astimezone(tz) - timedelta(hours=3)).replace(tzinfo=None)
    last = (end.astimezone(tz) + timedelta(hours=3)).replace(tzinfo=None)
    found: set[datetime] = set()
    for match in CronSim(expression, local):
        if match > last:
            break
        moved = match
        while moved.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != moved:
            moved += timedelta(minutes=1)
        instant = moved.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if start < instant <= end:
            found.add(instant)
    return sorted(found)


def _produced(
    next_of: Next, expr: str, zone: str, start: datetime, end: datetime
) -> list[datetime]:
    produced, after = [], start
    while (found := next_of(expr, zone, after)) is not None and found <= end:
        produced.append(found)
        after = found
    return produced


@dataclass
class Correctness:
    """Cases (zone x change x expression) checked; per way, the cases it got wrong, and per
    expression how many with a first example."""

    cases: int = 0
    wrong: dict[str, int] = field(default_factory=dict)
    by_expression: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)

    def notes(self) -> list[str]:
        changes = self.cases // len(EXPRESSIONS)
        return [
            f"{name} {expr!r} wrong at {count} of {changes} changes, e.g. {example}"
            for name, wrong in self.by_expression.items()
            for expr, (count, example) in wrong.items()
        ]


def check_dst(ways: dict[str, Next]) -> Correctness:
    result = Correctness(0, dict.fromkeys(ways, 0), {name: {} for name in ways})
    for zone in ZONES:
        for change in _changes(zone):
            for expr in EXPRESSIONS:
                start, end = change - _window(expr), change + _window(expr)
                expected = rules_by_brute_force(expr, zone, start, end)
                result.cases += 1
                for name, next_of in ways.items():
                    got = _produced(next_of, expr, zone, start, end)
                    if got == expected:
                        continue
                    result.wrong[name] += 1
                    count, example = result.by_expression[name].get(expr, (0, ""))
                    example = example or _describe(zone, expected, got)
                    result.by_expression[name][expr] = (count + 1, example)
    return result


def _describe(zone: str, expected: list[datetime], got: list[datetime]) -> str:
    tz = _zone(zone)

    def local(instants: set[datetime]) -> str:
        shown = sorted(instants)[:2]
        text = ", ".join(i.astimezone(tz).strftime("%m-%d %H:%M:%S%z") for i in shown)
        return text + (" ..." if len(instants) > 2 else "") if text else "-"

    missing, extra = set(expected) - set(got), set(got) - set(expected)
    return f"{zone}: missing {local(missing)}; extra {local(extra)}"


def schedules(count: int, seed: int = 2025) -> list[tuple[str, str, datetime]]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    return [
        (
            EXPRESSIONS[i % len(EXPRESSIONS)],
            SPEED_ZONES[i % len(SPEED_ZONES)],
            datetime.fromtimestamp(start + rng.uniform(0, 365 * 86400), UTC),
        )
        for i in range(count)
    ]


def measure_speed(ways: dict[str, Next], count: int) -> dict[str, float]:
    """Next-instant computations per second for each way: the median of ``PASSES`` passes
    over ``count`` schedules, the ways interleaved so that noise falls on all alike."""
    work = schedules(count)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(PASSES):
        for name, next_of in ways.items():
            started = time.perf_counter()
            for expr, zone, after in work:
                next_of(expr, zone, after)
            seconds[name].append(time.perf_counter() - started)
    return {name: count / statistics.median(times) for name, times in seconds.items()}


def run_cron(options: BenchOptions) -> Report:
    ways = libraries()
    report = Report(
        "cron",
        {"in_process": True, "zones": ", ".join(ZONES)},
        {"schedules": options.events, "passes": PASSES, "expressions": len(EXPRESSIONS)},
        unit="next instants/s",
    )
    correctness = check_dst(ways)
    rates = measure_speed(ways, options.events)
    results: dict[str, Value] = {"dst_cases": correctness.cases}
    for name in LIBRARIES:
        results[f"dst_wrong_{name}"] = correctness.wrong[name]
    for name in LIBRARIES:
        results[f"next_{name}_per_s"] = rates[name]
    results["cronsim_vs_croniter"] = rates["cronsim"] / rates["croniter"]
    results["with_rules_cronsim_vs_croniter"] = rates["timefuse"] / rates["croniter_rules"]
    report.results = results
    report.rate_key = "next_timefuse_per_s"
    count = options.events
    report.baseline = Baseline("cronsim alone", rates["cronsim"], count, count / rates["cronsim"])
    report.errors = correctness.wrong["timefuse"]
    report.notes.extend(correctness.notes())
    return report
