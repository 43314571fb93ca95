"""``timefuse bench river`` as a user runs it: timefuse and River (Go) on one PostgreSQL.

Correctness only: every delivery of every system reaches the Go receiver exactly once. The
figures are the benchmark's business, not the suite's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.postgres_server import PostgresServer
from timefuse.bench.pgserver import PrivateServer, find_bindir

GO = shutil.which("go")
EVENTS = 300


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "timefuse", "bench", "river", *args],
        env=env if env is not None else {**os.environ, "TIMEFUSE_PLUGINS": ""},
        capture_output=True,
        text=True,
        # The first run downloads River's modules through the Go proxy and builds the peers.
        timeout=840,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
@pytest.mark.skipif(GO is None, reason="the river scenario builds its peers with Go")
def test_river_and_timefuse_deliver_every_event_exactly_once(postgres: PostgresServer) -> None:
    result = bench(
        "--short", "--events", str(EVENTS), "--dispatchers", "1,2", "--runs", "1", "--json",
        "--database-url", postgres.dsn,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    measured = {(m["system"], m["processes"], m["in_flight"]): m for m in report["measurements"]}
    assert set(measured) == {
        ("raw Go POST loop", 1, 100),
        ("raw aiohttp POST", 1, 100),
        ("River", 1, 100),
        ("timefuse", 1, 100),
        ("River", 1, 200),  # as many workers as two dispatchers have deliveries in flight
        ("timefuse", 2, 200),
    }
    for m in report["measurements"]:
        assert m["expected"] == EVENTS
        assert m["delivered"] == EVENTS, m
        assert m["duplicates"] == 0, m
        assert m["failed_attempts"] == 0, m
    for key in [("River", 1, 100), ("River", 1, 200)]:
        assert measured[key]["extra"]["completed"] == EVENTS
        assert measured[key]["extra"]["river_version"] == "v0.51.2"
    for key in [("timefuse", 1, 100), ("timefuse", 2, 200)]:
        assert measured[key]["extra"]["all_completed_after_s"] is not None
    assert report["errors"] == 0
    for row in report["summary"]:
        if row["system"] == "timefuse":
            assert row["vs_river"]["drain_rate"] > 0
    # The bench made its databases on the server and dropped them again.
    assert not _bench_databases(postgres)


def _bench_databases(postgres: PostgresServer) -> list[str]:
    with psycopg.connect(postgres.dsn) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'")
        return [row[0] for row in rows.fetchall()]


@pytest.mark.postgres
@pytest.mark.skipif(find_bindir() is None, reason="needs PostgreSQL's server binaries")
def test_the_private_postgresql_makes_databases_measures_its_cpu_and_leaves_nothing() -> None:
    server = PrivateServer.start()
    try:
        dsn = server.create_database("bench_check")
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 200000) g")
            conn.execute("SELECT sum(g::bigint * g) FROM t").fetchone()
        used = server.cpu_seconds()
        server.drop_database("bench_check")
        with psycopg.connect(server.dsn) as conn:
            names = conn.execute("SELECT datname FROM pg_database").fetchall()
    finally:
        server.close()

    assert used is not None
    assert used > 0
    assert ("bench_check",) not in names
    assert not server.root.exists()


def test_without_go_it_says_what_it_needs() -> None:
    # Only the interpreter's own directory on PATH: no `go`.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    if shutil.which("go", path=env["PATH"]):
        pytest.fail("the interpreter's directory holds a `go`; this test needs one without")

    result = bench("--short", env=env)

    assert result.returncode == 2
    assert "install Go 1.26 or later and put `go` on PATH" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "scenario", "message"),
    [
        (["--dispatchers", "0"], "river", "each count must be 1..32, got 0"),
        (["--dispatchers", "1,two"], "river", "must be a comma-separated list of whole numbers"),
        (["--runs", "0"], "river", "--runs: must be at least 1"),
        (["--database-url", "mysql://x"], "river", "must be a postgresql:// URL"),
        (["--url", "http://127.0.0.1:1"], "river", "river starts its own timefuse processes"),
        (["--dispatchers", "2"], "herd", "--dispatchers apply to the river scenario only"),
    ],
)
def test_bad_river_options_are_refused_with_a_clear_message(
    args: list[str], scenario: str, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "timefuse", "bench", scenario, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
