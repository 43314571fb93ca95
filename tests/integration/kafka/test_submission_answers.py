"""With Kafka, a submission's answer is as true as without: one id per event, however often it
is sent (a retry after a 503 included), and readiness that doesn't pull the API while Kafka
absorbs a database outage. Real processes, broker and store."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.integration.kafka.conftest import at, eventually
from tests.integration.kafka.test_processes import stored_ids
from tests.support.kafka_broker import KafkaBroker
from tests.support.postgres_server import PostgresServer
from tests.support.process import TimefuseProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

Start = Callable[..., TimefuseProcess]


def event(name: str) -> dict[str, object]:
    return {
        "external_job_id": f"{name}-{uuid.uuid4().hex[:8]}",
        "source": "answers",
        "scheduled_at": at(3600),
        "delivery_type": "http",
        "destination": "https://answers.example/hook",
        "payload": {"name": name},
    }


async def test_a_resubmission_gets_the_id_the_event_has_in_the_store(
    processes: Start, kafka_env: dict[str, str], store_url: str
) -> None:
    tf = processes(kafka_env)
    body = event("again")
    async with httpx.AsyncClient(timeout=15) as client:
        first = await client.post(f"{tf.base_url}/api/v1/events", json=body)
        assert first.status_code == 202, first.text
        data = first.json()["data"]
        assert (data["duplicate"], data["stored"]) == (False, False)
        event_id = data["id"]
        # Sent again before the consumer stored it: the same id, never a second event.
        second = await client.post(f"{tf.base_url}/api/v1/events", json=body)
        assert second.json()["data"]["id"] == event_id

        async def readable() -> bool:
            return (await client.get(f"{tf.base_url}/api/v1/events/{event_id}")).status_code == 200

        await eventually(readable, timeout=30, interval=0.2)
        third = await client.post(f"{tf.base_url}/api/v1/events", json=body)
        assert third.status_code == 202
        assert third.json()["data"] == {
            "id": event_id,
            "status": "PENDING",
            "duplicate": True,
            "stored": True,
        }

        twin = event("twin")
        batch = await client.post(
            f"{tf.base_url}/api/v1/events/batch", json={"events": [twin, twin]}
        )
        assert batch.status_code == 202, batch.text
        ids = {item["id"] for item in batch.json()["data"]["ids"]}
        assert len(ids) == 1
    await eventually(lambda: ids <= set(stored_ids(store_url)), timeout=30)
    stored = stored_ids(store_url)
    assert sorted(stored) == sorted({event_id, *ids})


async def test_a_submission_sent_again_after_a_503_is_stored_once(
    processes: Start, kafka_env: dict[str, str], kafka: KafkaBroker, store_url: str
) -> None:
    if not kafka.restartable:
        pytest.skip("the session's broker can't be stopped by the tests")
    tf = processes({**kafka_env, "TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS": "2"})
    body = event("outage")
    async with httpx.AsyncClient(timeout=15) as client:
        kafka.stop()
        try:
            refused = await client.post(f"{tf.base_url}/api/v1/events", json=body)
        finally:
            kafka.start()
        assert refused.status_code == 503, refused.text
        assert "Retry-After" in refused.headers

        async def accepted() -> httpx.Response | None:
            response = await client.post(f"{tf.base_url}/api/v1/events", json=body)
            return response if response.status_code == 202 else None

        answer = None
        for _ in range(60):
            answer = await accepted()
            if answer is not None:
                break
            await asyncio.sleep(0.5)
        assert answer is not None, "the broker came back, the API did not accept again"
        event_id = answer.json()["data"]["id"]
    await eventually(lambda: event_id in stored_ids(store_url), timeout=30)
    assert stored_ids(store_url).count(event_id) == 1
    assert len(stored_ids(store_url)) == 1


@pytest.mark.postgres
async def test_an_api_with_kafka_stays_ready_degraded_while_its_database_is_down(
    processes: Start,
    kafka_env: dict[str, str],
    postgres: PostgresServer,
    postgres_dsn: str,
    store_url: str,
) -> None:
    if not postgres.restartable:
        pytest.skip("the test PostgreSQL server can't be restarted")
    if store_url != postgres_dsn:
        pytest.skip("the store is not PostgreSQL")
    # A source with max_pending needs its PENDING events counted in the store.
    quotas = '{"capped": {"max_pending": 1000}}'
    env = {
        **kafka_env,
        "TIMEFUSE_SOURCE_QUOTAS": quotas,
        "TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS": "1",
    }
    api = processes(env, command="api")
    async with httpx.AsyncClient(timeout=15) as client:
        ready = await client.get(f"{api.base_url}/health/ready")
        assert ready.json()["data"]["status"] == "UP", ready.text
        postgres.stop("fast")
        try:
            ready = await client.get(f"{api.base_url}/health/ready")
            submitted = await client.post(f"{api.base_url}/api/v1/events", json=event("down"))
            capped = {**event("capped"), "source": "capped"}
            began = time.monotonic()
            refused = await client.post(f"{api.base_url}/api/v1/events", json=capped)
            refused_after = time.monotonic() - began
        finally:
            postgres.start()
    assert ready.status_code == 200, ready.text
    data = ready.json()["data"]
    assert data["status"] == "DEGRADED"
    assert data["checks"]["store"].startswith("degraded:")
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["data"]["stored"] is False
    # Refused, and within the submit timeout (1 s), not after the pool's 10 s.
    assert refused.status_code == 503, refused.text
    assert refused_after < 5, f"the 503 took {refused_after:.1f} s"
