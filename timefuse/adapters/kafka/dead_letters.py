"""Reading back the dead letter topic: the ingest records the consumer refused, newest first.

The ingest consumer sends each poison record there with its original key (the source) and
value, the reason in the ``timefuse-error`` header and where it came from in
``timefuse-origin`` (:mod:`timefuse.adapters.kafka.stream`). An operator wants the latest few:
each read takes at most ``limit`` records from the end of every partition, through a
consumer that is assigned partitions (it joins no group and commits nothing), and keeps the
newest ``limit`` of them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from timefuse.adapters.kafka.clients import KafkaClientSettings, describe
from timefuse.adapters.kafka.stream import ERROR_HEADER
from timefuse.ports.ingest import StreamUnavailable

ORIGIN_HEADER = "timefuse-origin"
# A record's value is shown up to this many bytes: enough to recognise it, bounded per page.
VALUE_SHOWN_BYTES = 4096
READ_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RefusedRecord:
    """One record of the dead letter topic.

    :param value: its first :data:`VALUE_SHOWN_BYTES` bytes; ``value_bytes`` is its size.
    :param error: why the ingest consumer refused it (``None`` if the header is missing).
    :param origin: ``<ingest topic>/<partition>/<offset>`` it was read from.
    """

    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes
    value_bytes: int
    error: str | None
    origin: str | None


class KafkaDeadLetterReader:
    """Reads the newest records of ``topic`` on demand, one read at a time."""

    def __init__(
        self, settings: KafkaClientSettings, topic: str, timeout: float = READ_TIMEOUT_SECONDS
    ) -> None:
        self.topic = topic
        self._settings = settings
        self._timeout = timeout
        # A page reloaded in a loop queues its reads instead of opening consumers in parallel.
        self._one_at_a_time = asyncio.Lock()

    async def newest(self, limit: int) -> list[RefusedRecord]:
        """Up to ``limit`` records, the newest first (by timestamp, then offset).

        :raises StreamUnavailable: the cluster did not answer within the timeout.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        async with self._one_at_a_time:
            return await asyncio.to_thread(self._read, limit)

    def _read(self, limit: int) -> list[RefusedRecord]:
        consumer = Consumer(
            self._settings.consumer_config(
                "timefuse-dead-letter-reader",
                **{"enable.partition.eof": True, "auto.offset.reset": "latest"},
            )
        )
        try:
            messages = self._tail(consumer, limit)
        except KafkaException as exc:
            raise StreamUnavailable(f"Kafka: can't read {self.topic}: {describe(exc)}") from exc
        finally:
            consumer.close()
        records = [_record(message) for message in messages]
        records.sort(key=_newest_first)
        return records[:limit]

    def _tail(self, consumer: Consumer, limit: int) -> list[Message]:
        deadline = time.monotonic() + self._timeout
        topics = consumer.list_topics(self.topic, timeout=self._timeout).topics
        found = topics.get(self.topic)
        if found is None or found.error is not None:
            return []  # not created yet: nothing was ever refused
        starts = []
        for partition in sorted(found.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=self._timeout
            )
            if high > low:
                starts.append(TopicPartition(self.topic, partition, max(low, high - limit)))
        if not starts:
            return []
        consumer.assign(starts)
        waiting = {tp.partition for tp in starts}
        messages: list[Message] = []
        # Each partition's end is reported (enable.partition.eof) once its last record is read.
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "reading took too long"))
            for message in consumer.consume(500, min(left, 0.5)):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(message.partition() or 0)
                else:
                    raise KafkaException(error)
        return messages


def _record(message: Message) -> RefusedRecord:
    raw = message.headers() or []
    # A consumed record's headers come as (name, value) pairs; the type also allows a dict.
    pairs = raw.items() if isinstance(raw, dict) else raw
    headers = {name: value for name, value in pairs if value is not None}
    kind, stamp = message.timestamp()
    value = message.value() or b""
    partition, offset = message.partition(), message.offset()
    # Both are set on every consumed record.
    assert partition is not None
    assert offset is not None
    return RefusedRecord(
        partition=partition,
        offset=offset,
        timestamp=None if kind == 0 else datetime.fromtimestamp(stamp / 1000, UTC),
        key=message.key(),
        value=value[:VALUE_SHOWN_BYTES],
        value_bytes=len(value),
        error=_text(headers.get(ERROR_HEADER)),
        origin=_text(headers.get(ORIGIN_HEADER)),
    )


def _text(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "replace")


def _newest_first(record: RefusedRecord) -> tuple[float, int, int]:
    moment = record.timestamp.timestamp() if record.timestamp else 0.0
    return (-moment, -record.offset, record.partition)
