"""Fixtures of the Kafka tests: per-test topic and group names, a store, and topic readers.

Every test gets topics and a consumer group of its own on the session's broker, so tests
never see each other's records or offsets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

from tests.support.kafka_broker import KafkaBroker
from timefuse.adapters.system.clock import SystemClock
from timefuse.config import Settings
from timefuse.entrypoints.bootstrap import build_store
from timefuse.service.store import Store

# Fast retries, leases and group membership, so whole lifecycles take seconds. A killed
# consumer's partitions move on once its session expires: 6 s is the broker's minimum.
FAST = {
    "TIMEFUSE_RETRY_BASE_MS": "200",
    "TIMEFUSE_RETRY_CAP_MS": "400",
    "SCHEDULER_POLL_INTERVAL_MS": "500",
    "TIMEFUSE_LEASE_SECONDS": "10",
    "KAFKA_PARTITIONS": "4",
    "TIMEFUSE_KAFKA_CONSUMER_CONFIG": '{"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}',
}


@dataclass(frozen=True)
class Names:
    """Topics and group of one test."""

    ingest: str
    dead_letters: str
    group: str
    delivery: str


@pytest.fixture
def names() -> Names:
    run = uuid.uuid4().hex[:10]
    return Names(
        ingest=f"it-{run}.ingest",
        dead_letters=f"it-{run}.ingest.dlq",
        group=f"it-{run}-ingest",
        delivery=f"it-{run}.out",
    )


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PostgreSQL when its store adapter is in the tree, else an SQLite file."""
    try:
        import timefuse.adapters.postgres  # noqa: F401
    except ImportError:
        return f"sqlite:///{tmp_path / 'timefuse.db'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


@pytest.fixture
def kafka_env(kafka: KafkaBroker, names: Names, store_url: str) -> dict[str, str]:
    """The environment of a timefuse process on this test's topics, group and store."""
    return {
        **FAST,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TIMEFUSE_KAFKA_INGEST_TOPIC": names.ingest,
        "TIMEFUSE_KAFKA_CONSUMER_GROUP": names.group,
        "DATABASE_URL": store_url,
    }


@pytest.fixture
def settings(kafka_env: dict[str, str]) -> Settings:
    return Settings.from_env(kafka_env)


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """The test's store, opened, for looking at what the processes wrote."""
    opened = Store(build_store(settings.store, SystemClock()))
    await opened.open()
    yield opened
    await opened.close()


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def read_topic(
    bootstrap_servers: str, topic: str, count: int, timeout: float = 20.0
) -> list[Message]:
    """The first ``count`` records of ``topic`` (fewer if the timeout passes first)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    records: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for message in consumer.consume(count - len(records), 0.5):
                if message.error() is None:
                    records.append(message)
    finally:
        consumer.close()
    return records


def read_all(bootstrap_servers: str, topic: str, timeout: float = 10.0) -> list[Message]:
    """Every record ``topic`` holds now (up to its high watermarks when called)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "unused"})
    records: list[Message] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends = {}
        for partition in metadata.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
            if high > 0:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    records.append(message)
                    if (message.offset() or 0) + 1 >= ends.get(message.partition() or 0, 0):
                        ends.pop(message.partition() or 0, None)
    finally:
        consumer.close()
    return records


def committed_offsets(bootstrap_servers: str, group: str, topic: str, partitions: int) -> int:
    """The sum of ``group``'s committed offsets on ``topic`` (0 for a partition without one)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(wanted, timeout=10))
    finally:
        consumer.close()


async def eventually(check: Callable[[], object], timeout: float, interval: float = 0.1) -> None:
    """Wait until ``check()`` (sync or async) is truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            assert value, f"still {value!r} after {timeout:g} s"
            return
        await asyncio.sleep(interval)
