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
from datetime import timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
    AdminClient,
    NewTopic,
)

from timefuse.bench import baselines, scenarios
from timefuse.bench.api import event_fields, iso, metric_delta
from timefuse.bench.context import Context, submit_all
from timefuse.bench.options import BenchOptions
from timefuse.bench.processes import BenchError
from timefuse.bench.report import Baseline, Report
from timefuse.config import KafkaSettings
from timefuse.plugins.kafka import cluster_clients

PARTITIONS = 3
EVENT_ID_HEADER = "timefuse-event-id"
TOPIC_TIMEOUT_SECONDS = 30.0


def _producer_config(bootstrap: str) -> dict[str, Any]:
    from timefuse.plugins.kafka import KafkaDeliverySettings, delivery_producer_config

    cluster = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    return delivery_producer_config(cluster, KafkaDeliverySettings.from_env({}))


def create_topics(admin: AdminClient, names: list[str]) -> None:
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

    # One acknowledged record first: the connections and the idempotent producer's id are
    # start-up cost, not a cost per record (timefuse's producer is started before the clock too).
    producer.produce(topic, baselines.PAYLOAD, b"warm-up")
    producer.flush(TOPIC_TIMEOUT_SECONDS)
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
    create_topics(admin, [topic, raw_topic])
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


# -- ingest-backlog ----------------------------------------------------------------------------

BACKLOG_TIMEOUT_SECONDS = 600.0


def run_ingest_backlog(options: BenchOptions) -> Report:
    """A Kafka ingest topic filled beforehand, drained into the store by ``timefuse serve``.

    The aftermath of a spike the API absorbed: the topic holds ``-n`` events (due in 30 days,
    so nothing is delivered) before the bench's own timefuse starts. Timed from the first
    event the statistics count to the last, so the process's start-up is left out. The
    baseline is the bare producer writing the same envelopes to the topic.
    """
    return asyncio.run(_ingest_backlog(options))


async def _ingest_backlog(options: BenchOptions) -> Report:
    from timefuse.adapters.kafka.envelope import encode_event
    from timefuse.adapters.system.clock import SystemClock
    from timefuse.bench.processes import ServeProcess
    from timefuse.bench.stats import rate
    from timefuse.bench.store import due_events
    from timefuse.config import StoreSettings
    from timefuse.entrypoints.bootstrap import build_store
    from timefuse.service.store import Store

    bootstrap = str(options.kafka)
    run = f"bench-backlog-{time.time_ns() % 10**10}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    await asyncio.to_thread(create_topics, admin, [run])
    events = due_events(options.events, ahead=timedelta(days=30))
    records = [(event.source.encode(), encode_event(event)) for event in events]
    baseline = await asyncio.to_thread(_produce_records, bootstrap, run, records)
    serve = ServeProcess(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_PARTITIONS": str(PARTITIONS),
            "TIMEFUSE_KAFKA_INGEST_TOPIC": run,
            "TIMEFUSE_KAFKA_CONSUMER_GROUP": run,
            "TIMEFUSE_PLUGINS": "",
        },
        options.profile,
        options.serve_log,
    )
    # The bench reads the store itself, from the moment the process starts: for a small
    # backlog, waiting for its API would be waiting until the backlog is gone. Opening it
    # first also creates the schema, so both sides don't race to.
    store_settings = StoreSettings.from_env(serve.env)
    store = Store(build_store(store_settings, SystemClock()))
    await store.open()
    try:
        serve.start()
        first, seconds = await _drained(store, serve, len(events))
    finally:
        await store.close()
        serve.stop()
        with contextlib.suppress(Exception):
            for future in admin.delete_topics([run, f"{run}.dlq"]).values():
                future.result(TOPIC_TIMEOUT_SECONDS)
    report = Report(
        options.scenario,
        {"self_hosted": True, "kafka": bootstrap, "store": store_settings.url.partition(":")[0]},
        {"events": options.events, "partitions": PARTITIONS},
    )
    report.baseline = baseline
    report.rate_key = "drain_rate_per_s"
    report.results = {
        "drain_rate_per_s": rate(len(events) - first, seconds),
        "drain_time_s": seconds,
        "stored_in_first_batches": first,
    }
    return report


async def _drained(store: Any, serve: Any, total: int) -> tuple[int, float]:
    """Events stored at the first look that found any, and seconds from then until all are."""
    deadline = time.monotonic() + BACKLOG_TIMEOUT_SECONDS
    first: int | None = None
    started = 0.0
    while True:
        stored = sum((await store.count_by_status()).values())
        now = time.perf_counter()
        if first is None and stored > 0:
            first, started = stored, now
        if stored >= total:
            return first or 0, now - started
        if serve.exit_code is not None:
            raise BenchError(f"timefuse serve exited with {serve.exit_code}:\n{serve.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"only {stored:,} of {total:,} events were stored in time")
        await asyncio.sleep(0.02)


def _produce_records(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> Baseline:
    config = cluster_clients(KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}))
    producer = Producer(config.producer_config())
    failures = 0

    def acked(error: object, _message: object) -> None:
        nonlocal failures
        failures += error is not None

    producer.produce(topic, records[0][1], records[0][0])  # start-up cost: see raw_produce
    producer.flush(TOPIC_TIMEOUT_SECONDS)
    started = time.perf_counter()
    for key, value in records[1:]:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=acked)
                break
            except BufferError:
                producer.poll(0.005)
        producer.poll(0)
    left = producer.flush(TOPIC_TIMEOUT_SECONDS)
    seconds = time.perf_counter() - started
    return Baseline(
        name="raw confluent-kafka producer, same envelopes",
        rate_per_s=(len(records) - 1) / seconds,
        count=len(records) - 1,
        seconds=seconds,
        errors=failures + left,
        detail="the ingest buffer's producer configuration (acks=all, idempotent, lz4)",
    )
