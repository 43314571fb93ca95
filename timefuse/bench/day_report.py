"""The figures of ``timefuse bench day``, and its report as a table or as JSON."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from timefuse.bench.day_load import Phase, Sample, Submitted
from timefuse.bench.options import DayOptions
from timefuse.bench.stats import percentile

# A knee step's Kafka lag may hold this many seconds of its offered load: the ingest consumer
# writes in batches, and a batch waits up to its timeout to fill.
LAG_SECONDS = 1.0
SECTIONS = ("parameters", "target", "knee", "run", "store")


@dataclass
class DayReport:
    parameters: dict[str, Any]
    target: dict[str, Any]
    knee: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    errors: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = _finite(
            {
                "scenario": "day",
                "parameters": self.parameters,
                "target": self.target,
                "knee": self.knee,
                "run": self.run,
                "store": self.store,
                "errors": self.errors,
                "notes": self.notes,
            }
        )
        return found


def _finite(value: Any) -> Any:
    # JSON has no NaN: a figure that could not be measured is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- stage rates from the samples ---------------------------------------------------------------


def stage_rate(samples: Sequence[Sample], read: Callable[[Sample], int | None]) -> dict[str, Any]:
    """A counter's growth over a phase: how much, at what mean rate while it grew, its peak.

    The mean runs from the sample before the first growth to the first sample at the final
    value, so idle time before and after the stage worked is left out.
    """
    points = [(s.at, value) for s in samples if (value := read(s)) is not None]
    if len(points) < 2:
        return {"count": None, "rate_per_s": None, "peak_per_s": None}
    start_value, final = points[0][1], points[-1][1]
    started = ended = None
    peak = 0.0
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if v1 > v0:
            if started is None:
                started = t0
            peak = max(peak, (v1 - v0) / max(t1 - t0, 1e-9))
        if ended is None and v1 >= final and final > start_value:
            ended = t1
    count = final - start_value
    seconds = (ended - started) if started is not None and ended is not None else 0.0
    return {
        "count": count,
        "rate_per_s": count / seconds if seconds > 0 else None,
        "peak_per_s": peak or None,
        "active_s": seconds,
    }


def _stages(
    samples: Sequence[Sample], submitted: Submitted, summary: dict[str, Any]
) -> dict[str, Any]:
    """Each stage's count, mean rate and peak second. The persisted rate comes from the
    once-a-second samples; the accepted and delivered rates from exact times (the first
    submission to the last 202; the first arrival to the last)."""
    accepted = stage_rate(samples, lambda s: s.accepted)
    if submitted.first_sent is not None and submitted.last_accepted is not None:
        seconds = submitted.last_accepted - submitted.first_sent
        accepted["rate_per_s"] = submitted.accepted / seconds if seconds > 0 else None
        accepted["active_s"] = seconds
    delivered = stage_rate(samples, lambda s: s.delivered)
    first, last = summary.get("first_arrival"), summary.get("last_arrival")
    if first is not None and last is not None and last > first:
        delivered["rate_per_s"] = int(summary["distinct"]) / (last - first)
        delivered["active_s"] = last - first
    return {
        "accepted": accepted,
        "persisted": stage_rate(samples, lambda s: s.persisted),
        "delivered": delivered,
    }


def _cpu_by_role(
    samples: Sequence[Sample], pids: dict[int, str], start: float, end: float
) -> list[dict[str, Any]]:
    """Each role's CPU share of one core between ``start`` and ``end`` (sampled), busiest first."""
    inside = [s for s in samples if start <= s.at <= end] or list(samples)
    first, last = inside[0], inside[-1]
    seconds = max(last.at - first.at, 1e-9)
    roles: dict[str, float] = {}
    for pid, role in pids.items():
        used = last.cpu.get(pid, 0.0) - first.cpu.get(pid, 0.0)
        roles[role] = roles.get(role, 0.0) + used
    shares = [
        {"role": role, "cpu_percent": used / seconds * 100 if len(inside) > 1 else None}
        for role, used in roles.items()
    ]
    return sorted(shares, key=lambda r: -(r["cpu_percent"] or 0.0))


def _lateness(summary: dict[str, Any]) -> dict[str, Any]:
    late = summary.get("lateness") or {}
    return {f"{key}_s": late.get(key) for key in ("p50", "p90", "p99", "p999", "max", "mean")}


# -- a knee step --------------------------------------------------------------------------------


def step_record(
    phase: Phase,
    submitted: Submitted,
    samples: Sequence[Sample],
    summary: dict[str, Any],
    pids: dict[int, str],
    day: DayOptions,
) -> dict[str, Any]:
    """One knee step's figures, and whether every stage kept up with it."""
    lags = sorted(submitted.lags)
    submitting_from, submitting_to = phase.first_due - phase.lead, phase.last_due - phase.lead
    window = [
        s.lag
        for s in samples
        if s.lag is not None and submitting_from <= s.at <= submitting_to + 1.0
    ]
    lag_end = min(window[-2:]) if window else None
    late = _lateness(summary)
    delivered, duplicates = int(summary["distinct"]), int(summary["duplicates"])
    accept_ok = not submitted.failed and (percentile(lags, 99) if lags else 0.0) <= phase.lead / 2
    ingest_ok = lag_end is None or lag_end <= phase.rate * LAG_SECONDS
    p99 = late["p99_s"]
    delivery_ok = (
        delivered >= submitted.accepted
        and duplicates == 0
        and p99 is not None
        and p99 <= day.knee_lateness
    )
    verdicts = (("accept", accept_ok), ("ingest", ingest_ok), ("delivery", delivery_ok))
    failed_on = next((name for name, ok in verdicts if not ok), None)
    stages = _stages(samples, submitted, summary)
    last_arrival = summary.get("last_arrival")
    drained = last_arrival - phase.first_due if last_arrival is not None else None
    return {
        "offered_per_s": phase.rate,
        "events": phase.events,
        "accepted": submitted.accepted,
        "delivered": delivered,
        "duplicates": duplicates,
        "submit_lag_p99_s": percentile(lags, 99) if lags else None,
        "kafka_lag_max": max(window) if window else None,
        "kafka_lag_end": lag_end,
        "lateness_p50_s": late["p50_s"],
        "lateness_p99_s": p99,
        "lateness_max_s": late["max_s"],
        "accepted_rate_per_s": stages["accepted"]["rate_per_s"],
        "persisted_rate_per_s": stages["persisted"]["rate_per_s"],
        # Delivered over the time from the first due to the last arrival: what the step offered
        # when delivery kept up, less when it fell behind.
        "delivered_rate_per_s": delivered / drained if drained else None,
        "processes": _cpu_by_role(samples, pids, submitting_from, phase.last_due),
        "passed": failed_on is None,
        "failed_on": failed_on,
    }


# -- the run ------------------------------------------------------------------------------------


def phase_figures(
    phase: Phase, submitted: Submitted, samples: Sequence[Sample], summary: dict[str, Any]
) -> dict[str, Any]:
    delivered, duplicates = int(summary["distinct"]), int(summary["duplicates"])
    lags = sorted(submitted.lags)
    kafka = [s.lag for s in samples if s.lag is not None]
    end = samples[-1].at
    began = submitted.first_sent or samples[0].at
    return {
        "offered_per_s": phase.rate,
        "events": phase.events,
        "accepted": submitted.accepted,
        "unaccepted": phase.events - submitted.accepted,
        "submit_retries": submitted.retries,
        "delivered": delivered,
        "duplicates": duplicates,
        "missing": max(0, submitted.accepted - delivered),
        "window_s": phase.seconds,
        "wall_s": end - began,
        "stages": _stages(samples, submitted, summary),
        "lateness": _lateness(summary),
        "lateness_histogram": summary.get("histogram"),
        "kafka_lag": {
            "max": max(kafka) if kafka else None,
            "mean": sum(kafka) / len(kafka) if kafka else None,
            "final": kafka[-1] if kafka else None,
        },
        "submit_lag": {
            "p50_s": percentile(lags, 50) if lags else None,
            "p99_s": percentile(lags, 99) if lags else None,
            "max_s": lags[-1] if lags else None,
        },
        "samples": _series(samples),
    }


def _series(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """The run second by second: each stage's counter, the lag, each process's CPU and RSS."""
    rows = []
    start = samples[0].at
    for before, sample in itertools.pairwise(samples):
        seconds = max(sample.at - before.at, 1e-9)
        rows.append(
            {
                "t_s": round(sample.at - start, 3),
                "accepted": sample.accepted,
                "persisted": sample.persisted,
                "delivered": sample.delivered,
                "kafka_lag": sample.lag,
                "cpu_percent": {
                    str(pid): round((sample.cpu[pid] - before.cpu.get(pid, 0.0)) / seconds * 100, 1)
                    for pid in sample.cpu
                },
                "rss_mb": {str(pid): round(mb, 1) for pid, mb in sample.rss_mb.items()},
            }
        )
    return rows


def process_figures(
    samples: Sequence[Sample], pids: dict[int, str], delivered: int
) -> list[dict[str, Any]]:
    """Per process over the run: CPU seconds, share of a core, CPU per 1,000 events, memory."""
    from timefuse.bench.procfs import peak_rss_mb

    first, last = samples[0], samples[-1]
    seconds = max(last.at - first.at, 1e-9)
    found = []
    for pid, role in pids.items():
        used = last.cpu.get(pid, 0.0) - first.cpu.get(pid, 0.0)
        resident = [s.rss_mb[pid] for s in samples if pid in s.rss_mb]
        found.append(
            {
                "role": role,
                "pid": pid,
                "cpu_s": used,
                "cpu_percent": used / seconds * 100,
                "cpu_s_per_1000_events": used / delivered * 1000 if delivered else None,
                "rss_max_mb": max(resident) if resident else None,
                "peak_rss_mb": peak_rss_mb(pid),
            }
        )
    return found


# -- output -------------------------------------------------------------------------------------


def write_json(report: DayReport, stream: TextIO) -> None:
    json.dump(report.to_dict(), stream, indent=2)
    stream.write("\n")


def write_table(report: DayReport, stream: TextIO) -> None:
    p, r = report.parameters, report.run
    w = stream.write
    w(
        f"timefuse bench day: {p['events']:,} events at {p['rate_per_s']:,.0f}/s; "
        f"{p['api_processes']} api, {p['ingest_processes']} ingest, "
        f"{p['dispatch_processes']} dispatch; {p['clients']} clients, batches of {p['batch']}, "
        f"{p['partitions']} partitions\n"
    )
    t = report.target
    w(f"  PostgreSQL {t['postgresql']}; Kafka {t['kafka']}; {t['cpus']} CPUs; load ")
    w(f"{t['load_before'][0]} before, {t.get('load_during', {}).get('mean')} mean during\n")
    _write_knee(report.knee, w)
    w("  the run:\n")
    for stage in ("accepted", "persisted", "delivered"):
        s = r["stages"][stage]
        w(f"    {stage:<10} {_n(s['count'])} events, {_rate(s['rate_per_s'])} mean, ")
        w(f"{_rate(s['peak_per_s'])} peak second\n")
    late = r["lateness"]
    w(
        f"    lateness   p50 {_s(late['p50_s'])}, p99 {_s(late['p99_s'])}, "
        f"p99.9 {_s(late['p999_s'])}, max {_s(late['max_s'])}\n"
    )
    w(
        f"    missing {r['missing']:,}, duplicates {r['duplicates']:,}, failed attempts "
        f"{_n(r['failed_attempts'])}, unaccepted {r['unaccepted']:,}\n"
    )
    lag = r["kafka_lag"]
    w(f"    Kafka lag  max {_n(lag['max'])}, mean {_n(lag['mean'])}, final {_n(lag['final'])}\n")
    w(f"    time       {r['wall_s']:,.1f} s wall for a {r['window_s']:,.1f} s window\n")
    w("  processes (over the run):\n")
    for proc in r["processes"]:
        w(
            f"    {proc['role']:<10} pid {proc['pid']:<8} CPU {proc['cpu_s']:8.1f} s "
            f"({proc['cpu_percent']:5.1f} % of a core, {_f(proc['cpu_s_per_1000_events'])} s per "
            f"1,000 events), peak RSS {_f(proc['peak_rss_mb'])} MB\n"
        )
    _write_store(report.store, w)
    for note in report.notes:
        w(f"  note: {note}\n")
    w(f"  errors: {report.errors:,}\n")


def _write_knee(knee: dict[str, Any], w: Callable[[str], object]) -> None:
    if not knee.get("steps"):
        w(f"  knee: {knee.get('limit')}\n")
        return
    w(f"  knee: {_rate(knee['rate_per_s'])} sustained; first limit: {knee['limit']}\n")
    for step in knee["steps"]:
        verdict = "pass" if step["passed"] else f"FAIL ({step['failed_on']})"
        w(
            f"    {step['offered_per_s']:>8,.0f}/s offered: delivered "
            f"{_rate(step['delivered_rate_per_s'])}, p99 {_s(step['lateness_p99_s'])}, "
            f"lag {_n(step['kafka_lag_end'])}: {verdict}\n"
        )


def _write_store(store: dict[str, Any], w: Callable[[str], object]) -> None:
    before, after, kept = store["before"], store["after_run"], store["after_retention"]
    retention = store["retention"]
    wal = after["wal_position_mb"] - before["wal_position_mb"]
    deleted = (
        f"failed: {retention['error']}"
        if "error" in retention
        else f"{retention['deleted']:,} events deleted in {retention['seconds']:.1f} s"
    )
    w(
        f"  PostgreSQL: database {before['database_mb']:,.0f} MB before, "
        f"{after['database_mb']:,.0f} MB after the run, {kept['database_mb']:,.0f} MB after "
        f"retention ({deleted}); WAL written {wal:,.0f} MB\n"
    )
    disk = store.get("disk", {})
    w(
        f"  disk: PostgreSQL data dir {_f(disk.get('postgresql_data_dir_mb'))} MB, Kafka data "
        f"dir {_f(disk.get('kafka_data_dir_mb'))} MB\n"
    )


def _n(value: Any) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _f(value: Any) -> str:
    return "n/a" if value is None else f"{value:,.3g}"


def _rate(value: Any) -> str:
    return "n/a" if value is None else f"{value:,.0f}/s"


def _s(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:,.0f} ms" if abs(value) < 1 else f"{value:,.2f} s"
