"""The pure parts of ``timefuse bench day``: the submitted bodies, what the receiver makes of
them, the stage rates and knee verdicts, and the options."""

from __future__ import annotations

import json

import pytest

from timefuse.bench.day_load import Phase, Sample, Submitted, batch_body
from timefuse.bench.day_receiver import PhaseRecord, Recorder, answer
from timefuse.bench.day_report import DayReport, stage_rate, step_record
from timefuse.bench.options import BenchUsageError, DayOptions, build_parser, resolve

PHASE = Phase(number=3, rate=100.0, events=250, first_due=1_700_000_000.0, lead=5.0, batch=100)


def sample(at: float, delivered: int, *, lag: int | None = 0, accepted: int = 0) -> Sample:
    return Sample(at, accepted, None, delivered, 0, lag, {}, {})


# -- bodies and the receiver ---------------------------------------------------------------------


def test_a_batch_body_is_the_api_s_batch_with_due_times_spread_at_the_phase_rate() -> None:
    body = json.loads(batch_body("run1", PHASE, 100, 103, "http://127.0.0.1:9/hook"))

    events = body["events"]
    assert [e["external_job_id"] for e in events] == ["run1-3-100", "run1-3-101", "run1-3-102"]
    assert {e["delivery_type"] for e in events} == {"http"}
    assert {e["destination"] for e in events} == {"http://127.0.0.1:9/hook"}
    # 100 events a second: event 100 is due 1 s after the first, each next one 10 ms later.
    assert events[0]["scheduled_at"] == "2023-11-14T22:13:21+00:00"
    assert events[1]["scheduled_at"] == "2023-11-14T22:13:21.010000+00:00"
    assert [e["payload"]["s"] for e in events] == [100, 101, 102]
    assert events[2]["payload"]["d"] == pytest.approx(1_700_000_001.02)


def test_the_receiver_reads_phase_sequence_and_lateness_from_a_delivered_payload() -> None:
    body = json.loads(batch_body("run1", PHASE, 7, 8, "http://x/hook"))
    payload = json.dumps(body["events"][0]["payload"], separators=(",", ":")).encode()
    recorder = Recorder()

    recorder.body(payload, arrived=PHASE.due(7) + 0.25)
    recorder.body(b'{"other":1}', arrived=0.0)

    record = recorder.phases[3]
    assert record.distinct == 1
    assert record.lateness[0] == pytest.approx(0.25)
    assert recorder.unmatched == 1


def test_a_second_arrival_of_a_sequence_number_is_a_duplicate_not_a_new_event() -> None:
    record = PhaseRecord()
    record.arrived(5, 0.1, 10.0)
    record.arrived(5, 0.9, 11.0)
    record.arrived(17, 0.2, 12.0)

    assert record.distinct == 2
    assert record.duplicates == 1
    assert sorted(record.lateness) == [0.1, 0.2]  # the first arrival's lateness only
    assert (record.first, record.last) == (10.0, 12.0)


def test_missing_lists_the_sequence_numbers_that_never_arrived_up_to_a_limit() -> None:
    record = PhaseRecord()
    for seq in (0, 1, 3, 9):
        record.arrived(seq, 0.0, 1.0)

    assert record.missing(12, limit=100) == [2, 4, 5, 6, 7, 8, 10, 11]
    assert record.missing(12, limit=3) == [2, 4, 5]
    assert record.missing(2, limit=3) == []


def test_the_summary_gives_nearest_rank_percentiles_and_a_histogram_of_every_arrival() -> None:
    record = PhaseRecord()
    for seq in range(100):
        record.arrived(seq, (seq + 1) / 100, float(seq))  # 0.01 s .. 1.00 s

    summary = record.summary()
    lateness = summary["lateness"]
    assert isinstance(lateness, dict)
    assert lateness["p50"] == pytest.approx(0.50)
    assert lateness["p99"] == pytest.approx(0.99)
    assert lateness["max"] == pytest.approx(1.00)
    assert lateness["min"] == pytest.approx(0.01)
    histogram = summary["histogram"]
    assert isinstance(histogram, dict)
    assert sum(histogram["counts"]) == 100
    assert len(histogram["counts"]) == len(histogram["edges_s"]) + 1


def test_control_commands_answer_and_a_bad_one_says_what_it_was() -> None:
    recorder = Recorder()
    recorder.phase(1).arrived(0, 0.5, 1.0)
    recorder.phase(1).arrived(0, 0.5, 1.0)

    assert json.loads(answer(recorder, b"stats 1\n")) == {"distinct": 1, "duplicates": 1}
    assert json.loads(answer(recorder, b"missing 1 3 10\n")) == [1, 2]
    assert "unknown command" in json.loads(answer(recorder, b"stats x\n"))["error"]
    assert "unknown command" in json.loads(answer(recorder, b"launch\n"))["error"]


# -- figures -------------------------------------------------------------------------------------


def test_a_stage_rate_counts_only_the_seconds_in_which_it_grew() -> None:
    samples = [sample(0, 0), sample(1, 0), sample(2, 100), sample(3, 300), sample(4, 300)]

    rate = stage_rate(samples, lambda s: s.delivered)

    assert rate["count"] == 300
    assert rate["active_s"] == 2.0  # from t=1 (last before growth) to t=3 (final value)
    assert rate["rate_per_s"] == 150.0
    assert rate["peak_per_s"] == 200.0


def test_a_stage_never_read_has_no_rate() -> None:
    rate = stage_rate([sample(0, 0), sample(1, 5)], lambda s: s.persisted)
    assert rate == {"count": None, "rate_per_s": None, "peak_per_s": None}


def _summary(distinct: int, p99: float | None, duplicates: int = 0) -> dict[str, object]:
    return {
        "distinct": distinct,
        "duplicates": duplicates,
        "first_arrival": PHASE.first_due,
        "last_arrival": PHASE.last_due + 0.1,
        "lateness": {"p50": p99, "p99": p99, "max": p99},
    }


def _step(
    summary: dict[str, object], *, lag: int = 0, submit_lag: float = 0.1, failed: bool = False
) -> dict[str, object]:
    submitted = Submitted(accepted=PHASE.events, lags=[submit_lag] * 3)
    if failed:
        submitted.failed.append((0, 100))
    start = PHASE.first_due - PHASE.lead
    samples = [sample(start + t, 0, lag=lag) for t in range(4)]
    return step_record(PHASE, submitted, samples, summary, {}, DayOptions(knee_lateness=1.0))


def test_a_knee_step_passes_when_every_stage_kept_up() -> None:
    step = _step(_summary(PHASE.events, 0.2))
    assert step["passed"] is True
    assert step["failed_on"] is None


@pytest.mark.parametrize(
    ("kwargs", "stage"),
    [
        ({"failed": True}, "accept"),  # batches the API never accepted
        ({"submit_lag": 3.0}, "accept"),  # answered later than half the lead
        ({"lag": 1000}, "ingest"),  # 10 s of the offered 100/s still in Kafka
        ({"summary": _summary(PHASE.events - 1, 0.2)}, "delivery"),  # one missing
        ({"summary": _summary(PHASE.events, 0.2, duplicates=1)}, "delivery"),
        ({"summary": _summary(PHASE.events, 1.5)}, "delivery"),  # p99 above the bound
    ],
)
def test_a_knee_step_fails_on_the_first_stage_that_fell_behind(
    kwargs: dict[str, object], stage: str
) -> None:
    summary = kwargs.pop("summary", _summary(PHASE.events, 0.2))
    assert isinstance(summary, dict)
    step = _step(summary, **kwargs)  # type: ignore[arg-type]
    assert step["passed"] is False
    assert step["failed_on"] == stage


def test_a_figure_that_could_not_be_measured_is_null_in_the_json() -> None:
    report = DayReport(parameters={"x": float("nan")}, target={"y": [float("inf"), 1.0]})
    found = report.to_dict()
    assert found["parameters"] == {"x": None}
    assert found["target"] == {"y": [None, 1.0]}
    assert set(found) >= {"parameters", "target", "knee", "run", "store", "errors", "notes"}


def test_a_retention_that_failed_is_said_in_the_table_with_the_run_s_store_figures() -> None:
    from timefuse.bench.day_report import _write_store

    figures = {"database_mb": 9.0, "wal_position_mb": 100.0}
    store = {
        "before": figures,
        "after_run": {"database_mb": 2058.0, "wal_position_mb": 5763.0},
        "after_retention": {"database_mb": 2058.0, "wal_position_mb": 5763.0},
        "retention": {"error": "PostgreSQL: deadlock detected"},
    }
    lines: list[str] = []
    _write_store(store, lines.append)
    assert "2,058 MB after the run" in lines[0]
    assert "retention (failed: PostgreSQL: deadlock detected)" in lines[0]
    assert "WAL written 5,663 MB" in lines[0]


# -- options -------------------------------------------------------------------------------------


def options(*args: str) -> DayOptions:
    resolved = resolve(build_parser().parse_args(["day", *args]))
    assert resolved.day is not None
    return resolved.day


def test_day_defaults_and_flags() -> None:
    full = options()
    assert (full.api, full.ingest, full.dispatch, full.batch, full.rate) == (1, 1, 1, 100, None)
    given = options("--api", "2", "--dispatch", "3", "--batch", "500", "--rate", "4200")
    assert (given.api, given.dispatch, given.batch, given.rate) == (2, 3, 500, 4200.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["day", "--knee-start", "500", "--knee-max", "100"], "--knee-start must not be above"),
        (["day", "--url", "http://x"], "drop --url"),
        (["day", "--database-url", "postgresql://x/y", "--durability", "off"], "--durability"),
        (["herd", "--dispatch", "2"], "--dispatch apply to the day scenario only"),
        (["herd", "--rate", "10"], "--rate applies to the steady and day scenarios only"),
    ],
)
def test_day_options_that_clash_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(BenchUsageError, match=message):
        resolve(build_parser().parse_args(args))


@pytest.mark.parametrize(
    "args",
    [
        ["day", "--batch", "1001"],
        ["day", "--api", "0"],
        ["day", "--api", "33"],
        ["day", "--knee-factor", "1"],
    ],
)
def test_day_numbers_out_of_range_are_refused_by_the_parser(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(args)
