"""What the Kafka paths cost next to their raw parts. Prints figures, asserts nothing.

On one broker and one PostgreSQL server (the test suite's own, from tests/support, or those
``TIMEFUSE_TEST_KAFKA_BOOTSTRAP`` / ``TIMEFUSE_TEST_DATABASE_URL`` name), each section on fresh
topics and a fresh database:

1. raw baselines: a bare confluent-kafka producer sending the same envelopes the API sends
   (timefuse's producer configuration, all acknowledged), and PostgresEventStore.insert_many
   in batches (the store's own insert rate, no Kafka, no HTTP);
2. ingestion: ``timefuse api`` + ``timefuse ingest`` as processes, clients posting batches to
   POST /api/v1/events/batch; the rate at which events were accepted (202) and the rate until
   all of them were in PostgreSQL; then ``timefuse ingest`` alone draining a full topic;
3. Kafka delivery: events due now inserted into the store, ``timefuse dispatch`` delivering
   them to a topic, until all are COMPLETED; against a bare producer writing the same payloads.

    .venv/bin/python benchmarks/kafka_paths.py [--events 50000] [--batch 1000]
        [--clients 4] [--partitions 24] [--destination-concurrency 0]

Every process shares the machine (broker, database, timefuse, the load itself): compare the
figures of one run with each other, not with a dedicated cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined,unused-ignore]
    AdminClient,
    NewTopic,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/support, when run as a script

from tests.support.kafka_broker import kafka_broker  # noqa: E402
from tests.support.postgres_server import postgres_server  # noqa: E402
from tests.support.process import TimefuseProcess  # noqa: E402
from timefuse.adapters.kafka.clients import KafkaClientSettings  # noqa: E402
from timefuse.adapters.kafka.envelope import encode_event  # noqa: E402
from timefuse.adapters.postgres import PostgresEventStore  # noqa: E402
from timefuse.config import Settings  # noqa: E402
from timefuse.domain.event import Event, new_event_id  # noqa: E402
from timefuse.plugins.kafka import KafkaDelivery  # noqa: E402
from timefuse.plugins.kafka import producer_config as delivery_producer_config  # noqa: E402

PAYLOAD = {"order": 42, "customer": "c-0001", "items": [1, 2, 3], "note": "x" * 100}
PAYLOAD_BYTES = b'{"order":42,"customer":"c-0001","items":[1,2,3],"note":"' + b"x" * 100 + b'"}'
SOURCES = 50


def line(label: str, count: int, seconds: float, extra: str = "") -> None:
    print(f"  {label:<52} {count / seconds:>10,.0f} events/s  ({seconds:6.2f} s){extra}")


def make_events(count: int, due: datetime, **overrides: Any) -> list[Event]:
    now = datetime.now(UTC)
    events = []
    for n in range(count):
        fields: dict[str, Any] = {
            "id": new_event_id(now),
            "external_job_id": f"job-{n}-{uuid.uuid4().hex[:8]}",
            "source": f"source-{n % SOURCES}",
            "scheduled_at": due,
            "delivery_type": "http",
            "destination": "https://receiver.example/hook",
            "payload": PAYLOAD_BYTES,
            "next_attempt_at": due,
            "created_at": now,
            "updated_at": now,
        }
        fields.update(overrides)
        events.append(Event(**fields))
    return events


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def produce_all(config: dict[str, Any], topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Seconds to send ``records`` (key, value) and have every one acknowledged."""
    producer = Producer(config)
    failures: list[object] = []

    def report(error: object, _message: object) -> None:
        if error is not None:
            failures.append(error)

    # One acknowledged record first: acquiring the idempotent producer's id is start-up cost.
    producer.produce(topic, records[0][1], records[0][0])
    producer.flush(30)
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    if failures:
        print(f"  ! {len(failures)} records failed: {failures[0]}")
    return elapsed


async def raw_store_insert(dsn: str, events: list[Event], batch: int) -> float:
    store = PostgresEventStore(dsn, pool_size=2)
    await store.open()
    try:
        started = time.perf_counter()
        for i in range(0, len(events), batch):
            await store.insert_many(events[i : i + batch])
        return time.perf_counter() - started
    finally:
        await store.close()


def count(dsn: str, where: str = "TRUE") -> int:
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute(f"SELECT count(*) FROM events WHERE {where}").fetchone()
        except psycopg.errors.UndefinedTable:  # the process has not migrated the schema yet
            return 0
        return int(row[0]) if row else 0


async def wait_for_count(
    dsn: str, target: int, processes: list[TimefuseProcess], where: str = "TRUE"
) -> None:
    deadline = time.monotonic() + float(os.environ.get("BENCH_WAIT", "600"))
    while count(dsn, where) < target:
        for process in processes:
            assert process.proc is not None
            if process.proc.poll() is not None:
                raise RuntimeError(f"timefuse {process.command} exited:\n{process.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(process.log() for process in processes)
            raise RuntimeError(f"only {count(dsn, where)} of {target}; logs:\n{logs}")
        await asyncio.sleep(0.1)


def batch_body(size: int, offset: int) -> dict[str, object]:
    when = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return {
        "events": [
            {
                "external_job_id": f"bench-{offset + i}",
                "source": f"source-{(offset + i) % SOURCES}",
                "scheduled_at": when,
                "delivery_type": "http",
                "destination": "https://receiver.example/hook",
                "payload": PAYLOAD,
            }
            for i in range(size)
        ]
    }


async def post_batches(base_url: str, total: int, batch: int, clients: int) -> int:
    bodies = [batch_body(batch, offset) for offset in range(0, total, batch)]
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(timeout=60) as http:
            while not queue.empty():
                body = queue.get_nowait()
                response = await http.post(f"{base_url}/api/v1/events/batch", json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                accepted += int(response.json()["data"]["accepted"])

    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted


@contextlib.contextmanager
def started(workdir: Path, env: dict[str, str], *commands: str) -> Iterator[list[TimefuseProcess]]:
    processes = [TimefuseProcess(workdir, env, command=command) for command in commands]
    try:
        for process in processes:
            process.start(timeout=60)
        yield processes
    finally:
        for process in processes:
            with contextlib.suppress(Exception):
                process.stop(30)
            process.close()


def base_env(bootstrap: str, dsn: str, run: str, partitions: int) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_PARTITIONS": str(partitions),
        "TIMEFUSE_KAFKA_INGEST_TOPIC": f"bench-{run}.ingest",
        "TIMEFUSE_KAFKA_CONSUMER_GROUP": f"bench-{run}",
        "DATABASE_URL": dsn,
        "TIMEFUSE_LOG_LEVEL": "warning",
    }


async def baselines(args: argparse.Namespace, bootstrap: str, dsn: str) -> None:
    print("1. raw baselines")
    events = make_events(args.events, datetime.now(UTC) + timedelta(days=1))
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, args.partitions)
    config = KafkaClientSettings(bootstrap).producer_config()
    records = [(e.source.encode(), encode_event(e)) for e in events]
    line(
        "confluent-kafka producer, same envelopes, acks=all",
        len(records),
        produce_all(config, topic, records),
    )
    seconds = await raw_store_insert(dsn, events, args.batch)
    line(f"PostgresEventStore.insert_many, batches of {args.batch}", len(events), seconds)


async def ingestion(args: argparse.Namespace, bootstrap: str, dsn: str, workdir: Path) -> None:
    print("2. ingestion: POST /events/batch -> Kafka -> timefuse ingest -> PostgreSQL")
    env = base_env(bootstrap, dsn, uuid.uuid4().hex[:8], args.partitions)
    with started(workdir, env, "api", "ingest") as processes:
        api = processes[0]
        await post_batches(api.base_url, args.batch, args.batch, 1)  # warm-up: topic, group
        await wait_for_count(dsn, args.batch, processes)
        started_at = time.perf_counter()
        accepted = await post_batches(api.base_url, args.events, args.batch, args.clients)
        submitted = time.perf_counter() - started_at
        await wait_for_count(dsn, args.batch + accepted, processes)
        persisted = time.perf_counter() - started_at
    line(f"accepted (202), {args.clients} clients x {args.batch}/request", accepted, submitted)
    line("accepted and persisted in PostgreSQL", accepted, persisted)


async def backlog(args: argparse.Namespace, bootstrap: str, dsn: str, workdir: Path) -> None:
    """``timefuse ingest`` alone, draining a topic filled beforehand (a spike's aftermath)."""
    env = base_env(bootstrap, dsn, uuid.uuid4().hex[:8], args.partitions)
    topic = env["TIMEFUSE_KAFKA_INGEST_TOPIC"]
    create_topic(bootstrap, topic, args.partitions)
    events = make_events(args.events, datetime.now(UTC) + timedelta(days=1))
    config = KafkaClientSettings(bootstrap).producer_config()
    produce_all(config, topic, [(e.source.encode(), encode_event(e)) for e in events])
    with started(workdir, env, "ingest") as processes:
        await wait_for_count(dsn, 1, processes)
        first, started_at = count(dsn), time.perf_counter()
        await wait_for_count(dsn, len(events), processes)
        seconds = time.perf_counter() - started_at
    line("timefuse ingest alone, draining a backlog into PostgreSQL", len(events) - first, seconds)


async def delivery(args: argparse.Namespace, bootstrap: str, dsn: str, workdir: Path) -> None:
    print("3. Kafka delivery: due events -> timefuse dispatch -> topic")
    run = uuid.uuid4().hex[:8]
    topic, raw_topic = f"bench-{run}.out", f"bench-{run}.raw"
    for name in (topic, raw_topic):
        create_topic(bootstrap, name, args.partitions)
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    payloads = [(f"job-{n}".encode(), PAYLOAD_BYTES) for n in range(args.events)]
    line(
        "confluent-kafka producer, same payloads, acks=all",
        len(payloads),
        produce_all(delivery_producer_config(settings), raw_topic, payloads),
    )
    due = datetime.now(UTC)
    events = make_events(args.events, due, delivery_type="kafka", destination=topic)
    seconds = await plugin_alone(settings, events[: min(len(events), 20_000)])
    line("KafkaDelivery.deliver alone, 1000 in flight", min(len(events), 20_000), seconds)
    await raw_store_insert(dsn, events, args.batch)
    env = base_env(bootstrap, dsn, run, args.partitions)
    # Every event goes to one topic: the per-destination cap (a guard for slow webhooks)
    # would be what is measured. --destination-concurrency 100 shows its cost.
    env["TIMEFUSE_DESTINATION_CONCURRENCY"] = str(args.destination_concurrency)
    done = "status = 'COMPLETED'"
    with started(workdir, env, "dispatch") as processes:
        # Timed from the first completion: the process's start-up is not delivery.
        await wait_for_count(dsn, 1, processes, done)
        first, started_at = count(dsn, done), time.perf_counter()
        await wait_for_count(dsn, len(events), processes, done)
        seconds = time.perf_counter() - started_at
    label = f"timefuse dispatch, due -> COMPLETED (cap {args.destination_concurrency or 'none'})"
    line(label, len(events) - first, seconds)


async def plugin_alone(settings: Settings, events: list[Event]) -> float:
    """The delivery type without the dispatcher: 1000 deliveries in flight at a time."""
    kafka = KafkaDelivery(settings)
    await kafka.start()
    pending = iter(events)

    # Workers pulling from one iterator, not a semaphore: 20,000 tasks queued on an
    # asyncio.Semaphore cost more than the deliveries being measured.
    async def worker() -> None:
        for event in pending:
            outcome = await kafka.deliver(event, 1)
            if not outcome.succeeded:
                raise RuntimeError(outcome.error)

    try:
        await kafka.deliver(events[0], 1)  # the producer's id, once
        started_at = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(1000)))
        return time.perf_counter() - started_at
    finally:
        await kafka.stop()


async def main(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(kafka_broker()).bootstrap_servers
        server = stack.enter_context(postgres_server())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))

        def fresh(label: str) -> str:
            return server.create_database(f"bench_{label}_{uuid.uuid4().hex[:8]}")

        print(f"{args.events:,} events, batches of {args.batch}, {args.partitions} partitions")
        await baselines(args, bootstrap, fresh("raw"))
        await ingestion(args, bootstrap, fresh("ingest"), workdir)
        await backlog(args, bootstrap, fresh("backlog"), workdir)
        await delivery(args, bootstrap, fresh("delivery"), workdir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=24)
    parser.add_argument(
        "--destination-concurrency",
        type=int,
        default=0,
        help="TIMEFUSE_DESTINATION_CONCURRENCY of the dispatcher (default 0: no cap)",
    )
    asyncio.run(main(parser.parse_args()))
