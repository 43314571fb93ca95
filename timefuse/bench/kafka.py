"""deliver-kafka: events due at once, delivered as records onto a Kafka topic.

Arrival is the record's timestamp (set when timefuse's producer took the record); a consumer
in a thread of the bench reads the topic from the start and matches records to events by their
``timefuse-event-id`` header. The baseline is a bare confluent-kafka producer with timefuse's
delivery producer configuration, writing the same number of records to a topic of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
    AdminClient,
    NewTopic,
)

from timefuse.bench import baselines, scenarios
from timefuse.bench.api import event_fields, iso, metric_delta
from timefuse.bench.context import Context, submit_all
from timefuse.bench.processes import BenchError
from timefuse.bench.report import Baseline, Report
from timefuse.config import KafkaSettings

PARTITIONS = 3
EVENT_ID_HEADER = "timefuse-event-id"
TOPIC_TIMEOUT_SECONDS = 30.0


def _producer_config(bootstrap: str) -> dict[str, Any]:
    from timefuse.plugins.kafka import KafkaDeliverySettings, delivery_producer_config

    cluster = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    return delivery_producer_config(cluster, KafkaDeliverySettings.from_env({}))


def _create_topics(admin: AdminClient, names: list[str]) -> None:
    futures = admin.create_topics([NewTopic(n, num_partitions=PARTITIONS) for n in names])
    for name, future in futures.items():
        try:
            future.result(TOPIC_TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise BenchError(f"cannot create Kafka topic {name!r}: {exc}") from None


def raw_produce(bootstrap: str, topic: str, count: int) -> Baseline:
    """A bare producer, as fast as librdkafka takes records, until the broker acknowledged all."""
    producer = Producer(_producer_config(bootstrap))
    failures = 0

    def acked(error: object, _message: object) -> None:
        nonlocal failures
        failures += error is not None

    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(
                    topic, baselines.PAYLOAD, f"baseline-{i}".encode(), on_delivery=acked
                )
                break
            except BufferError:
                producer.poll(0.005)
        producer.poll(0)
    left = producer.flush(TOPIC_TIMEOUT_SECONDS)
    seconds = time.perf_counter() - started
    return Baseline(
        name="raw confluent-kafka producer",
        rate_per_s=count / seconds,
        count=count,
        seconds=seconds,
        errors=failures + left,
        detail="timefuse's delivery producer configuration (acks=all, idempotent, lz4)",
    )


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class TopicReader:
    """Reads a topic from its start in a thread; :meth:`take` hands over what arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{topic}-reader",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(topic, p, -2) for p in range(PARTITIONS)])
        self._records: list[tuple[str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-kafka-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(1000, 0.2):
                if message.error():
                    continue
                headers = dict(message.headers() or [])
                event_id = headers.get(EVENT_ID_HEADER)
                if event_id is not None:
                    at = message.timestamp()[1] / 1000.0
                    with self._lock:
                        self._records.append((_text(event_id), at))

    async def take(self) -> list[tuple[str, float]]:
        with self._lock:
            records, self._records = self._records, []
        return records

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


async def deliver_kafka(ctx: Context) -> Report:
    o = ctx.options
    bootstrap = str(o.kafka)
    topic, raw_topic = f"bench-{ctx.run_id}", f"bench-{ctx.run_id}-raw"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    _create_topics(admin, [topic, raw_topic])
    reader = TopicReader(bootstrap, topic)
    try:
        return await _measure(ctx, bootstrap, topic, raw_topic, reader)
    finally:
        reader.close()
        with contextlib.suppress(Exception):
            for future in admin.delete_topics([topic, raw_topic]).values():
                future.result(TOPIC_TIMEOUT_SECONDS)


async def _measure(
    ctx: Context, bootstrap: str, topic: str, raw_topic: str, reader: TopicReader
) -> Report:
    o = ctx.options
    report = Report(o.scenario, dict(ctx.target), {"events": o.events, "topic": topic})
    count = min(o.events, scenarios.BASELINE_MAX_REQUESTS)
    report.baseline = await asyncio.to_thread(raw_produce, bootstrap, raw_topic, count)
    before = await ctx.api.metrics()
    lead = o.lead if o.lead is not None else 2.0 + o.events / scenarios.ASSUMED_INGEST_PER_S
    due = time.time() + lead
    fields = [event_fields(ctx.run_id, i, iso(due), "kafka", topic) for i in range(o.events)]
    ids, _ = await submit_all(ctx, fields, scenarios.SUBMIT_CONCURRENCY, "submitting")
    expected = dict.fromkeys(ids, due)
    arrivals = await scenarios.collect_from(ctx, expected, due, reader.take)
    after = await ctx.api.metrics()
    failed = metric_delta(before, after, scenarios.FAILED)
    scenarios.delivery_results(ctx, report, expected, arrivals, failed)
    report.results.update(scenarios.dispatcher_figures(before, after, len(expected)))
    await scenarios.explain_missing(ctx, report)
    report.rate_key = "drain_rate_per_s"
    return report
