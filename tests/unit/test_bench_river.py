"""The pure parts of ``timefuse bench river``: medians and ratios, the profile split, and the
Go sources shipped in the wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from timefuse.bench.pyspy import Recorder, cpu_split, split
from timefuse.bench.river_report import RIVER, TIMEFUSE, Measurement, summarise

ROOT = Path(__file__).resolve().parents[2]


def measurement(system: str, processes: int, in_flight: int, run: int, **kw: float) -> Measurement:
    return Measurement(
        system=system,
        processes=processes,
        in_flight=in_flight,
        run=run,
        expected=1000,
        delivered=1000,
        drain_s=kw.get("drain_s", 1.0),
        cpu_s=kw.get("cpu_s"),
        peak_rss_mb=kw.get("rss"),
    )


def test_rows_are_medians_of_runs_compared_with_river_of_as_many_in_flight() -> None:
    rows = summarise(
        [
            measurement(RIVER, 1, 100, 1, drain_s=0.1, cpu_s=0.05, rss=30),
            measurement(RIVER, 1, 100, 2, drain_s=0.2, cpu_s=0.07, rss=34),
            measurement(TIMEFUSE, 1, 100, 1, drain_s=0.5, cpu_s=0.12, rss=68),
            measurement(TIMEFUSE, 1, 100, 2, drain_s=0.25, cpu_s=0.12, rss=68),
            measurement(RIVER, 1, 200, 1, drain_s=0.125, cpu_s=0.05, rss=40),
            measurement(TIMEFUSE, 2, 200, 1, drain_s=0.25, cpu_s=0.2, rss=136),
        ]
    )
    by_key = {(r.system, r.in_flight): r for r in rows}

    river = by_key[(RIVER, 100)]
    assert river.drain_rate_per_s == pytest.approx((10_000 + 5_000) / 2)
    assert river.rate_range == (5_000, 10_000)
    assert river.cpu_per_1000_s == pytest.approx(0.06)
    assert river.vs_river == {}
    one = by_key[(TIMEFUSE, 100)]
    assert one.drain_rate_per_s == pytest.approx(3_000)
    assert one.vs_river["drain_rate"] == pytest.approx(3_000 / 7_500)
    assert one.vs_river["cpu_per_1000"] == pytest.approx(0.12 / 0.06)
    assert one.vs_river["peak_rss"] == pytest.approx(68 / 32)
    assert one.vs_river["db_cpu_per_1000"] is None  # not measured on either side
    two = by_key[(TIMEFUSE, 200)]
    assert two.label == "timefuse, 2 dispatch"
    assert two.vs_river["drain_rate"] == pytest.approx(4_000 / 8_000)


def test_a_missing_or_repeated_delivery_is_an_error() -> None:
    lost = measurement(TIMEFUSE, 1, 100, 1)
    lost.delivered = 998
    twice = measurement(RIVER, 1, 100, 1)
    twice.duplicates = 3

    assert lost.errors == 2
    assert twice.errors == 3
    assert summarise([lost, twice])[0].errors == 2


RUNNER = "<module> (timefuse/__main__.py:7);run (asyncio/runners.py:190)"


@pytest.mark.parametrize(
    ("frames", "part"),
    [
        # The call site decides for the driver ...
        ("Dispatcher._claim (timefuse/service/dispatcher.py:140);claim_due "
         "(timefuse/adapters/postgres/store.py:181);execute (psycopg/cursor_async.py:113)",
         "claim"),
        ("OutcomeWriter.flush (timefuse/service/writeback.py:68);execute "
         "(psycopg/cursor_async.py:113)", "outcome writes"),
        # ... and cross-cutting work wins over the call site.
        ("Dispatcher._claim (timefuse/service/dispatcher.py:140);decode (msgspec/json.py:1)",
         "JSON"),
        ("HttpDelivery._headers (timefuse/plugins/http.py:128);WebhookSigner.signature "
         "(timefuse/plugins/webhook_signing.py:43);new (hmac.py:167)", "signing"),
        ("HttpDelivery.deliver (timefuse/plugins/http.py:104);DestinationGuard.check "
         "(timefuse/plugins/http_guard.py:80)", "SSRF check"),
        ("Dispatcher._observe (timefuse/service/dispatcher.py:320);inc "
         "(prometheus_client/values.py:28)", "metrics"),
        ("Dispatcher._observe (timefuse/service/dispatcher.py:331);meth "
         "(structlog/_native.py:134)", "logging"),
        ("HttpDelivery.deliver (timefuse/plugins/http.py:110);ClientSession._request "
         "(aiohttp/client.py:819)", "HTTP client"),
        # The transport's callbacks run from the loop, with no delivery frame above them.
        ("Connection.data_received (timefuse/plugins/http_connection.py:170)", "HTTP client"),
        ("PooledTransport.send (timefuse/plugins/http_transport.py:201)", "HTTP client"),
        ("Dispatcher._launch (timefuse/service/dispatcher.py:215);create_task "
         "(asyncio/tasks.py:384)", "dispatcher"),
        ("", "event loop"),
    ],
)  # fmt: skip
def test_each_sample_goes_to_the_part_that_explains_it(frames: str, part: str) -> None:
    stack = f"{RUNNER};{frames}" if frames else RUNNER

    assert split([f"{stack} 3\n"]) == {part: 3}


def test_unrecognised_stacks_are_other_and_counts_add_up() -> None:
    lines = [f"{RUNNER};x (somewhere/else.py:1) 2\n", "mystery (lib.py:3) 5\n", "garbage\n"]

    assert split(lines) == {"other": 7}


def test_the_wheel_ships_every_go_source_of_the_peers() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["timefuse"]
    package = ROOT / "timefuse"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    peers = package / "bench" / "peers"
    sources = [p for p in peers.rglob("*") if p.is_file()]

    assert {p.relative_to(peers).as_posix() for p in sources} >= {
        "go.mod",
        "go.sum",
        "receiver/main.go",
        "rawpost/main.go",
        "riverbench/main.go",
    }
    assert set(sources) <= shipped


def test_the_measured_cpu_is_shared_out_by_samples(tmp_path: Path) -> None:
    recorder = Recorder("py-spy", 1, tmp_path / "dispatch-1", "timefuse dispatch")
    recorder.stacks.write_text(
        f"{RUNNER};claim_due (timefuse/adapters/postgres/store.py:181) 3\n"
        f"{RUNNER};ClientSession._request (aiohttp/client.py:819) 1\n"
    )

    split = cpu_split([recorder], deliveries=1000, cpu_s=0.4)

    assert split["claim"] == {"share": 0.75, "us_per_delivery": pytest.approx(300), "samples": 3}
    assert split["HTTP client"]["us_per_delivery"] == pytest.approx(100)
    assert list(split) == ["claim", "HTTP client"]  # the documented order, empty parts left out
