"""``timefuse bench day`` as a user runs it, at a tiny size: REST → Kafka → PostgreSQL →
dispatch → HTTP with one process of each role, on the suite's broker and server.

Correctness only: every accepted event delivered once, the report complete, the run's database
and topics removed. The figures are the benchmark's business, not the suite's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from tests.support.kafka_broker import KafkaBroker
from tests.support.postgres_server import PostgresServer

EVENTS = 2000
_BACKENDS = ("DATABASE_URL", "DB_HOST", "KAFKA_BOOTSTRAP_SERVERS", "TIMEFUSE_CONCURRENCY")


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _BACKENDS}
    env["TIMEFUSE_PLUGINS"] = ""
    return subprocess.run(
        [sys.executable, "-m", "timefuse", "bench", "day", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.timeout(450)
def test_a_tiny_day_delivers_every_event_once_and_reports_every_stage(
    postgres: PostgresServer, kafka: KafkaBroker
) -> None:
    result = bench(
        "--short", "-n", str(EVENTS), "--json", "--knee-start", "200", "--knee-max", "400",
        "--database-url", postgres.dsn, "--kafka", kafka.bootstrap_servers,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout)
    assert set(report) == {
        "scenario", "parameters", "target", "knee", "run", "store", "errors", "notes",
    }  # fmt: skip
    run = report["run"]
    assert run["events"] == EVENTS
    assert run["accepted"] == EVENTS
    assert run["delivered"] == EVENTS
    assert run["missing"] == 0
    assert run["duplicates"] == 0
    assert run["failed_attempts"] == 0
    assert report["errors"] == 0
    for stage in ("accepted", "persisted", "delivered"):
        assert run["stages"][stage]["count"] == EVENTS, stage
    late = run["lateness"]
    assert late["p50_s"] <= late["p99_s"] <= late["max_s"]
    assert sum(run["lateness_histogram"]["counts"]) == EVENTS
    assert {p["role"] for p in run["processes"]} == {
        "api", "ingest", "dispatch", "receiver", "bench",
    }  # fmt: skip
    for process in run["processes"]:
        assert process["cpu_s"] >= 0
    # The knee: rising steps from 200/s, the run at 80 % of the highest one passed.
    knee = report["knee"]
    assert knee["steps"][0]["offered_per_s"] == 200
    for step in knee["steps"]:
        assert step["delivered"] == step["accepted"] == step["events"], step
    assert report["parameters"]["rate_per_s"] == pytest.approx(knee["rate_per_s"] * 0.8)
    # Everything the run stored (knee steps included) is past retention at the end.
    stored = EVENTS + sum(step["events"] for step in knee["steps"])
    assert report["store"]["retention"]["deleted"] == stored
    assert report["target"]["kafka"].endswith("(given)")
    assert not _left_behind(postgres, kafka)


def _left_behind(postgres: PostgresServer, kafka: KafkaBroker) -> list[str]:
    from confluent_kafka.admin import AdminClient

    with psycopg.connect(postgres.dsn) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_day_%'")
        databases = [row[0] for row in rows]
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(timeout=10)
    return databases + [name for name in topics.topics if name.startswith("timefuse-day-")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs", "2"], "day starts its own timefuse processes and runs once; drop --runs"),
        (["--batch", "5000"], "--batch: must be 1..1000"),
    ],
)
def test_bad_day_options_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    result = bench(*args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
