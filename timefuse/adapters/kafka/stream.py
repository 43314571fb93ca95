"""The ingest topic as the consumer side of the buffer: a consumer group member and its DLQ.

confluent-kafka's consumer is not meant to be called from several threads at once, and its
calls block; every call goes through one dedicated thread, so the event loop never waits on
the network and the consumer never sees two callers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from timefuse.adapters.kafka.clients import (
    KafkaClientSettings,
    TopicSpec,
    describe,
    ensure_topics,
)
from timefuse.adapters.kafka.envelope import EnvelopeError, decode_event
from timefuse.adapters.kafka.producer import AsyncProducer, ProduceFailed
from timefuse.ports.ingest import IngestRecord, StreamUnavailable

log = logging.getLogger("timefuse.kafka")

T = TypeVar("T")

ERROR_HEADER = "timefuse-error"
DEAD_LETTER_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 10.0

# Seeking a partition this member no longer owns fails with these; its new owner starts from
# the committed offset, which is all a rewind asks for.
_NOT_OURS = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError._STATE})


class KafkaIngestStream:
    """Reads the ingest topic as a member of ``group``; poison records go to ``dead_letters``.

    :param topic: the ingest topic (created if missing, like the dead letter topic).
    :param dead_letters: where :meth:`dead_letter` sends records, with their original key and
        value and the reason in the ``timefuse-error`` header.
    """

    def __init__(
        self,
        settings: KafkaClientSettings,
        topic: TopicSpec,
        dead_letters: TopicSpec,
        group: str,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._dead_letters = dead_letters
        self._group = group
        self._dlq_producer = AsyncProducer(
            settings.producer_config(), name="timefuse-dead-letter-producer"
        )
        self._consumer: Consumer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._assigned: set[int] = set()
        self._lag: dict[int, int] = {}

    async def open(self) -> None:
        if self._consumer is not None:
            return
        try:
            await ensure_topics(self._settings, [self._topic, self._dead_letters])
        except KafkaException as exc:
            raise StreamUnavailable(
                f"Kafka: can't create the ingest topics: {describe(exc)}"
            ) from exc
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="timefuse-ingest-consumer")
        config = self._settings.consumer_config(
            self._group, stats_cb=self._on_stats, error_cb=self._on_error
        )
        self._consumer = await self._call(Consumer, config)
        await self._call(
            self._consumer.subscribe,
            [self._topic.name],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._dlq_producer.start()

    async def close(self) -> None:
        consumer, executor = self._consumer, self._executor
        self._consumer = None
        if consumer is not None and executor is not None:
            try:
                # Leaves the group at once, so the partitions move on without a timeout.
                await asyncio.wait_for(self._call(consumer.close), CLOSE_TIMEOUT_SECONDS)
            except (KafkaException, RuntimeError, TimeoutError) as exc:
                log.warning("closing the ingest consumer failed: %r", exc)
        if executor is not None:
            executor.shutdown(wait=False)
        self._executor = None
        await self._dlq_producer.stop()

    async def fetch(self, max_records: int, timeout: float) -> list[IngestRecord]:
        consumer = self._require_consumer()
        try:
            messages = await self._call(consumer.consume, max_records, timeout)
        except (KafkaException, RuntimeError) as exc:
            raise StreamUnavailable(f"Kafka: consume failed: {describe(exc)}") from exc
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                # Consumer-level news (a partition's end, a broker gone), not a record.
                log.warning("ingest consumer: %s", describe(error))
                continue
            records.append(_to_record(message))
        return records

    async def commit(self, records: Sequence[IngestRecord]) -> None:
        offsets = [
            TopicPartition(self._topic.name, partition, offset + 1)
            for partition, offset in _last_offsets(records).items()
        ]
        if not offsets:
            return
        consumer = self._require_consumer()
        try:
            committed = await self._call(consumer.commit, offsets=offsets, asynchronous=False)
        except (KafkaException, RuntimeError) as exc:
            raise StreamUnavailable(f"Kafka: commit failed: {describe(exc)}") from exc
        failed = [tp for tp in committed or () if tp.error is not None]
        if failed:
            raise StreamUnavailable(
                "Kafka: commit failed for partitions "
                + ", ".join(f"{tp.partition} ({describe(tp.error)})" for tp in failed)
            )

    async def rewind(self, records: Sequence[IngestRecord]) -> None:
        consumer = self._require_consumer()
        for partition, offset in _first_offsets(records).items():
            position = TopicPartition(self._topic.name, partition, offset)
            try:
                await self._call(consumer.seek, position)
            except KafkaException as exc:
                if exc.args[0].code() not in _NOT_OURS:
                    raise StreamUnavailable(f"Kafka: seek failed: {describe(exc)}") from exc
                log.info("partition %d was reassigned before its rewind", partition)

    async def dead_letter(self, record: IngestRecord, error: str) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            (ERROR_HEADER, error.encode()),
            ("timefuse-origin", f"{self._topic.name}/{record.partition}/{record.offset}".encode()),
        ]
        try:
            await self._dlq_producer.produce(
                self._dead_letters.name,
                record.value or b"",
                key=record.key,
                headers=headers,
                timeout=DEAD_LETTER_TIMEOUT_SECONDS,
            )
        except ProduceFailed as exc:
            raise StreamUnavailable(f"Kafka: dead letter not acknowledged: {exc}") from exc

    async def lag(self) -> Mapping[int, int]:
        return dict(self._lag)

    def _require_consumer(self) -> Consumer:
        if self._consumer is None:
            raise StreamUnavailable("the ingest stream is not open")
        return self._consumer

    async def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        if self._executor is None:
            raise StreamUnavailable("the ingest stream is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(*args, **kwargs))

    # Callbacks below run on the consumer's thread, inside consume().

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)
        log.info("ingest partitions assigned: %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.difference_update(tp.partition for tp in partitions)
        self._lag = {p: lag for p, lag in self._lag.items() if p in self._assigned}

    def _on_stats(self, stats_json: str) -> None:
        partitions = json.loads(stats_json).get("topics", {}).get(self._topic.name, {})
        lag: dict[int, int] = {}
        for number, partition in partitions.get("partitions", {}).items():
            value = partition.get("consumer_lag", -1)
            if int(number) in self._assigned and value >= 0:
                lag[int(number)] = int(value)
        self._lag = lag

    def _on_error(self, error: KafkaError) -> None:
        log.warning("ingest consumer: %s", describe(error))


def _to_record(message: Message) -> IngestRecord:
    key, value = message.key(), message.value()
    partition, offset = message.partition(), message.offset()
    # Both are set on every consumed record; only error messages may lack them.
    assert partition is not None
    assert offset is not None
    try:
        event = decode_event(value)
    except EnvelopeError as exc:
        return IngestRecord(partition, offset, key, value, None, str(exc))
    except Exception as exc:  # anything undecodable is poison for the dead letter topic
        return IngestRecord(partition, offset, key, value, None, f"{type(exc).__name__}: {exc}")
    return IngestRecord(partition, offset, key, value, event)


def _last_offsets(records: Sequence[IngestRecord]) -> dict[int, int]:
    last: dict[int, int] = {}
    for record in records:
        last[record.partition] = max(record.offset, last.get(record.partition, -1))
    return last


def _first_offsets(records: Sequence[IngestRecord]) -> dict[int, int]:
    first: dict[int, int] = {}
    for record in records:
        current = first.get(record.partition)
        first[record.partition] = record.offset if current is None else min(current, record.offset)
    return first
