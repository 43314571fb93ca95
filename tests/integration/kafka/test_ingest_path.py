"""REST -> Kafka -> store inside one process: order, poison records, a store outage.

The API runs in process (over ASGI) and the ingest consumer as a task, so the test can see the
store's insert calls and take the store down at will; the broker is real.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
from confluent_kafka import Producer

from tests.integration.kafka.conftest import Names, at, committed_offsets, eventually, read_topic
from tests.support.kafka_broker import KafkaBroker
from timefuse.adapters.kafka.envelope import encode_event
from timefuse.adapters.memory import MemoryStore
from timefuse.config import Settings
from timefuse.domain.event import Event
from timefuse.entrypoints.api.app import create_app
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap, build_stream
from timefuse.ports.store import StoreUnavailable
from timefuse.service.ingest_consumer import IngestConsumer, IngestSettings
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.kafka

PARTITIONS = 4


class ObservedStore(MemoryStore):
    """The in-memory store, recording each inserted batch's ids, and able to play unavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.batches: list[list[str]] = []

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        if self.down:
            raise StoreUnavailable("the test took the store down")
        ids = await super().insert_many(events)
        self.batches.append([event.id for event in events])
        return ids

    def inserted(self) -> list[str]:
        return [event_id for batch in self.batches for event_id in batch]


@dataclass
class Running:
    tf: Timefuse
    store: ObservedStore
    client: httpx.AsyncClient

    async def submit(self, source: str, n: int) -> str:
        body = {
            "external_job_id": f"{source}-{n}",
            "source": source,
            "scheduled_at": at(3600),
            "delivery_type": "http",
            "destination": "https://receiver.example/hook",
            "payload": {"source": source, "n": n},
        }
        response = await self.client.post("/api/v1/events", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["data"]["id"])


@pytest.fixture
async def running(kafka: KafkaBroker, names: Names, tmp_path: Path) -> AsyncIterator[Running]:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_PARTITIONS": str(PARTITIONS),
            "TIMEFUSE_KAFKA_INGEST_TOPIC": names.ingest,
            "TIMEFUSE_KAFKA_CONSUMER_GROUP": names.group,
            "TIMEFUSE_PLUGINS": "",
        }
    )
    store = ObservedStore()
    tf = bootstrap(settings, store=store)
    await tf.open()
    # A short hold: a store outage longer than a second also takes the give-back path.
    consumer = IngestConsumer(
        stream=build_stream(settings.kafka, settings.ingest),
        store=tf.store,
        metrics=tf.metrics,
        settings=IngestSettings(hold_seconds=1.0),
        wakeup=tf.wakeup,
    )
    stop = asyncio.Event()
    consuming = asyncio.create_task(consumer.run(stop))
    app = create_app(service=tf.service, metrics=tf.metrics, settings=settings.api)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://timefuse") as client:
        yield Running(tf, store, client)
    stop.set()
    await consuming
    await tf.close()


async def test_one_sources_events_reach_the_store_in_the_order_they_were_accepted(
    running: Running, kafka: KafkaBroker, names: Names
) -> None:
    sources = ["alpha", "beta", "gamma"]
    accepted: dict[str, list[str]] = {source: [] for source in sources}
    for n in range(15):  # interleaved, one request each, each answered before the next
        for source in sources:
            accepted[source].append(await running.submit(source, n))
    total = 15 * len(sources)
    await eventually(lambda: len(running.store.inserted()) >= total, timeout=20)

    inserted = running.store.inserted()
    for source in sources:
        assert [i for i in inserted if i in set(accepted[source])] == accepted[source]
    # On the topic: one partition per source, in acceptance order.
    records = read_topic(kafka.bootstrap_servers, names.ingest, total)
    for source in sources:
        mine = [r for r in records if r.key() == source.encode()]
        assert len({r.partition() for r in mine}) == 1
        in_offset_order = sorted(mine, key=lambda r: r.offset() or 0)
        ids = [msgspec.json.decode(r.value() or b"{}")["id"] for r in in_offset_order]
        assert ids == accepted[source]


async def test_poison_records_go_to_the_dead_letter_topic_and_their_neighbours_are_stored(
    running: Running, kafka: KafkaBroker, names: Names
) -> None:
    before = await running.submit("shop", 1)
    invalid = make_event(source="shop", external_job_id="")  # breaks a submission rule
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    producer.produce(names.ingest, b"\xffnot an envelope", b"shop")
    producer.produce(names.ingest, encode_event(invalid), b"shop")
    assert producer.flush(10) == 0
    after = await running.submit("shop", 2)

    async def both_stored() -> bool:
        return all([await running.tf.store.get(before), await running.tf.store.get(after)])

    await eventually(both_stored, timeout=20)
    dead = read_topic(kafka.bootstrap_servers, names.dead_letters, 2)
    assert [(r.key(), r.value()) for r in dead] == [
        (b"shop", b"\xffnot an envelope"),
        (b"shop", encode_event(invalid)),
    ]
    errors = [dict(r.headers() or [])["timefuse-error"].decode() for r in dead]
    assert "not a timefuse event envelope" in errors[0]
    assert "external_job_id" in errors[1]
    assert await running.tf.store.get(invalid.id) is None
    # Counted once the batch that held them is done, a moment after its records are out.
    dead_lettered = running.tf.metrics.ingest_dead_lettered._value
    await eventually(lambda: dead_lettered.get() >= 2, timeout=10)
    assert dead_lettered.get() == 2


async def test_nothing_is_committed_while_the_store_is_down_and_all_is_stored_after(
    running: Running, kafka: KafkaBroker, names: Names
) -> None:
    running.store.down = True
    ids = [await running.submit("outage", n) for n in range(20)]
    # Five failed tries take 3 s of backoff: past the 1 s hold, so the batch was given back.
    await eventually(lambda: running.tf.metrics.ingest_store_retries._value.get() >= 5, 20)
    assert committed_offsets(kafka.bootstrap_servers, names.group, names.ingest, PARTITIONS) == 0

    running.store.down = False
    await eventually(lambda: set(ids) <= set(running.store.inserted()), timeout=20)
    await eventually(
        lambda: (
            committed_offsets(kafka.bootstrap_servers, names.group, names.ingest, PARTITIONS)
            == len(ids)
        ),
        timeout=10,
    )
    assert all([await running.tf.store.get(event_id) for event_id in ids])


async def test_http_options_and_callbacks_travel_through_the_ingest_topic(running: Running) -> None:
    http = {
        "method": "PUT",
        "headers": {"X-Tenant": "acme"},
        "body": "<order id='9'/>",
        "content_type": "application/xml",
        "timeout_seconds": 4.0,
        "success_statuses": [200, 404],
    }
    body = {
        "external_job_id": "with-options",
        "source": "alpha",
        "scheduled_at": at(3600),
        "delivery_type": "http",
        "destination": "https://receiver.example/hook",
        "http": http,
        "callback_url": "https://client.example/done",
    }
    response = await running.client.post("/api/v1/events", json=body)
    assert response.status_code == 202, response.text
    event_id = response.json()["data"]["id"]
    await eventually(lambda: event_id in running.store.inserted(), timeout=20)

    stored = await running.tf.store.get(event_id)
    assert stored is not None
    assert stored.http == http
    assert stored.payload == b"null"
    assert stored.callback_url == "https://client.example/done"


async def test_the_largest_events_a_submission_may_hold_pass_through_the_ingest_topic(
    running: Running,
) -> None:
    # A payload of the whole 1 MiB allowed, and an http.body of 1 MiB of bytes (base64, a
    # third larger), each beside an ordinary event: all three answered 202 and stored.
    payload = {"blob": "x" * (1024 * 1024 - 20)}
    raw = base64.b64encode(bytes(range(256)) * 4096).decode()
    bodies = [
        {"payload": payload},
        {"payload": None, "http": {"body": raw, "body_encoding": "base64"}},
        {"payload": {"n": 1}},
    ]
    ids = []
    for n, body in enumerate(bodies):
        event = {
            "external_job_id": f"large-{n}",
            "source": "large",
            "scheduled_at": at(3600),
            "delivery_type": "http",
            "destination": "https://receiver.example/hook",
            **body,
        }
        response = await running.client.post("/api/v1/events", json=event)
        assert response.status_code == 202, response.text[:500]
        ids.append(response.json()["data"]["id"])
    await eventually(lambda: set(ids) <= set(running.store.inserted()), timeout=20)
