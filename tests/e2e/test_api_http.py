"""The REST API over real HTTP (uvicorn in a ``timefuse serve`` process), as a client sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.support.process import TimefuseProcess

Start = Callable[..., TimefuseProcess]
JSON = {"content-type": "application/json"}


def event(**extra: object) -> dict[str, object]:
    return {
        "external_job_id": "e2e-api",
        "source": "e2e",
        "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": {"n": 1, "tags": ["a", "b"]},
        **extra,
    }


async def test_a_client_submits_reads_and_cancels_an_event(
    timefuse: Start, client: httpx.AsyncClient
) -> None:
    base = f"{timefuse().base_url}/api/v1/events"

    submitted = await client.post(base, json=event())
    event_id = submitted.json()["data"]["id"]
    fetched = await client.get(f"{base}/{event_id}")
    by_external = await client.get(f"{base}/external/e2e-api/all")
    cancelled = await client.delete(f"{base}/{event_id}")
    again = await client.delete(f"{base}/{event_id}")
    statistics = await client.get(f"{base}/statistics")

    assert submitted.status_code == 202
    assert fetched.json()["data"]["payload"] == {"n": 1, "tags": ["a", "b"]}
    assert [e["id"] for e in by_external.json()["data"]] == [event_id]
    assert cancelled.json()["data"]["status"] == "CANCELLED"
    assert again.status_code == 409
    assert statistics.json()["data"]["CANCELLED"] == 1


async def test_bad_requests_get_their_4xx_and_the_server_stays_well(
    timefuse: Start, client: httpx.AsyncClient
) -> None:
    tf = timefuse({"TIMEFUSE_MAX_BODY_BYTES": "2000"})
    base = f"{tf.base_url}/api/v1/events"

    async def chunked_body() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 100

    answers = {
        "too large": await client.post(base, json=event(payload={"x": "y" * 5000})),
        "too large, chunked": await client.post(base, content=chunked_body(), headers=JSON),
        "not json": await client.post(base, content=b"{}", headers={"content-type": "text/plain"}),
        "malformed": await client.post(base, content=b'{"source": ', headers=JSON),
        "invalid": await client.post(base, json=event(max_retries=11)),
        "no route": await client.get(f"{tf.base_url}/actuator/prometheus"),
        "wrong method": await client.put(f"{base}/statistics"),
    }
    health = await client.get(f"{tf.base_url}/health/ready")
    metrics = await client.get(f"{tf.base_url}/metrics")

    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {
        "too large": 413,
        "too large, chunked": 413,
        "not json": 415,
        "malformed": 400,
        "invalid": 422,
        "no route": 404,
        "wrong method": 405,
    }
    assert all(response.json()["success"] is False for response in answers.values())
    assert health.status_code == 200
    assert "timefuse_events_rejected_total 1.0" in metrics.text
    assert "unhandled error" not in tf.log()
