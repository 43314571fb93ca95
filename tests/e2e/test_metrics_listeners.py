"""/metrics as the README describes it, on every listener: behind keys with the metrics role
when TIMEFUSE_METRICS_AUTH is on (the dispatch and ingest processes' own ports too); and the
series it exports move."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.support.process import TimefuseProcess, free_port
from timefuse.entrypoints.auth import Role, hash_key, key_entry, new_key

pytestmark = pytest.mark.slow

Start = Callable[..., TimefuseProcess]


def _wait_listening(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers on {url}")


@pytest.mark.parametrize("command", ["dispatch", pytest.param("ingest", marks=pytest.mark.kafka)])
def test_the_metrics_port_of_dispatch_and_ingest_needs_a_key_with_the_metrics_role(
    processes: Start, tmp_path: Path, request: pytest.FixtureRequest, command: str
) -> None:
    everyone, billing = new_key(), new_key()
    keys = tmp_path / "keys.toml"
    keys.write_text(
        key_entry("monitoring", hash_key(everyone), None, [Role.METRICS])
        + "\n"
        + key_entry("billing", hash_key(billing), ["billing"], [Role.READ])
    )
    port = free_port()
    env = {
        "TIMEFUSE_API_KEYS_FILE": str(keys),
        "TIMEFUSE_METRICS_AUTH": "true",
        "TIMEFUSE_METRICS_PORT": str(port),
    }
    if command == "ingest":
        # A topic and group of its own: the session's broker is shared by every test.
        suffix = new_key()[-12:].lower()
        env |= {
            "KAFKA_BOOTSTRAP_SERVERS": request.getfixturevalue("kafka").bootstrap_servers,
            "TIMEFUSE_KAFKA_INGEST_TOPIC": f"metrics-listener-{suffix}",
            "TIMEFUSE_KAFKA_CONSUMER_GROUP": f"metrics-listener-{suffix}",
        }
    processes(env, command=command)
    base = f"http://127.0.0.1:{port}"
    _wait_listening(f"{base}/health/live")

    def get(path: str, key: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.get(f"{base}{path}", headers=headers, timeout=5.0)

    assert get("/health/live").status_code == 200
    assert get("/metrics").status_code == 401
    assert get("/metrics", billing).status_code == 403
    allowed = get("/metrics", everyone)
    assert allowed.status_code == 200
    assert "timefuse_" in allowed.text


async def test_an_event_with_a_delivery_window_is_counted_in_the_spread_offsets(
    processes: Start,
) -> None:
    tf = processes({})
    body = {
        "external_job_id": "spread-1",
        "source": "spread",
        "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "delivery_type": "http",
        "destination": "https://spread.example/hook",
        "payload": {},
        "delivery_window_seconds": 600,
    }
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(f"{tf.base_url}/api/v1/events", json=body)).status_code == 202
        metrics = (await client.get(f"{tf.base_url}/metrics")).text
    counts = [
        line
        for line in metrics.splitlines()
        if line.startswith("timefuse_spread_offset_seconds_count")
    ]
    assert counts == ["timefuse_spread_offset_seconds_count 1.0"], counts


async def test_a_metrics_key_scoped_to_a_source_sees_only_its_quota_rejections(
    processes: Start, tmp_path: Path
) -> None:
    submitter, monitoring, quiet_team = new_key(), new_key(), new_key()
    keys = tmp_path / "keys.toml"
    keys.write_text(
        key_entry("submitter", hash_key(submitter), None, [Role.SUBMIT])
        + "\n"
        + key_entry("monitoring", hash_key(monitoring), None, [Role.METRICS])
        + "\n"
        + key_entry("quiet", hash_key(quiet_team), ["quiet"], [Role.METRICS])
    )
    # One event a thousand seconds for each: the second submission is refused.
    quotas = {"noisy": {"rate": 0.001, "burst": 1}, "quiet": {"rate": 0.001, "burst": 1}}
    tf = processes(
        {"TIMEFUSE_API_KEYS_FILE": str(keys), "TIMEFUSE_SOURCE_QUOTAS": json.dumps(quotas)}
    )

    def job(source: str, n: int) -> dict[str, object]:
        return {
            "external_job_id": f"{source}-{n}",
            "source": source,
            "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "delivery_type": "http",
            "destination": "https://example.com/hook",
            "payload": {},
        }

    def bearer(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    async with httpx.AsyncClient(timeout=10) as client:
        events = f"{tf.base_url}/api/v1/events"
        answers = [
            (await client.post(events, json=job(source, n), headers=bearer(submitter))).status_code
            for source in ("noisy", "quiet")
            for n in range(2)
        ]
        everything = (await client.get(f"{tf.base_url}/metrics", headers=bearer(monitoring))).text
        scoped = (await client.get(f"{tf.base_url}/metrics", headers=bearer(quiet_team))).text

    def rejections(text: str) -> list[str]:
        return [
            line for line in text.splitlines() if line.startswith("timefuse_quota_rejections_total")
        ]

    assert answers == [202, 429, 202, 429]
    assert rejections(everything) == [
        'timefuse_quota_rejections_total{reason="rate",source="noisy"} 1.0',
        'timefuse_quota_rejections_total{reason="rate",source="quiet"} 1.0',
    ]
    assert rejections(scoped) == [
        'timefuse_quota_rejections_total{reason="rate",source="quiet"} 1.0'
    ]
