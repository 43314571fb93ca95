"""Reports of several runs: the median of every figure, each run kept."""

from __future__ import annotations

import io

from timefuse.bench.report import Baseline, Report, combine, write_table


def run(rate: float, baseline: float, errors: int = 0) -> Report:
    return Report(
        "store",
        {"store": "sqlite"},
        {"events": 10},
        results={"rate_per_s": rate, "label": "x", "claims": 4},
        baseline=Baseline("raw", baseline, 10, 1.0),
        errors=errors,
        notes=["same note"],
    )


def test_one_run_is_reported_as_it_is() -> None:
    only = run(100.0, 200.0)
    assert combine([only]) is only


def test_several_runs_report_the_median_of_each_figure_and_keep_every_run() -> None:
    combined = combine([run(100.0, 200.0), run(300.0, 400.0, errors=1), run(200.0, 250.0)])

    assert combined.results == {"rate_per_s": 200.0, "label": "x", "claims": 4}
    assert combined.baseline is not None
    assert combined.baseline.rate_per_s == 250.0
    assert combined.ratio == 200.0 / 250.0
    assert combined.errors == 1
    assert combined.notes == ["same note"]
    assert combined.parameters["runs"] == 3
    assert [r["ratio"] for r in combined.runs] == [0.5, 0.75, 0.8]
    assert combined.to_dict()["runs"] == combined.runs


def test_the_table_shows_the_ratio_of_the_lowest_and_highest_run() -> None:
    out = io.StringIO()
    write_table(combine([run(100.0, 200.0), run(300.0, 400.0)]), out)
    assert "ratio, lowest to highest run" in out.getvalue()
    assert "0.50 to 0.75" in out.getvalue()
