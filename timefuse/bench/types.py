"""http-type and kafka-type: a built-in delivery type alone, against its bare client.

In-process, no dispatcher, no store: what the type itself costs. ``-n`` deliveries through
the type's ``deliver``, ``--concurrency`` in flight (as many worker tasks, each taking the next
event: 20,000 tasks queued on a semaphore would cost more than what is measured), against the
same number of requests from the bare client, in the same run. Besides the rates, the CPU this
process spent per request, which is the figure to compare when the receiver or the broker
limits the rate.

- http-type: ``HttpDelivery.deliver`` (SSRF guard, signing when configured, credentials,
  the answer's classification) against raw aiohttp POSTs of the same body through one
  session, both to the bench's receiver (a bare asyncio protocol in its own process).
- kafka-type: ``KafkaDelivery.deliver`` (topic rules, the adapter's producer, the delivery
  report) against a bare confluent-kafka producer with the same configuration, to topics
  made for the run on ``--kafka`` (or ``KAFKA_BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from timefuse.bench import baselines
from timefuse.bench.options import BenchOptions
from timefuse.bench.processes import ReceiverProcess
from timefuse.bench.report import Baseline, Report
from timefuse.bench.stats import rate
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.testing.factories import make_event

# A warm-up round first: opening the pools' connections (or the producer's id) is not a cost
# of each delivery.
WARM_UP = 500

Send = Callable[[Event], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Round:
    count: int
    seconds: float
    cpu_s: float
    failures: int
    first_failure: str


async def drive(send: Send, events: list[Event], concurrency: int) -> Round:
    """``send`` every event, ``concurrency`` at a time; wall and process CPU time taken."""
    pending: Iterator[Event] = iter(events)
    failures: list[str] = []

    async def worker() -> None:
        for event in pending:
            try:
                problem = await send(event)
            except Exception as exc:
                problem = repr(exc)
            if problem is not None:
                failures.append(problem)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(events)))))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Round(len(events), wall, cpu, len(failures), failures[0] if failures else "")


def _events(count: int, delivery_type: str, destination: str) -> list[Event]:
    return [
        make_event(
            external_job_id=f"bench-{n}",
            source="timefuse-bench",
            delivery_type=delivery_type,
            destination=destination,
            payload=baselines.PAYLOAD,
            attempts=1,
        )
        for n in range(count)
    ]


def _report(
    options: BenchOptions, target: dict[str, Any], typed: Round, raw: Round, raw_name: str
) -> Report:
    report = Report(
        options.scenario,
        {"in_process": True, **target},
        {"events": options.events, "concurrency": options.concurrency},
    )
    report.baseline = Baseline(
        name=raw_name,
        rate_per_s=rate(raw.count, raw.seconds),
        count=raw.count,
        seconds=raw.seconds,
        errors=raw.failures,
    )
    report.rate_key = "deliver_rate_per_s"
    typed_cpu = typed.cpu_s / typed.count
    raw_cpu = raw.cpu_s / raw.count
    report.results = {
        "deliver_rate_per_s": rate(typed.count, typed.seconds),
        "deliver_cpu_per_request_us": typed_cpu * 1e6,
        "raw_cpu_per_request_us": raw_cpu * 1e6,
        "cpu_ratio": typed_cpu / raw_cpu if raw_cpu > 0 else None,
        "failed_deliveries": typed.failures,
    }
    report.errors = typed.failures + raw.failures
    for label, measured in (("deliver", typed), ("baseline", raw)):
        if measured.failures:
            report.notes.append(f"{label}: first failure: {measured.first_failure}")
    return report


def run_http_type(options: BenchOptions) -> Report:
    return asyncio.run(_http_type(options))


async def _http_type(options: BenchOptions) -> Report:
    from timefuse.plugins.http import HttpDelivery
    from timefuse.plugins.http_settings import HttpSettings

    receiver = ReceiverProcess(options.receiver_host)
    await receiver.start()
    url = receiver.url()
    settings = HttpSettings.from_env({"TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"})
    delivery = HttpDelivery(settings, connection_limit=options.concurrency)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=options.concurrency))
    await delivery.start()

    async def deliver(event: Event) -> str | None:
        return _problem(await delivery.deliver(event, 1))

    async def raw_post(event: Event) -> str | None:
        headers = {"Content-Type": "application/json", "webhook-id": event.id}
        async with session.post(url, data=event.payload, headers=headers) as response:
            await response.read()
            return None if response.status < 300 else f"HTTP {response.status}"

    try:
        events = _events(options.events, "http", url)
        for send in (raw_post, deliver):
            await drive(send, events[:WARM_UP], options.concurrency)
        raw = await drive(raw_post, events, options.concurrency)
        typed = await drive(deliver, events, options.concurrency)
    finally:
        await session.close()
        await delivery.stop()
        await receiver.close()
    return _report(options, {"receiver": url}, typed, raw, "raw aiohttp POSTs")


def run_kafka_type(options: BenchOptions) -> Report:
    return asyncio.run(_kafka_type(options))


async def _kafka_type(options: BenchOptions) -> Report:
    from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
        AdminClient,
    )

    from timefuse.bench.kafka import TOPIC_TIMEOUT_SECONDS, create_topics, raw_produce
    from timefuse.config import KafkaSettings
    from timefuse.plugins.kafka import KafkaDelivery, KafkaDeliverySettings

    bootstrap = str(options.kafka)
    run = f"bench-type-{time.time_ns() % 10**10}"
    topic, raw_topic = run, f"{run}-raw"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    await asyncio.to_thread(create_topics, admin, [topic, raw_topic])
    cluster = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    delivery = KafkaDelivery(cluster, KafkaDeliverySettings.from_env({}))
    await delivery.start()

    async def deliver(event: Event) -> str | None:
        return _problem(await delivery.deliver(event, 1))

    try:
        events = _events(options.events, "kafka", topic)
        await drive(deliver, events[:WARM_UP], options.concurrency)
        cpu = time.process_time()
        baseline = await asyncio.to_thread(raw_produce, bootstrap, raw_topic, options.events)
        raw = Round(
            baseline.count,
            baseline.seconds,
            time.process_time() - cpu,
            baseline.errors,
            "",
        )
        typed = await drive(deliver, events, options.concurrency)
    finally:
        await delivery.stop()
        with contextlib.suppress(Exception):
            for future in admin.delete_topics([topic, raw_topic]).values():
                future.result(TOPIC_TIMEOUT_SECONDS)
    return _report(options, {"kafka": bootstrap}, typed, raw, baseline.name)


def _problem(outcome: DeliveryOutcome) -> str | None:
    if outcome.succeeded:
        return None
    return f"{outcome.kind.value}: {outcome.error}"
