"""``timefuse bench chaos`` as a user runs it: a short campaign on the private PostgreSQL with a
dispatcher killed and the database crashed, nothing acknowledged missing at the end.

The long campaign and its figures are the benchmark's business; this checks that the faults
really happen and that the accounting adds up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from timefuse.bench.pgserver import find_bindir

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.timeout(600)
@pytest.mark.skipif(find_bindir() is None, reason="needs PostgreSQL's server binaries")
def test_a_short_campaign_kills_and_crashes_and_every_acknowledged_event_arrives(
    tmp_path: Path,
) -> None:
    report_path = tmp_path / "chaos.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "timefuse",
            "bench",
            "chaos",
            "--faults",
            "2",
            "--interval",
            "3",
            "--rate",
            "40",
            "--dispatchers",
            "2",
            "--kinds",
            "kill-dispatch,restart-db-immediate",
            "--seed",
            "3",
            "--drain",
            "120",
            "--json",
            str(report_path),
        ],
        env={**os.environ, "TIMEFUSE_PLUGINS": ""},
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    windows = report["windows"]
    assert [w["fault"] for w in windows[:1]] == ["none"]
    assert {w["fault"] for w in windows[1:]} == {"kill-dispatch", "restart-db-immediate"}
    for window in windows:
        assert window["acknowledged"] > 0
        assert window["missing"] == 0
        assert window["delivered"] == window["acknowledged"]
        assert window["offered"] == window["acknowledged"] + window["refused"]
        assert window["capped_peak"] <= 20
    assert "total" in result.stdout
