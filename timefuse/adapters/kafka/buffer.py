"""The Kafka ingest buffer: the API's submissions become records of the ingest topic."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaException

from timefuse.adapters.kafka.clients import KafkaClientSettings, TopicSpec, ensure_topics
from timefuse.adapters.kafka.envelope import encode_event
from timefuse.adapters.kafka.producer import AsyncProducer, ProduceFailed
from timefuse.domain.event import Event
from timefuse.ports.ingest import BufferUnavailable

log = logging.getLogger("timefuse.kafka")

PING_TIMEOUT_SECONDS = 2.0

# Told how many records a submission had acknowledged, and why it failed if it did.
ProduceObserver = Callable[[int, "str | None"], None]


class KafkaIngestBuffer:
    """Durable when :meth:`submit` returns: the broker acknowledged every record (acks=all).

    Each event becomes one record keyed by its source, so one client's events share a
    partition and reach the store in the order they were accepted. Nothing is deduplicated
    here: :meth:`submit` returns the submitted ids, and the store drops duplicates later.
    """

    def __init__(
        self,
        settings: KafkaClientSettings,
        topic: TopicSpec,
        *,
        submit_timeout: float = 5.0,
        observer: ProduceObserver | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._timeout = submit_timeout
        self._observer = observer
        # A record older than a submission's timeout has been answered 503 already: fail it
        # rather than have it land long after the client was told it didn't.
        timeout_ms = max(1000, int(submit_timeout * 1000))
        limits: dict[str, object] = {"message.timeout.ms": timeout_ms}
        if topic.max_message_bytes is not None:
            # An accepted event must fit: librdkafka's own default (1,000,000) is below the
            # largest payload a submission may hold.
            limits["message.max.bytes"] = topic.max_message_bytes
        self._producer = AsyncProducer(
            settings.producer_config(**limits),
            name="timefuse-ingest-producer",
        )
        self._topic_ready = False
        self._topic_lock = asyncio.Lock()

    async def open(self) -> None:
        self._producer.start()
        try:
            await self._ensure_topic()
        except BufferUnavailable as exc:
            # The API still starts: submissions answer 503 until Kafka is reachable.
            log.warning("ingest topic not ready yet: %s", exc)

    async def close(self) -> None:
        await self._producer.stop()

    async def ping(self) -> None:
        await self._ensure_topic()
        try:
            await self._producer.ping(self._topic.name, PING_TIMEOUT_SECONDS)
        except ProduceFailed as exc:
            raise BufferUnavailable(f"Kafka: {exc}") from exc

    async def submit(self, events: Sequence[Event]) -> dict[str, str]:
        started = time.monotonic()
        deadline = started + self._timeout
        await self._ensure_topic()
        futures: list[asyncio.Future[None]] = []
        try:
            for event in events:
                value = encode_event(event)
                futures.append(
                    await self._producer.enqueue(
                        self._topic.name, value, key=event.source, deadline=deadline
                    )
                )
            await self._settle(futures, deadline)
        except ProduceFailed as exc:
            for future in futures:  # nobody will look at their outcome now
                future.cancel()
            self._observe(0, str(exc))
            raise BufferUnavailable(f"Kafka did not accept the events: {exc}") from exc
        self._observe(len(events), None)
        return {event.id: event.id for event in events}

    async def _settle(self, futures: list[asyncio.Future[None]], deadline: float) -> None:
        if not futures:
            return
        done, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        for future in pending:
            future.cancel()
        if pending:
            last = self._producer.last_error
            raise ProduceFailed(
                f"{len(pending)} of {len(futures)} records not acknowledged within "
                f"{self._timeout:g} s" + (f" (last error: {last})" if last else "")
            )
        # Every outcome is read, so none is reported as an exception nobody retrieved.
        errors = [error for future in done if (error := future.exception()) is not None]
        if errors:
            raise ProduceFailed(f"{len(errors)} of {len(futures)} records failed: {errors[0]}")

    async def _ensure_topic(self) -> None:
        if self._topic_ready:
            return
        async with self._topic_lock:
            if self._topic_ready:
                return
            try:
                await ensure_topics(self._settings, [self._topic], self._timeout)
            except KafkaException as exc:
                raise BufferUnavailable(
                    f"Kafka: can't reach the ingest topic {self._topic.name!r}: {exc!r}"
                ) from exc
            self._topic_ready = True

    def _observe(self, acknowledged: int, error: str | None) -> None:
        if self._observer is not None:
            self._observer(acknowledged, error)
