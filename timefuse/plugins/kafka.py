"""The built-in ``kafka`` delivery type: each event becomes one record on the topic it names.

Registered only when ``KAFKA_BOOTSTRAP_SERVERS`` is set: without a cluster, ``kafka`` is not a
delivery type at all, and submissions naming it are refused as an unknown type.

The record's value is the event's payload, byte for byte (the JSON the client sent, encoded
once, never a JSON string of it); its key is the ``external_job_id``, so one job's records stay
in order; its headers carry ``timefuse-event-id`` (the same on every retry: consumers drop
duplicates by it), ``timefuse-source``, ``timefuse-scheduled-at`` and ``timefuse-attempt``.
Success is the broker's acknowledgement with ``acks=all`` from an idempotent producer.

Records go through the Kafka adapter's producer, the one the ingest buffer uses (a built-in
type may use adapters; a third-party plugin sees only the plugin API): its thread serves
delivery reports to the event loop, and a producer that fails fatally is replaced.

Failures that retrying cannot fix (no permission on the topic, a record over the size limit,
an invalid topic) are permanent; everything else is retriable, an unknown topic included:
topics are often created after the events that will feed them are scheduled, and the error
text says which topic was missing.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError

from timefuse.adapters.kafka.clients import KafkaClientSettings
from timefuse.adapters.kafka.producer import AsyncProducer, Headers, ProduceFailed
from timefuse.config import KafkaSettings, Section, comma_list, number, setting
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.plugins.hookspecs import hookimpl
from timefuse.ports.delivery import DeliveryType

__all__ = [
    "KafkaDelivery",
    "KafkaDeliverySettings",
    "KafkaPlugin",
    "TopicRules",
    "classify",
    "cluster_clients",
    "delivery_producer_config",
]

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
# Room above the message timeout before an attempt stops waiting for a report that a stopped
# producer will never send.
REPORT_MARGIN_SECONDS = 1.0
CONTENT_TYPE = ("content-type", b"application/json")


@dataclass(frozen=True)
class KafkaDeliverySettings(Section, prefix="TIMEFUSE_KAFKA_", title="kafka delivery"):
    """What the ``kafka`` delivery type reads besides the cluster (:class:`KafkaSettings`)."""

    allowed_topics: tuple[str, ...] = setting(
        "",
        "Comma list: Kafka delivery only to these topics (empty: any but timefuse.*).",
        comma_list,
    )
    delivery_timeout_seconds: float = setting(
        "30",
        "Kafka delivery: how long one record may wait for the broker's acknowledgement.",
        number(0.1),
    )


class TopicRules:
    """Which topics Kafka delivery may write to.

    :param allowed: when not empty, the only topics allowed.
    :param reserved: timefuse's own topics, refused even when renamed away from ``timefuse.``.
    """

    def __init__(self, allowed: Iterable[str] = (), reserved: Iterable[str] = ()) -> None:
        self._allowed = frozenset(allowed)
        self._own = frozenset(reserved)

    @classmethod
    def of(cls, cluster: KafkaSettings, delivery: KafkaDeliverySettings) -> TopicRules:
        return cls(delivery.allowed_topics, (cluster.ingest_topic, cluster.dead_letter_topic))

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


def cluster_clients(cluster: KafkaSettings) -> KafkaClientSettings:
    """How timefuse's Kafka clients reach ``cluster``, with the operator's properties."""
    return KafkaClientSettings(
        cluster.bootstrap_servers,
        client=cluster.client_config,
        producer=cluster.producer_config,
        consumer=cluster.consumer_config,
    )


def delivery_producer_config(
    cluster: KafkaSettings, delivery: KafkaDeliverySettings
) -> dict[str, Any]:
    """The delivery producer's properties: the adapter's durable defaults, then overrides."""
    return cluster_clients(cluster).producer_config(
        **{"linger.ms": 5, "message.timeout.ms": int(delivery.delivery_timeout_seconds * 1000)}
    )


class KafkaDelivery:
    """One producer per process, opened by :meth:`start` and flushed by :meth:`stop`."""

    def __init__(self, cluster: KafkaSettings, settings: KafkaDeliverySettings) -> None:
        self._rules = TopicRules.of(cluster, settings)
        self._config = delivery_producer_config(cluster, settings)
        self._timeout = settings.delivery_timeout_seconds
        self._producer: AsyncProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = AsyncProducer(self._config, name="timefuse-kafka-delivery")
        producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # Settles what is in flight, so no attempt waits on a report that never comes.
            await producer.stop(self._timeout)

    async def deliver(self, event: Event, attempt: int) -> DeliveryOutcome:
        reason = self._rules.validate(event.destination)
        if reason is not None:
            return DeliveryOutcome.permanent(f"invalid destination: {reason}")
        producer = self._producer
        if producer is None:
            return DeliveryOutcome.retriable("kafka delivery is not started")
        try:
            # librdkafka reports every record by message.timeout.ms; the wait's own bound
            # only covers a producer stopped (or replaced) while the record was queued.
            report = await producer.enqueue(
                event.destination,
                event.payload,  # sent as it was received: no second encoding
                key=event.external_job_id.encode(),
                headers=_headers(event, attempt),
                deadline=time.monotonic() + self._timeout,
            )
            await asyncio.wait_for(report, self._timeout + REPORT_MARGIN_SECONDS)
        except ProduceFailed as exc:
            if exc.error is not None:
                return classify(exc.error, event.destination)
            return DeliveryOutcome.retriable(str(exc))
        except TimeoutError:
            return DeliveryOutcome.retriable(
                f"no acknowledgement from Kafka within {self._timeout:g} s"
            )
        return DeliveryOutcome.success()


def _headers(event: Event, attempt: int) -> Headers:
    return [
        ("timefuse-event-id", event.id.encode()),
        ("timefuse-source", event.source.encode()),
        ("timefuse-scheduled-at", event.scheduled_at.isoformat().encode()),
        ("timefuse-attempt", str(attempt).encode()),
        CONTENT_TYPE,
    ]


def classify(error: KafkaError, topic: str) -> DeliveryOutcome:
    """Map a Kafka error onto an outcome: permanent for :data:`PERMANENT_ERRORS`."""
    text = f"Kafka {error.name()}: {error.str()}"
    if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        text = f"{text} (topic {topic!r} does not exist, or is not visible to timefuse)"
    if error.code() in PERMANENT_ERRORS:
        return DeliveryOutcome.permanent(text)
    return DeliveryOutcome.retriable(text)


class KafkaPlugin:
    """The built-in ``kafka`` delivery type, registered through the same hooks as any plugin.

    :param cluster: timefuse's Kafka section: the brokers, the client properties, and the
        ingest topics, which deliveries may not write to.
    """

    def __init__(self, cluster: KafkaSettings | None = None) -> None:
        self._cluster = cluster or KafkaSettings()

    @hookimpl
    def declare_settings(self) -> type[KafkaDeliverySettings]:
        return KafkaDeliverySettings

    @hookimpl
    def register_delivery_types(
        self, register: Callable[[DeliveryType], None], settings: KafkaDeliverySettings
    ) -> None:
        if not self._cluster.enabled:
            return
        delivery = KafkaDelivery(self._cluster, settings)
        register(
            DeliveryType(
                name="kafka",
                validate_destination=TopicRules.of(self._cluster, settings).validate,
                deliver=delivery.deliver,
                start=delivery.start,
                stop=delivery.stop,
                timeout_seconds=settings.delivery_timeout_seconds + TIMEOUT_MARGIN_SECONDS,
                # The producer batches records per partition: a cap of a few hundred in flight
                # would starve its batches. The broker's own quotas protect it.
                destination_concurrency=10_000,
            )
        )
