"""Quotas with Kafka between the API and the store: the API refuses before it produces, and the
ingest consumer stores every record the API acknowledged."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest

from tests.integration.kafka.conftest import Names, at, eventually, read_topic
from tests.support.kafka_broker import KafkaBroker
from timefuse.adapters.memory import MemoryStore
from timefuse.config import Settings
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap, build_stream
from timefuse.service.ingest_consumer import IngestConsumer

pytestmark = pytest.mark.kafka

QUOTAS = {"noisy": {"rate": 0.001, "burst": 2}, "capped": {"max_pending": 3}}


@dataclass
class Running:
    tf: Timefuse
    client: httpx.AsyncClient


def job(source: str, n: int) -> dict[str, Any]:
    return {
        "external_job_id": f"{source}-{n}",
        "source": source,
        "scheduled_at": at(3600),
        "delivery_type": "http",
        "destination": "https://receiver.example/hook",
        "payload": {"n": n},
    }


@pytest.fixture
async def running(kafka: KafkaBroker, names: Names) -> AsyncIterator[Running]:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "TIMEFUSE_KAFKA_INGEST_TOPIC": names.ingest,
            "TIMEFUSE_KAFKA_CONSUMER_GROUP": names.group,
            "TIMEFUSE_PLUGINS": "",
            "TIMEFUSE_SOURCE_QUOTAS": json.dumps(QUOTAS),
        }
    )
    tf = bootstrap(settings, store=MemoryStore())
    await tf.open()
    consumer = IngestConsumer(
        stream=build_stream(settings.kafka, settings.ingest),
        store=tf.store,
        metrics=tf.metrics,
        wakeup=tf.wakeup,
    )
    stop = asyncio.Event()
    consuming = asyncio.create_task(consumer.run(stop))
    app = create_app(service=tf.service, metrics=tf.metrics, settings=settings.api)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://timefuse") as client:
        yield Running(tf, client)
    stop.set()
    await consuming
    await tf.close()


async def pending(tf: Timefuse, source: str) -> int:
    return (await tf.store.count_by_status(sources=[source]))[EventStatus.PENDING]


async def test_what_a_quota_refuses_never_reaches_the_topic(
    running: Running, kafka: KafkaBroker, names: Names
) -> None:
    noisy = [await running.client.post("/api/v1/events", json=job("noisy", n)) for n in range(3)]
    batch = await running.client.post(
        "/api/v1/events/batch", json={"events": [job("capped", n) for n in range(5)]}
    )
    await eventually(lambda: _stored(running.tf, {"noisy": 2, "capped": 3}), timeout=20)
    # Once the batch is stored the cap is full, and the API sees it.
    later = await running.client.post("/api/v1/events", json=job("capped", 9))

    assert [r.status_code for r in noisy] == [202, 202, 429]
    assert int(noisy[2].headers["retry-after"]) >= 999
    data = batch.json()["data"]
    assert (data["accepted"], [r["code"] for r in data["rejected_events"]]) == (
        3,
        ["QUOTA_PENDING"] * 2,
    )
    assert later.status_code == 429
    assert later.json()["error_code"] == "QUOTA_PENDING"
    records = read_topic(kafka.bootstrap_servers, names.ingest, 6, timeout=5)
    produced = sorted(msgspec.json.decode(r.value() or b"{}")["external_job_id"] for r in records)
    assert produced == ["capped-0", "capped-1", "capped-2", "noisy-0", "noisy-1"]


async def _stored(tf: Timefuse, expected: dict[str, int]) -> bool:
    for source, count in expected.items():
        if await pending(tf, source) != count:
            return False
    return True
