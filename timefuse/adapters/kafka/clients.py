"""Configuration of timefuse's Kafka clients, and the topics they need."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
    AdminClient,
    NewTopic,
)

log = logging.getLogger("timefuse.kafka")

KafkaConfig = Mapping[str, Any]

# What "accepted means durable" asks of a producer: every in-sync replica has the record
# (acks=all), and a retried send can't duplicate or reorder it (idempotence). lz4 and a short
# linger trade a few milliseconds per submission for much larger, cheaper batches.
PRODUCER_DEFAULTS: KafkaConfig = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 10,
    "batch.size": 32768,
}

# Offsets are committed by hand, after the store's commit, and never before.
CONSUMER_DEFAULTS: KafkaConfig = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # The lag gauge is read from librdkafka's statistics, not from a query per scrape.
    "statistics.interval.ms": 5000,
    # A crashed member's partitions wait for its session to expire (45 s by default): 10 s
    # is still safe, since heartbeats come from librdkafka's own thread, not from our loop.
    "session.timeout.ms": 10000,
    "heartbeat.interval.ms": 3000,
}

TOPIC_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class KafkaClientSettings:
    """How to reach the cluster, and the properties that override timefuse's defaults.

    :param client: librdkafka properties for every client (security, SASL, client.id...).
    :param producer: overrides of :data:`PRODUCER_DEFAULTS`.
    :param consumer: overrides of :data:`CONSUMER_DEFAULTS`.
    """

    bootstrap_servers: str
    client: KafkaConfig = field(default_factory=dict)
    producer: KafkaConfig = field(default_factory=dict)
    consumer: KafkaConfig = field(default_factory=dict)

    def admin_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, "logger": log, **self.client}

    def producer_config(self, **defaults: Any) -> dict[str, Any]:
        """Producer properties: timefuse's defaults, then ``defaults``, then the overrides."""
        return {**self.admin_config(), **PRODUCER_DEFAULTS, **defaults, **self.producer}

    def consumer_config(self, group_id: str, **defaults: Any) -> dict[str, Any]:
        return {
            **self.admin_config(),
            "group.id": group_id,
            **CONSUMER_DEFAULTS,
            **defaults,
            **self.consumer,
        }


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = -1  # the broker's default.replication.factor
    # The topic's max.message.bytes when timefuse creates it (None: the broker's default).
    max_message_bytes: int | None = None

    def config(self) -> dict[str, str]:
        if self.max_message_bytes is None:
            return {}
        return {"max.message.bytes": str(self.max_message_bytes)}


async def ensure_topics(
    settings: KafkaClientSettings, topics: list[TopicSpec], timeout: float = TOPIC_TIMEOUT_SECONDS
) -> None:
    """Create the topics that don't exist yet; an existing topic is left as it is.

    :raises KafkaException: the cluster could not be asked (within about ``timeout`` seconds),
        or refused to create one.
    """
    await asyncio.to_thread(_ensure_topics, settings, topics, timeout)


def _ensure_topics(settings: KafkaClientSettings, topics: list[TopicSpec], timeout: float) -> None:
    # The timeout is librdkafka's own: a thread can't be cancelled, so it must end by itself.
    admin = AdminClient(settings.admin_config())
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t.name not in existing]
    if not missing:
        return
    new = [NewTopic(t.name, t.partitions, t.replication_factor, config=t.config()) for t in missing]
    futures = admin.create_topics(new, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            # Another timefuse process created it between our look and our request.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            log.info("created Kafka topic %s", name)


def describe(error: KafkaError | BaseException) -> str:
    """``NAME: reason`` for a Kafka error, the form timefuse reports failures in."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return f"{type(error).__name__}: {error}"
