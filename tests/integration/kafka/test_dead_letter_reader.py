"""Reading the dead letter topic back, newest first, from a real broker."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, Message, Producer

from tests.integration.kafka.conftest import Names
from tests.support.kafka_broker import KafkaBroker
from timefuse.adapters.kafka.clients import KafkaClientSettings, TopicSpec, ensure_topics
from timefuse.adapters.kafka.dead_letters import VALUE_SHOWN_BYTES, KafkaDeadLetterReader

pytestmark = pytest.mark.kafka

# (partition, timestamp in ms, value): written out of time order across three partitions.
WRITTEN = [
    (0, 1_000, b"a0"), (1, 2_000, b"b0"), (2, 3_000, b"c0"), (0, 4_000, b"a1"),
    (2, 5_000, b"c1"), (1, 6_000, b"b1"), (0, 7_000, b"a2"), (1, 8_000, b"b2"),
]  # fmt: skip


async def test_the_newest_records_come_first_from_every_partition(
    kafka: KafkaBroker, names: Names
) -> None:
    settings = KafkaClientSettings(kafka.bootstrap_servers)
    await ensure_topics(settings, [TopicSpec(names.dead_letters, 3)])
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _: Message) -> None:
        if error is not None:
            failures.append(error)

    # In the last minute: a broker refuses timestamps far from its own clock.
    base = int(time.time() * 1000) - 60_000
    for partition, stamp, value in WRITTEN:
        producer.produce(
            names.dead_letters,
            value,
            key=b"shop",
            partition=partition,
            timestamp=base + stamp,
            headers=[("timefuse-error", f"bad {value.decode()}".encode()),
                     ("timefuse-origin", f"{names.ingest}/{partition}/9".encode())],
            on_delivery=delivered,
        )  # fmt: skip
    big = b"x" * (VALUE_SHOWN_BYTES + 10)
    producer.produce(names.dead_letters, big, partition=2, timestamp=base + 9_000)
    assert producer.flush(10) == 0
    assert failures == []
    reader = KafkaDeadLetterReader(settings, names.dead_letters)

    newest = await reader.newest(4)
    everything = await reader.newest(100)

    assert [r.value[:2] for r in newest] == [b"xx", b"b2", b"a2", b"b1"]
    assert [r.value for r in everything[1:]] == [v for _, _, v in reversed(WRITTEN)]
    first, second = everything[0], everything[1]
    assert (first.value_bytes, len(first.value), first.error) == (len(big), VALUE_SHOWN_BYTES, None)
    assert (second.partition, second.offset, second.key) == (1, 2, b"shop")
    assert second.error == "bad b2"
    assert second.origin == f"{names.ingest}/1/9"
    assert second.timestamp is not None
    assert second.timestamp.timestamp() == (base + 8_000) / 1000


async def test_a_topic_that_was_never_created_holds_nothing(
    kafka: KafkaBroker, names: Names
) -> None:
    reader = KafkaDeadLetterReader(KafkaClientSettings(kafka.bootstrap_servers), names.dead_letters)

    assert await reader.newest(10) == []
