"""PostgreSQL restarted under ``timefuse api`` + ``timefuse ingest`` + ``timefuse dispatch``
with Kafka ingest: submissions go on into Kafka, the consumer waits for the database and stores
everything once it is back, and every accepted event is stored once and delivered."""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.integration.kafka.conftest import eventually
from tests.integration.kafka.test_processes import (
    Start,
    batch_ids,
    http_event,
    stored_ids,
    submit_batch,
    until_delivered,
)
from tests.support.postgres_server import PostgresServer
from tests.support.process import free_port
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

DOWN_SECONDS = 4.0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_database_restart_under_the_ingest_consumer_loses_nothing(
    mode: str,
    postgres: PostgresServer,
    store_url: str,
    kafka_env: dict[str, str],
    processes: Start,
    receiver: Receiver,
) -> None:
    if not postgres.restartable:
        pytest.fail("the test PostgreSQL server must be one the tests can restart")
    assert store_url.startswith("postgresql://"), store_url
    # Durable commits, as production has: an immediate shutdown must not lose what ingest
    # committed (and so acknowledged to Kafka by committing its offsets).
    with psycopg.connect(store_url, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(name))
        )
    api = processes(kafka_env, command="api")
    ingest_port = free_port()
    processes({**kafka_env, "TIMEFUSE_METRICS_PORT": str(ingest_port)}, command="ingest")
    processes(kafka_env, command="dispatch")
    ingest_ready = f"http://127.0.0.1:{ingest_port}/health/ready"
    accepted: list[str] = []
    refused: list[str] = []
    async with httpx.AsyncClient(timeout=15) as client:

        async def ready(url: str) -> httpx.Response | None:
            try:
                return await client.get(url)
            except httpx.HTTPError:
                return None  # not listening yet

        async def ingest_is_ready() -> bool:
            answer = await ready(ingest_ready)
            return answer is not None and answer.status_code == 200

        await eventually(ingest_is_ready, timeout=30, interval=0.2)

        submitting = asyncio.Event()
        submitting.set()

        async def submit_stream() -> None:
            n = 0
            while submitting.is_set():
                events = [http_event(receiver, "restart", n + i, seconds=2) for i in range(20)]
                n += 20
                response = await submit_batch(client, api, events)
                if response.status_code == 202:
                    accepted.extend(batch_ids(response))
                else:
                    refused.append(f"{response.status_code} {response.text[:200]}")
                await asyncio.sleep(0.2)

        streaming = asyncio.create_task(submit_stream())
        await eventually(lambda: len(stored_ids(store_url)) >= 40, timeout=30)

        before = len(accepted)
        postgres.stop(mode)
        try:
            stopped = time.monotonic()
            api_ready = await client.get(f"{api.base_url}/health/ready")
            consumer_ready = await client.get(ingest_ready)
            await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped)))
            during = len(accepted)
        finally:
            postgres.start()
        await asyncio.sleep(2.0)  # submissions go on after the restart too
        submitting.clear()
        await streaming

    # The API goes on accepting into Kafka and says it is degraded; the consumer is not ready.
    assert api_ready.status_code == 200, api_ready.text
    assert "DEGRADED" in api_ready.text
    assert consumer_ready.status_code == 503, consumer_ready.text
    assert "store" in consumer_ready.text
    assert not refused, refused[:3]
    assert during > before  # accepted while the database was down
    print(f"\n{len(accepted)} accepted, {during - before} of them while the database was down")
    await eventually(lambda: set(accepted) <= set(stored_ids(store_url)), timeout=60, interval=0.5)
    ids = stored_ids(store_url)
    assert len(ids) == len(set(ids)), "an event was stored twice"
    await until_delivered(receiver, set(accepted), timeout=60)
