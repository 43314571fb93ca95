"""The built-in ``kafka`` delivery type: each event becomes one record on the topic it names.

Registered only when ``KAFKA_BOOTSTRAP_SERVERS`` is set: without a cluster, ``kafka`` is not a
delivery type at all, and submissions naming it are refused as an unknown type.

The record's value is the event's payload, byte for byte (the JSON the client sent, encoded
once, never a JSON string of it); its key is the ``external_job_id``, so one job's records stay
in order; its headers carry ``timefuse-event-id`` (the same on every retry: consumers drop
duplicates by it), ``timefuse-source``, ``timefuse-scheduled-at`` and ``timefuse-attempt``.
Success is the broker's acknowledgement with ``acks=all`` from an idempotent producer.

Failures that retrying cannot fix (no permission on the topic, a record over the size limit,
an invalid topic) are permanent; everything else is retriable, an unknown topic included:
topics are often created after the events that will feed them are scheduled, and the error
text says which topic was missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from timefuse.config import Settings
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.plugins.hookspecs import hookimpl
from timefuse.ports.delivery import DeliveryType

log = structlog.get_logger("timefuse.kafka")

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# timefuse's own topics (and, through '.' and '_' colliding in Kafka's metric names, their
# lookalikes), and Kafka's internal ones (__consumer_offsets...).
_RESERVED_PREFIXES = ("timefuse.", "timefuse_", "__")

PERMANENT_ERRORS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
        KafkaError._INVALID_ARG,
    }
)

# Room above the producer's own message timeout: its delivery report, with librdkafka's
# reason, should arrive before the dispatcher cuts the attempt off.
TIMEOUT_MARGIN_SECONDS = 5.0
POLL_SECONDS = 0.1
QUEUE_FULL_WAIT_SECONDS = 0.005
CONTENT_TYPE = ("content-type", b"application/json")

Report = tuple["asyncio.Future[KafkaError | None]", "KafkaError | None"]


class TopicRules:
    """Which topics Kafka delivery may write to."""

    def __init__(self, settings: Settings) -> None:
        self._allowed = frozenset(settings.kafka_allowed_topics)
        # The configured ingest topics may have been renamed away from the timefuse. prefix.
        self._own = frozenset({settings.kafka_ingest_topic, settings.kafka_dead_letter_topic})

    def validate(self, destination: str) -> str | None:
        """``None`` when events may be delivered to topic ``destination``, else why not."""
        if not _TOPIC.match(destination) or destination in (".", ".."):
            return (
                "must be a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-' "
                "(and not '.' or '..')"
            )
        if destination in self._own or destination.startswith(_RESERVED_PREFIXES):
            return f"topic {destination!r} is reserved for timefuse or Kafka itself"
        if self._allowed and destination not in self._allowed:
            return f"topic {destination!r} is not in TIMEFUSE_KAFKA_ALLOWED_TOPICS"
        return None


def producer_config(settings: Settings) -> dict[str, Any]:
    """The delivery producer's properties: durable and ordered by default, then overrides."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        # librdkafka's own log lines go through logging, not straight to stderr.
        "logger": logging.getLogger("timefuse.kafka"),
        **settings.kafka_client_config,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 5,
        "message.timeout.ms": int(settings.kafka_delivery_timeout * 1000),
        **settings.kafka_producer_config,
    }


class KafkaDelivery:
    """One producer per process, opened by :meth:`start` and flushed by :meth:`stop`.

    A thread polls the producer for delivery reports and hands each round of them to the event
    loop, so :meth:`deliver` awaits the broker's answer without blocking the loop.
    """

    def __init__(self, settings: Settings) -> None:
        self._rules = TopicRules(settings)
        self._config = producer_config(settings)
        self._timeout = settings.kafka_delivery_timeout
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Filled by delivery callbacks on the thread that polls; only one thread polls at once.
        self._reports: list[Report] = []

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._stopping.clear()
        self._loop = asyncio.get_running_loop()
        self._producer = Producer({**self._config, "error_cb": _log_error})
        self._poller = threading.Thread(
            target=self._poll, args=(self._producer,), name="timefuse-kafka-delivery", daemon=True
        )
        self._poller.start()

    async def stop(self) -> None:
        producer, poller = self._producer, self._poller
        self._producer = self._poller = None
        if producer is None or poller is None:
            return
        self._stopping.set()
        await asyncio.to_thread(poller.join)
        # Settles what is in flight, so no dispatcher task waits on a report that never comes.
        if await asyncio.to_thread(producer.flush, self._timeout):
            # Not acknowledged in time: fail them now (as _PURGE_QUEUE) rather than leave
            # their deliveries waiting for reports that a closed producer never sends.
            producer.purge()
            await asyncio.to_thread(producer.poll, 0)
        self._hand_over()

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        reason = self._rules.validate(event.destination)
        if reason is not None:
            return DeliveryOutcome.permanent(f"invalid destination: {reason}")
        producer = self._producer
        if producer is None:
            return DeliveryOutcome.retriable("kafka delivery is not started")
        deadline = time.monotonic() + self._timeout
        try:
            # No timer of our own: librdkafka reports every record by message.timeout.ms, and
            # the dispatcher cuts off an attempt that outlives timeout_seconds anyway.
            error = await (await self._send(producer, event, attempt, deadline))
        except KafkaException as exc:
            error = exc.args[0]
        except TimeoutError:
            return DeliveryOutcome.retriable(
                f"the local Kafka producer queue stayed full for {self._timeout:g} s"
            )
        return DeliveryOutcome.success() if error is None else classify(error, event.destination)

    async def _send(
        self, producer: Producer, event: Event, attempt: int, deadline: float
    ) -> asyncio.Future[KafkaError | None]:
        report: asyncio.Future[KafkaError | None] = asyncio.get_running_loop().create_future()
        headers: list[tuple[str, str | bytes | None]] = [
            ("timefuse-event-id", event.id.encode()),
            ("timefuse-source", event.source.encode()),
            ("timefuse-scheduled-at", event.scheduled_at.isoformat().encode()),
            ("timefuse-attempt", str(attempt).encode()),
            CONTENT_TYPE,
        ]
        on_delivery = functools.partial(self._on_delivery, report)
        while True:
            try:
                producer.produce(
                    event.destination,
                    event.payload,  # sent as it was received: no second encoding
                    event.external_job_id.encode(),
                    headers=headers,
                    on_delivery=on_delivery,
                )
                return report
            except BufferError:
                # The local queue is full: wait for reports to drain it, without blocking.
                if time.monotonic() >= deadline:
                    raise TimeoutError from None
                await asyncio.sleep(QUEUE_FULL_WAIT_SECONDS)

    def _poll(self, producer: Producer) -> None:
        while not self._stopping.is_set():
            producer.poll(POLL_SECONDS)
            self._hand_over()

    def _hand_over(self) -> None:
        # One wake-up of the loop per poll round rather than per record: under load a wake-up
        # per record costs more than producing the record.
        if not self._reports or self._loop is None:
            return
        reports, self._reports = self._reports, []
        with contextlib.suppress(RuntimeError):  # the loop has closed; nobody is waiting
            self._loop.call_soon_threadsafe(_settle, reports)

    def _on_delivery(
        self, report: asyncio.Future[KafkaError | None], error: KafkaError | None, _: Message
    ) -> None:
        self._reports.append((report, error))


def classify(error: KafkaError, topic: str) -> DeliveryOutcome:
    """Map a Kafka error onto an outcome: permanent for :data:`PERMANENT_ERRORS`."""
    text = f"Kafka {error.name()}: {error.str()}"
    if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        text = f"{text} (topic {topic!r} does not exist, or is not visible to timefuse)"
    if error.code() in PERMANENT_ERRORS:
        return DeliveryOutcome.permanent(text)
    return DeliveryOutcome.retriable(text)


def _settle(reports: list[Report]) -> None:
    for report, error in reports:
        if not report.done():  # else the dispatcher gave up on it
            report.set_result(error)


def _log_error(error: KafkaError) -> None:
    log.warning("kafka delivery producer", error=f"{error.name()}: {error.str()}")


@hookimpl
def register_delivery_types(register: Callable[[DeliveryType], None], settings: Settings) -> None:
    if not settings.kafka_enabled:
        return
    delivery = KafkaDelivery(settings)
    register(
        DeliveryType(
            name="kafka",
            validate_destination=TopicRules(settings).validate,
            deliver=delivery.deliver,
            start=delivery.start,
            stop=delivery.stop,
            timeout_seconds=settings.kafka_delivery_timeout + TIMEOUT_MARGIN_SECONDS,
            # The producer batches records per partition: a cap of a few hundred in flight
            # would starve its batches. The broker's own quotas protect it.
            destination_concurrency=10_000,
        )
    )
