"""Quotas per source against a real ``timefuse serve``: one tenant over its quota gets 429s and
per-item rejections, and another tenant goes on as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.support.process import TimefuseProcess

Start = Callable[..., TimefuseProcess]

QUOTAS = {
    # One token a thousand seconds: only the burst passes while the test runs.
    "noisy": {"rate": 0.001, "burst": 3},
    "capped": {"max_pending": 5},
}


def job(source: str, n: int) -> dict[str, object]:
    return {
        "external_job_id": f"{source}-{n}",
        "source": source,
        "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": {"n": n},
    }


async def test_a_source_over_its_quota_is_refused_and_another_is_not(
    timefuse: Start, client: httpx.AsyncClient
) -> None:
    tf = timefuse({"TIMEFUSE_SOURCE_QUOTAS": json.dumps(QUOTAS)})
    events = f"{tf.base_url}/api/v1/events"

    noisy = [(await client.post(events, json=job("noisy", n))) for n in range(5)]
    quiet = [(await client.post(events, json=job("quiet", n))) for n in range(5)]
    batch = await client.post(
        f"{events}/batch", json={"events": [job("capped", n) for n in range(8)]}
    )
    quotas = await client.get(f"{events}/admin/quotas", params={"source": "capped"})
    metrics = (await client.get(f"{tf.base_url}/metrics")).text

    assert [r.status_code for r in noisy] == [202, 202, 202, 429, 429]
    assert noisy[3].json()["error_code"] == "QUOTA_RATE"
    assert 999 <= int(noisy[3].headers["retry-after"]) <= 1000
    assert [r.status_code for r in quiet] == [202] * 5
    assert batch.status_code == 202, batch.text
    data = batch.json()["data"]
    assert [entry["index"] for entry in data["ids"]] == [0, 1, 2, 3, 4]
    assert [(r["index"], r["code"]) for r in data["rejected_events"]] == [
        (n, "QUOTA_PENDING") for n in (5, 6, 7)
    ]
    (row,) = quotas.json()["data"]
    assert (row["max_pending"], row["pending"], row["rejected"]["pending"]) == (5, 5, 3)
    assert 'timefuse_quota_rejections_total{reason="rate",source="noisy"} 2.0' in metrics
