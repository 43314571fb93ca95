"""Run one ``timefuse bench`` scenario several times and print the median of every figure.

A shared or noisy machine moves single runs by tens of percent; the docs quote medians of at
least three runs, and the ratio to the baseline measured in the same run, which moves less.

    .venv/bin/python benchmarks/bench_medians.py --runs 3 herd -n 100000
    .venv/bin/python benchmarks/bench_medians.py --runs 3 --from-files /tmp/figs/herd-*.json

Every argument after the options goes to ``timefuse bench`` as it is (``--json`` is added).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_once(bench_args: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "timefuse", "bench", *bench_args, "--json"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if not result.stdout.strip():
        raise SystemExit(f"timefuse bench failed ({result.returncode}):\n{result.stderr}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def figures_of(report: dict[str, Any]) -> dict[str, Any]:
    rows = dict(report["results"])
    rows["baseline_rate_per_s"] = (report["baseline"] or {}).get("rate_per_s")
    rows["ratio"] = report["ratio"]
    rows["errors"] = report["errors"]
    return rows


def medians(reports: list[dict[str, Any]]) -> dict[str, float]:
    figures: dict[str, list[float]] = {}
    for report in reports:
        for key, value in figures_of(report).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                figures.setdefault(key, []).append(float(value))
    return {key: statistics.median(values) for key, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--from-files", nargs="+", type=Path, help="reports already made")
    args, bench_args = parser.parse_known_args()
    if args.from_files:
        reports = [json.loads(path.read_text()) for path in args.from_files]
    else:
        reports = [run_once(bench_args) for _ in range(args.runs)]
    print(f"{reports[0]['scenario']}: median of {len(reports)} runs, {reports[0]['parameters']}")
    for key, value in medians(reports).items():
        every = [figures_of(r).get(key) for r in reports]
        shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in every)
        print(f"  {key:<34} {value:>12.4g}   (runs: {shown})")


if __name__ == "__main__":
    main()
