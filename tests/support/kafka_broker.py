"""A real Apache Kafka broker for the test suite (never a mock).

Three ways to get one, picked by :func:`create_kafka_broker`:

1. ``TIMEFUSE_TEST_KAFKA_BOOTSTRAP=host:port`` is set: that external broker, which
   the tests only connect to; ``start``/``stop``/``kill`` raise
   :class:`BrokerControlUnsupported` (check ``broker.restartable`` and skip).
2. A Docker engine answers: testcontainers' ``KafkaContainer`` in KRaft mode.
3. Otherwise (our CI machines have Java and Maven but no Docker): a single-node
   KRaft broker+controller JVM in a temp dir, run from the jars that
   ``scripts/kafka/fetch-kafka.sh`` resolves from Maven Central (cached): the
   broker ``timefuse bench`` starts too (:mod:`timefuse.bench.kafka_broker`).

``TIMEFUSE_TEST_KAFKA=docker`` or ``=local`` skips the probing and forces 2 or 3
(like ``TIMEFUSE_TEST_POSTGRES`` for the PostgreSQL server).

Typical use::

    with kafka_broker() as broker:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        ...
        broker.stop()   # broker outage, data dir kept
        broker.start()  # same port, same topics and data

Topics are not auto-created by the local and Docker brokers
(``auto.create.topics.enable=false``): like a production cluster, the code
under test has to create (or expect) its topics, and a typo in a topic name
fails loudly instead of silently creating a new topic.

Run this file directly for a self-check (produce, consume, restart, consume).
"""

from __future__ import annotations

import abc
import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.docker import docker_available
from timefuse.bench.kafka_broker import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    KafkaBrokerError,
    find_kafka_libs,
    free_ports,
    wait_until_ready,
)
from timefuse.bench.kafka_broker import LocalKafkaBroker as BenchLocalKafkaBroker

ENV_BOOTSTRAP = "TIMEFUSE_TEST_KAFKA_BOOTSTRAP"
ENV_MODE = "TIMEFUSE_TEST_KAFKA"  # "auto" (default) | "docker" | "local"
ENV_IMAGE = "TIMEFUSE_TEST_KAFKA_IMAGE"  # docker only

DEFAULT_DOCKER_IMAGE = "confluentinc/cp-kafka:7.6.0"  # testcontainers' tested default

__all__ = [
    "BrokerControlUnsupported",
    "KafkaBroker",
    "KafkaBrokerError",
    "LocalKafkaBroker",
    "create_kafka_broker",
    "fetch_kafka_libs",
    "kafka_broker",
    "wait_until_ready",
]


class BrokerControlUnsupported(KafkaBrokerError):
    """start()/stop() asked of a broker that the tests do not own."""


class KafkaBroker(abc.ABC):
    """A Kafka broker that tests can connect to and (usually) stop and restart."""

    #: "local", "docker" or "external"
    kind: str = "abstract"
    #: False when start()/stop()/kill() are unavailable: tests of outages should skip.
    restartable: bool = True

    @property
    @abc.abstractmethod
    def bootstrap_servers(self) -> str:
        """``host:port`` (``127.0.0.1:PORT`` locally); stable across stop()/start()."""

    @abc.abstractmethod
    def start(self) -> None:
        """(Re)start on the same port and data; return once it answers."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the broker, keeping its data so start() resumes it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and discard everything (idempotent)."""

    def kill(self) -> None:
        """Crash the broker (no clean shutdown); start() recovers its data."""
        raise BrokerControlUnsupported(f"the {self.kind} broker cannot be killed by the tests")

    def wait_until_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        wait_until_ready(self.bootstrap_servers, timeout)

    def __repr__(self) -> str:
        try:
            where = self.bootstrap_servers
        except KafkaBrokerError:
            where = "not started"
        return f"<{type(self).__name__} {where}>"


# --------------------------------------------------------------------------
# External broker
# --------------------------------------------------------------------------


class ExternalKafkaBroker(KafkaBroker):
    """A broker someone else runs (``TIMEFUSE_TEST_KAFKA_BOOTSTRAP``)."""

    kind = "external"
    restartable = False

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self._bootstrap_servers

    def _refuse(self, action: str) -> BrokerControlUnsupported:
        return BrokerControlUnsupported(
            f"cannot {action} the external Kafka broker {self._bootstrap_servers} "
            f"(${ENV_BOOTSTRAP}); skip such tests when `broker.restartable` is False"
        )

    def start(self) -> None:
        raise self._refuse("start")

    def stop(self) -> None:
        raise self._refuse("stop")

    def kill(self) -> None:
        raise self._refuse("kill")

    def close(self) -> None:
        pass  # not ours to stop


# --------------------------------------------------------------------------
# Docker (testcontainers)
# --------------------------------------------------------------------------


class ContainerKafkaBroker(KafkaBroker):
    """testcontainers' KafkaContainer (KRaft).

    The host port is bound explicitly rather than randomly so that a docker
    stop/start of the same container keeps both the port and the advertised
    listener baked into its start script; the container's filesystem (and so
    the topic data) survives stop/start, and close() removes it.
    """

    kind = "docker"
    _CONTAINER_PORT = 9093  # KafkaContainer's client listener

    def __init__(self, image: str | None = None) -> None:
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # testcontainers < 4.10 had it at the top level
            from testcontainers.kafka import KafkaContainer

        self._image = image or os.environ.get(ENV_IMAGE) or DEFAULT_DOCKER_IMAGE
        self._bootstrap_servers: str | None = None
        try:  # the constructor already talks to the engine
            self._container = (
                KafkaContainer(self._image)
                .with_kraft()
                .with_bind_ports(self._CONTAINER_PORT, free_ports(1)[0])
                .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
                .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
                .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            )
        except Exception as exc:
            raise self._unavailable(exc) from exc
        self._created = False
        self._running = False

    @property
    def bootstrap_servers(self) -> str:
        # Cached: docker reports no port mapping while the container is
        # stopped, but tests still need the address during an outage.
        if self._bootstrap_servers is None:
            raise KafkaBrokerError("docker broker not started yet")
        return self._bootstrap_servers

    def start(self) -> None:
        if self._running:
            return
        if not self._created:
            self._create()
        else:
            self._container.get_wrapped_container().start()
        self._running = True
        self.wait_until_ready()

    def _unavailable(self, exc: Exception) -> KafkaBrokerError:
        return KafkaBrokerError(
            f"could not start {self._image} through testcontainers ({exc}); "
            f"{ENV_MODE}=local runs a local broker instead"
        )

    def _create(self) -> None:
        try:
            self._container.start(timeout=int(READY_TIMEOUT_S))
        except Exception as exc:
            with contextlib.suppress(Exception):  # a half-started container must not linger
                self._container.stop()
            raise self._unavailable(exc) from exc
        self._created = True
        # The address testcontainers advertised in the container's listener.
        self._bootstrap_servers = self._container.get_bootstrap_server()

    def stop(self) -> None:
        if self._running:
            self._container.get_wrapped_container().stop(timeout=int(STOP_TIMEOUT_S))
            self._running = False

    def kill(self) -> None:
        if self._running:
            self._container.get_wrapped_container().kill()
            self._running = False

    def close(self) -> None:
        if self._created:
            self._container.stop()  # removes the container and its volumes
            self._created = self._running = False


# --------------------------------------------------------------------------
# Local JVM broker from Maven Central jars (the bench's own)
# --------------------------------------------------------------------------


def fetch_kafka_libs() -> Path:
    """Run scripts/kafka/fetch-kafka.sh (a no-op once cached); return the libs dir."""
    return find_kafka_libs()


class LocalKafkaBroker(BenchLocalKafkaBroker, KafkaBroker):
    """Single-node KRaft Kafka as a child JVM, with data in a private temp dir."""

    kind = "local"
    restartable = True

    def close(self) -> None:
        # Its data is deleted next: a graceful shutdown (up to STOP_TIMEOUT_S) would save
        # nothing anyone reads.
        self.kill()
        super().close()


# --------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------


def create_kafka_broker() -> KafkaBroker:
    """Pick the broker kind from the environment (see module docstring); not started."""
    external = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if external:
        return ExternalKafkaBroker(external)
    mode = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in ("auto", "docker", "local"):
        raise KafkaBrokerError(f"{ENV_MODE} must be auto, docker or local, not {mode!r}")
    if mode == "docker" or (mode == "auto" and docker_available()):
        return ContainerKafkaBroker()
    return LocalKafkaBroker()


@contextlib.contextmanager
def kafka_broker() -> Iterator[KafkaBroker]:
    """A started (or, if external, reachable) broker, closed on exit."""
    broker = create_kafka_broker()
    try:
        if broker.restartable:
            broker.start()
        else:
            broker.wait_until_ready()
        yield broker
    finally:
        broker.close()


# --------------------------------------------------------------------------
# Self-check: python -m tests.support.kafka_broker
# --------------------------------------------------------------------------


def _consume_one(bootstrap_servers: str, topic: str, group: str) -> bytes:
    """Read the first message of ``topic`` as ``group`` and commit past it."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                raise KafkaBrokerError(f"consume failed: {message.error()}")
            consumer.commit(message=message, asynchronous=False)
            return message.value() or b""
        raise KafkaBrokerError(f"no message on {topic!r} within 30s")
    finally:
        consumer.close()


def _committed_offset(bootstrap_servers: str, topic: str, group: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})
    try:
        [partition] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        return int(partition.offset)
    finally:
        consumer.close()


def _produce_one(bootstrap_servers: str, topic: str, payload: bytes) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined,unused-ignore]

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all"})
    producer.produce(topic, payload)
    if producer.flush(30) != 0:
        raise KafkaBrokerError("produce not acknowledged within 30s")
    # The clients are dropped here, so they don't log reconnect noise while
    # the self-check restarts the broker.


def _self_check() -> None:
    """Produce, consume, restart, then check data and committed offsets survived."""
    # Unique names: an external broker may have seen earlier runs.
    run = uuid.uuid4().hex[:8]
    topic, payload = f"timefuse-selfcheck-{run}", b"hello"
    started = time.monotonic()
    with kafka_broker() as broker:
        print(f"{broker!r} ready in {time.monotonic() - started:.1f}s")
        _produce_one(broker.bootstrap_servers, topic, payload)
        assert _consume_one(broker.bootstrap_servers, topic, f"selfcheck-{run}-1") == payload

        if not broker.restartable:
            print(f"{broker.kind} broker: restart check skipped")
        else:
            before = time.monotonic()
            broker.stop()
            stopped = time.monotonic()
            broker.start()
            print(f"stop {stopped - before:.1f}s, restart {time.monotonic() - stopped:.1f}s")
            assert _consume_one(broker.bootstrap_servers, topic, f"selfcheck-{run}-2") == payload
            assert _committed_offset(broker.bootstrap_servers, topic, f"selfcheck-{run}-1") == 1
    print("OK")


if __name__ == "__main__":
    _self_check()
