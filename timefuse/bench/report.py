"""What a scenario measured, printed as a table for people or as JSON for machines."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field, replace
from typing import TextIO

Value = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class Baseline:
    """The physical limit the scenario is compared with, measured in the same run."""

    name: str
    rate_per_s: float
    count: int
    seconds: float
    errors: int = 0
    detail: str = ""


@dataclass
class Report:
    """One scenario's figures.

    ``results`` keys end in their unit: ``_per_s`` (events/s), ``_s`` (seconds), ``_mb``;
    ``rate_key`` names the result compared with the baseline.
    """

    scenario: str
    target: dict[str, Value]
    parameters: dict[str, Value]
    results: dict[str, Value] = field(default_factory=dict)
    baseline: Baseline | None = None
    rate_key: str = "rate_per_s"
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    unit: str = "events/s"
    # With --runs N: each run's results and ratio; the report's own figures are their medians.
    runs: list[dict[str, Value]] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        rate = self.results.get(self.rate_key)
        if self.baseline is None or not isinstance(rate, int | float) or rate != rate:
            return None
        return rate / self.baseline.rate_per_s if self.baseline.rate_per_s > 0 else None

    def to_dict(self) -> dict[str, object]:
        baseline = None
        if self.baseline is not None:
            b = self.baseline
            baseline = {
                "name": b.name,
                "rate_per_s": _finite(b.rate_per_s),
                "count": b.count,
                "seconds": _finite(b.seconds),
                "errors": b.errors,
                "detail": b.detail,
            }
        return {
            "scenario": self.scenario,
            "target": self.target,
            "parameters": self.parameters,
            "results": {k: _finite(v) for k, v in self.results.items()},
            "rate_key": self.rate_key,
            "baseline": baseline,
            "ratio": _finite(self.ratio),
            "errors": self.errors,
            "notes": self.notes,
            "unit": self.unit,
            **({"runs": self.runs} if self.runs else {}),
        }


def combine(reports: list[Report]) -> Report:
    """One report of several runs of a scenario: the median of every number of theirs.

    Errors add up; each run's results and ratio stay in ``runs``.
    """
    if len(reports) == 1:
        return reports[0]
    first = reports[0]
    results: dict[str, Value] = {}
    for key, value in first.results.items():
        numbers = [_number(r.results.get(key)) for r in reports]
        known = [n for n in numbers if n is not None]
        if not known or _number(value) is None:
            results[key] = value
            continue
        middle = statistics.median(known)
        # Counts stay whole numbers where the median of the runs is one.
        results[key] = int(middle) if isinstance(value, int) and middle.is_integer() else middle
    baseline = None
    if first.baseline is not None:
        rates = [r.baseline.rate_per_s for r in reports if r.baseline is not None]
        seconds = [r.baseline.seconds for r in reports if r.baseline is not None]
        baseline = replace(
            first.baseline,
            rate_per_s=statistics.median(rates),
            seconds=statistics.median(seconds),
            errors=sum(r.baseline.errors for r in reports if r.baseline is not None),
        )
    notes = list(dict.fromkeys(note for r in reports for note in r.notes))
    return replace(
        first,
        parameters={**first.parameters, "runs": len(reports)},
        results=results,
        baseline=baseline,
        errors=sum(r.errors for r in reports),
        notes=notes,
        runs=[{**r.results, "ratio": r.ratio} for r in reports],
    )


def _number(value: Value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _finite(value: Value) -> Value:
    # JSON has no NaN: a figure that could not be measured is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: Report, stream: TextIO) -> None:
    json.dump(report.to_dict(), stream, indent=2)
    stream.write("\n")


def write_table(report: Report, stream: TextIO) -> None:
    rows = [(_label(k), _format(k, v, report.unit)) for k, v in report.results.items()]
    if report.baseline is not None:
        b = report.baseline
        rows.append((f"baseline: {b.name}", f"{b.rate_per_s:,.0f} {report.unit}"))
        if b.errors:
            rows.append(("baseline errors", f"{b.errors:,}"))
        ratio = report.ratio
        rows.append((f"ratio ({_label(report.rate_key)} / baseline)", _ratio(ratio)))
    if report.runs:
        ratios = [r for r in (_number(run.get("ratio")) for run in report.runs) if r is not None]
        if ratios:
            rows.append(("ratio, lowest to highest run", f"{min(ratios):.2f} to {max(ratios):.2f}"))
    rows.append(("errors", f"{report.errors:,}"))
    width = max(len(label) for label, _ in rows)
    params = ", ".join(f"{k} {v}" for k, v in report.parameters.items() if v is not None)
    target = ", ".join(f"{k} {v}" for k, v in report.target.items() if v is not None)
    stream.write(f"timefuse bench {report.scenario}: {params}\n  target: {target}\n")
    stream.write(f"  {'-' * width}  {'-' * 16}\n")
    for label, value in rows:
        stream.write(f"  {label:<{width}}  {value}\n")
    for note in report.notes:
        stream.write(f"  note: {note}\n")


def _ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def _label(key: str) -> str:
    for suffix, unit in (("_per_s", ""), ("_mb", ""), ("_us", ""), ("_s", "")):
        if key.endswith(suffix):
            key = key[: -len(suffix)] + unit
            break
    return key.replace("_", " ")


def _format(key: str, value: Value, unit: str = "events/s") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    if key.endswith("_per_s"):
        return f"{value:,.0f} {unit}"
    if key.endswith("_mb"):
        return f"{value:,.1f} MB"
    if key.endswith("_us"):
        return f"{value:,.0f} µs"
    if key.endswith("_s"):
        return f"{value * 1000:,.1f} ms" if abs(value) < 1 else f"{value:,.2f} s"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.3g}"
