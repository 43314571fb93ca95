"""timefuse with Kafka as a user runs it: real processes, real broker, real store, real HTTP.

``timefuse serve`` (every role in one process) and ``timefuse api`` + ``timefuse ingest`` +
``timefuse dispatch`` (scaled out) run as child processes; the tests crash them, stop the
broker under them, and check that every event answered 202 is stored exactly once and
delivered.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
    AdminClient,
    NewTopic,
)

from tests.integration.kafka.conftest import Names, at, eventually, read_topic
from tests.support.kafka_broker import KafkaBroker
from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

Start = Callable[..., TimefuseProcess]

# How long the broker stays down in the outage test.
OUTAGE_SECONDS = 30.0


def stored_ids(store_url: str) -> list[str]:
    """Every event id in the store, duplicates included (read with SQL, not through timefuse)."""
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            return [row[0] for row in conn.execute("SELECT id FROM events")]
    with psycopg.connect(store_url) as conn:
        return [str(row[0]) for row in conn.execute("SELECT id FROM events")]


def http_event(receiver: Receiver, source: str, n: int, seconds: float = 3600) -> dict[str, object]:
    return {
        "external_job_id": f"{source}-{n}-{uuid.uuid4().hex[:6]}",
        "source": source,
        "scheduled_at": at(seconds),
        "delivery_type": "http",
        "destination": receiver.url("/hook"),
        "payload": {"n": n},
    }


async def submit_batch(
    client: httpx.AsyncClient, tf: TimefuseProcess, events: list[dict[str, object]]
) -> httpx.Response:
    return await client.post(f"{tf.base_url}/api/v1/events/batch", json={"events": events})


def batch_ids(response: httpx.Response) -> list[str]:
    return [str(item["id"]) for item in response.json()["data"]["ids"]]


async def until_delivered(receiver: Receiver, ids: set[str], timeout: float) -> None:
    """Every one of ``ids`` has arrived at the receiver (polled: thousands of arrivals)."""

    def missing() -> set[str]:
        return ids - {r.event_id for r in receiver.on("/hook")}

    deadline = time.monotonic() + timeout
    while missing():
        assert time.monotonic() < deadline, f"{len(missing())} of {len(ids)} never arrived"
        await asyncio.sleep(0.5)


def delivered_twice(receiver: Receiver) -> int:
    arrivals = [r.event_id for r in receiver.on("/hook")]
    return len(arrivals) - len(set(arrivals))


async def test_an_event_goes_from_rest_through_kafka_and_the_store_to_its_receiver(
    processes: Start, kafka_env: dict[str, str], receiver: Receiver
) -> None:
    tf = processes(kafka_env)
    scheduled = datetime.now(UTC) + timedelta(seconds=2)
    body = {**http_event(receiver, "e2e", 1), "scheduled_at": scheduled.isoformat()}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{tf.base_url}/api/v1/events", json=body)
        assert response.status_code == 202, response.text
        event_id = response.json()["data"]["id"]
        assert await receiver.wait_for(lambda: bool(receiver.on("/hook")), timeout=15)
        arrival = receiver.on("/hook")[0]
        assert arrival.event_id == event_id
        assert arrival.body == b'{"n":1}'
        assert arrival.at >= scheduled.timestamp()

        async def completed() -> bool:
            answer = await client.get(f"{tf.base_url}/api/v1/events/{event_id}")
            return bool(answer.json()["data"]["status"] == "COMPLETED")

        await eventually(completed, timeout=10)


async def test_kafka_delivery_writes_the_payload_once_encoded_with_the_event_headers(
    processes: Start, kafka_env: dict[str, str], kafka: KafkaBroker, names: Names
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(names.delivery, 1, 1)])[names.delivery].result(15)
    tf = processes(kafka_env)
    payload = '{"order": 42, "name": "café ☃", "tags": ["a","b"]}'
    body = (
        f'{{"external_job_id": "order-42", "source": "shop", "scheduled_at": "{at(0.5)}", '
        f'"delivery_type": "kafka", "destination": "{names.delivery}", "payload": {payload}}}'
    )
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{tf.base_url}/api/v1/events",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 202, response.text
    [record] = read_topic(kafka.bootstrap_servers, names.delivery, 1)
    assert record.value() == payload.encode()  # the client's bytes, not re-encoded
    assert isinstance(json.loads(record.value() or b""), dict)  # a document, not a string of one
    assert record.key() == b"order-42"
    headers = {name: value.decode() for name, value in record.headers() or []}
    assert headers["timefuse-event-id"] == response.json()["data"]["id"]
    assert headers["timefuse-source"] == "shop"
    assert headers["timefuse-attempt"] == "1"
    assert datetime.fromisoformat(headers["timefuse-scheduled-at"]).tzinfo is not None


async def test_a_killed_ingest_consumer_loses_and_duplicates_nothing(
    processes: Start, kafka_env: dict[str, str], receiver: Receiver, store_url: str
) -> None:
    api = processes(kafka_env, command="api")
    ingest = processes(kafka_env, command="ingest")
    processes(kafka_env, command="dispatch")
    accepted: list[str] = []
    async with httpx.AsyncClient(timeout=15) as client:

        async def submit_stream(start: int, batches: int) -> None:
            for b in range(start, start + batches):
                events = [
                    http_event(receiver, f"src-{i % 7}", b * 100 + i, seconds=2) for i in range(100)
                ]
                response = await submit_batch(client, api, events)
                assert response.status_code == 202, response.text
                accepted.extend(batch_ids(response))

        await submit_stream(0, 5)
        await eventually(lambda: len(stored_ids(store_url)) > 0, timeout=20)
        streaming = asyncio.create_task(submit_stream(5, 15))
        await asyncio.sleep(random.uniform(0.1, 0.8))
        ingest.kill()  # SIGKILL mid-stream: nothing flushed, nothing committed on the way out
        await asyncio.sleep(0.5)
        ingest.start()
        await streaming
    await eventually(lambda: len(stored_ids(store_url)) >= len(accepted), timeout=40)
    await asyncio.sleep(1.0)  # anything still on its way in would show as a duplicate
    ids = stored_ids(store_url)
    assert len(accepted) == 2000
    assert sorted(ids) == sorted(accepted)
    await until_delivered(receiver, set(accepted), timeout=60)
    assert delivered_twice(receiver) == 0  # no dispatcher died: nothing was in flight twice


async def test_while_the_broker_is_down_the_api_answers_503_then_recovers_losing_nothing(
    processes: Start,
    kafka_env: dict[str, str],
    kafka: KafkaBroker,
    receiver: Receiver,
    store_url: str,
) -> None:
    if not kafka.restartable:
        pytest.fail("the session's broker must be one the tests can stop and start")
    tf = processes({**kafka_env, "TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS": "2"})
    accepted: list[str] = []
    async with httpx.AsyncClient(timeout=15) as client:
        retry_after: list[str | None] = []

        async def submit(n: int) -> int:
            event = http_event(receiver, "outage", n, seconds=1)
            response = await submit_batch(client, tf, [event])
            if response.status_code == 202:
                accepted.extend(batch_ids(response))
            else:
                retry_after.append(response.headers.get("Retry-After"))
            return response.status_code

        assert [await submit(n) for n in range(3)] == [202] * 3
        # Stored before the outage, due during it: delivered from the store meanwhile.
        await eventually(lambda: set(accepted) <= set(stored_ids(store_url)), timeout=30)
        kafka.stop()
        stopped = time.monotonic()
        during: list[int] = []
        answered_in: list[float] = []
        readiness: list[int] = []
        try:
            n = 3
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                asked = time.monotonic()
                during.append(await submit(n))
                answered_in.append(time.monotonic() - asked)
                readiness.append((await client.get(f"{tf.base_url}/health/ready")).status_code)
                n += 1
                await asyncio.sleep(1.0)
            down_for = time.monotonic() - stopped
        finally:
            kafka.start()
        print(f"\nbroker down {down_for:.1f} s: {len(during)} submissions, answered in at most "
              f"{max(answered_in):.1f} s")  # fmt: skip
        assert set(during) == {503}
        assert retry_after == ["1"] * len(during)  # told when to come back, not left to guess
        assert max(answered_in) < 5.0  # the 2 s submission deadline, not a hang
        assert set(readiness) == {503}
        assert len(accepted) == 3

        async def accepted_again() -> bool:
            return await submit(100) == 202

        await eventually(accepted_again, timeout=60, interval=0.5)
        assert {await submit(n) for n in range(200, 205)} == {202}
    await eventually(lambda: set(accepted) <= set(stored_ids(store_url)), timeout=30)
    assert len(stored_ids(store_url)) == len(set(stored_ids(store_url)))
    await until_delivered(receiver, set(accepted), timeout=30)


async def test_a_killed_api_loses_nothing_it_answered_202_for(
    processes: Start, kafka_env: dict[str, str], receiver: Receiver, store_url: str
) -> None:
    api = processes(kafka_env, command="api")
    processes(kafka_env, command="ingest")
    processes(kafka_env, command="dispatch")
    accepted: list[str] = []
    cut = 0
    async with httpx.AsyncClient(timeout=15) as client:

        async def submit_stream(stream: int, batches: int) -> None:
            nonlocal cut
            for b in range(batches):
                events = [
                    http_event(receiver, f"api-{stream}", b * 100 + i, seconds=2)
                    for i in range(100)
                ]
                try:
                    response = await submit_batch(client, api, events)
                except httpx.HTTPError:
                    cut += 1  # cut by the kill: no answer, no promise
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code == 202:
                    accepted.extend(batch_ids(response))

        streams = [asyncio.create_task(submit_stream(s, 10)) for s in range(3)]
        await asyncio.sleep(random.uniform(0.3, 0.8))
        api.kill()  # SIGKILL with requests in flight, records in the producer's queue
        await asyncio.sleep(0.5)
        api.start()
        await asyncio.gather(*streams)
    assert len(accepted) >= 1000
    await eventually(lambda: set(accepted) <= set(stored_ids(store_url)), timeout=40)
    ids = stored_ids(store_url)
    assert len(ids) == len(set(ids)), "an event was stored twice"
    await until_delivered(receiver, set(accepted), timeout=60)
    assert delivered_twice(receiver) == 0  # no dispatcher died: nothing was in flight twice
