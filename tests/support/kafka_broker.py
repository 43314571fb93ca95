"""A real Apache Kafka broker for the test suite (never a mock).

Three ways to get one, picked by :func:`create_kafka_broker`:

1. ``TIMEFUSE_TEST_KAFKA_BOOTSTRAP=host:port`` is set: that external broker, which
   the tests only connect to; ``start``/``stop``/``kill`` raise
   :class:`BrokerControlUnsupported` (check ``broker.restartable`` and skip).
2. A Docker engine answers: testcontainers' ``KafkaContainer`` in KRaft mode.
3. Otherwise (our CI machines have Java and Maven but no Docker): a single-node
   KRaft broker+controller JVM in a temp dir, run from the jars that
   ``scripts/kafka/fetch-kafka.sh`` resolves from Maven Central (cached).

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
import atexit
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support.docker import docker_available

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "kafka" / "fetch-kafka.sh"

ENV_BOOTSTRAP = "TIMEFUSE_TEST_KAFKA_BOOTSTRAP"
ENV_MODE = "TIMEFUSE_TEST_KAFKA"  # "auto" (default) | "docker" | "local"
ENV_IMAGE = "TIMEFUSE_TEST_KAFKA_IMAGE"  # docker only
ENV_LOG_LEVEL = "TIMEFUSE_TEST_KAFKA_LOG_LEVEL"  # local only: broker.log level, default WARN

DEFAULT_DOCKER_IMAGE = "confluentinc/cp-kafka:7.6.0"  # testcontainers' tested default
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 600.0

# Small heap: CI and developer machines are shared 2-core boxes. C1-only JIT
# and the serial GC halve start-up time and CPU (measured: ~2 s vs ~4 s);
# tests don't need peak throughput.
JVM_FLAGS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_log = logging.getLogger(__name__)


class KafkaBrokerError(RuntimeError):
    """The test broker could not be provided, started or stopped."""


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
# Readiness probe (shared by all modes)
# --------------------------------------------------------------------------


def _probe_config(bootstrap_servers: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        # librdkafka backs off up to 10 s between reconnects by default, which
        # would add seconds to every start(); poll a freshly booting broker fast.
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 250,
        "socket.connection.setup.timeout.ms": 2000,
        # "Connection refused" while the JVM boots is expected, not news.
        "log_level": 0,
        "error_cb": lambda _err: None,
    }


def _metadata_is_ready(metadata: Any) -> bool:
    """Broker registered and every partition has a leader (so after a restart
    producers and consumers work at once instead of hitting NOT_LEADER)."""
    if not metadata.brokers:
        return False
    for topic in metadata.topics.values():
        if topic.error is not None:
            return False
        for partition in topic.partitions.values():
            if partition.error is not None or partition.leader < 0:
                return False
    return True


def wait_until_ready(
    bootstrap_servers: str,
    timeout: float = READY_TIMEOUT_S,
    is_alive: Callable[[], bool] = lambda: True,
) -> None:
    """Poll metadata until the broker answers; raise KafkaBrokerError on timeout
    or as soon as ``is_alive()`` says the broker process is gone."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(_probe_config(bootstrap_servers))
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while True:
        if not is_alive():
            raise KafkaBrokerError(f"broker at {bootstrap_servers} exited while starting")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaBrokerError(
                f"broker at {bootstrap_servers} not ready after {timeout:.0f}s: {last_error}"
            )
        try:
            metadata = admin.list_topics(timeout=min(2.0, remaining))
        except KafkaException as exc:
            last_error = str(exc)
        else:
            if _metadata_is_ready(metadata):
                return
            last_error = "metadata incomplete (no broker or leaderless partitions)"
        time.sleep(0.1)


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
                .with_bind_ports(self._CONTAINER_PORT, _free_ports(1)[0])
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
# Local JVM broker from Maven Central jars
# --------------------------------------------------------------------------


def fetch_kafka_libs() -> Path:
    """Run scripts/kafka/fetch-kafka.sh (a no-op once cached); return the libs dir."""
    result = subprocess.run(
        ["bash", str(FETCH_SCRIPT)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=FETCH_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise KafkaBrokerError(
            f"{FETCH_SCRIPT} failed (exit {result.returncode}):\n{result.stderr.strip()}"
        )
    libs = Path(result.stdout.strip().splitlines()[-1])
    if not libs.is_dir():
        raise KafkaBrokerError(f"{FETCH_SCRIPT} printed {libs!r}, which is not a directory")
    return libs


def _free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now. Sockets stay open until all are
    picked so the ports differ; a later race is handled by LocalKafkaBroker."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _new_cluster_id() -> str:
    # Same format as `kafka-storage random-uuid`, without paying for a JVM.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaBrokerError(
            "no `java` on PATH; Kafka needs Java 17+ (Debian: apt-get install default-jre-headless)"
        )
    return found


def _server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    settings = {
        # Single node acting as both KRaft controller and broker.
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # One node: every replication factor / ISR must be 1 or the internal
        # topics (offsets, transactions, share groups) can never be created.
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # 1 partition instead of 50 makes the first consumer-group join fast.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After kill() the restarted controller refuses the broker's new
        # registration until the old one's session expires (default 9 s).
        # Heartbeats stay in-process, so a short session is still safe.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # See the module docstring: tests create their topics explicitly.
        "auto.create.topics.enable": "false",
        # Fewer threads and a 16 MiB (not 128 MiB) compaction buffer keep the
        # broker within its small heap on a shared 2-core machine.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _log4j2_properties(level: str) -> str:
    # Kafka 4.x logs through slf4j -> log4j2; without a config it would log
    # INFO to stdout. The broker's stdout/stderr go to broker.log.
    return (
        "status = warn\n"
        # log4j's own JVM shutdown hook would stop logging while Kafka is
        # still shutting down, hiding why a stop() was slow or unclean.
        "shutdownHook = disable\n"
        "appender.console.type = Console\n"
        "appender.console.name = STDOUT\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = [%d] %p %m (%c)%n\n"
        f"rootLogger.level = {level}\n"
        "rootLogger.appenderRef.console.ref = STDOUT\n"
    )


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Strong references on purpose: a broker object that a test dropped without
# close() must still be found (and its JVM stopped) at exit.
_live_local_brokers: set[LocalKafkaBroker] = set()


@atexit.register
def _close_leftover_brokers() -> None:
    # A test run that forgets close() (or dies on an exception) must not leave
    # a 512 MiB JVM behind on a shared machine.
    for broker in list(_live_local_brokers):
        broker.close()


class LocalKafkaBroker(KafkaBroker):
    """Single-node KRaft Kafka as a child JVM, with data in a private temp dir."""

    kind = "local"
    _BIND_RETRIES = 3

    def __init__(self, libs_dir: Path | None = None) -> None:
        self._libs_dir = libs_dir
        self._root = Path(tempfile.mkdtemp(prefix="timefuse-kafka-"))
        self._data_dir = self._root / "data"
        self._config = self._root / "server.properties"
        self._log4j_config = self._root / "log4j2.properties"
        self._log_file = self._root / "broker.log"
        self._port, self._controller_port = _free_ports(2)
        self._formatted = False
        self._proc: subprocess.Popen[bytes] | None = None
        _live_local_brokers.add(self)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def log_file(self) -> Path:
        return self._log_file

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        if not self._root.exists():
            raise KafkaBrokerError("broker was closed; create a new one")
        if self._libs_dir is None:
            self._libs_dir = fetch_kafka_libs()
        if self._formatted:
            self._launch()  # a restart must keep its port: no retry on new ports
            return
        for attempt in range(1, self._BIND_RETRIES + 1):
            self._write_config()
            self._format_storage()
            try:
                self._launch()
                return
            except KafkaBrokerError:
                port_taken = "Address already in use" in _tail(self._log_file)
                if attempt == self._BIND_RETRIES or not port_taken:
                    raise
            # Another process took a port between _free_ports() and the JVM's
            # bind(): pick new ports and start over with fresh storage.
            self._port, self._controller_port = _free_ports(2)
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._formatted = False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._terminate(signal.SIGKILL, timeout=10.0)

    def close(self) -> None:
        # Its data is deleted next: a graceful shutdown (up to STOP_TIMEOUT_S) would save
        # nothing anyone reads.
        self.kill()
        shutil.rmtree(self._root, ignore_errors=True)
        _live_local_brokers.discard(self)

    # -- internals ---------------------------------------------------------

    def _write_config(self) -> None:
        properties = _server_properties(self._port, self._controller_port, self._data_dir)
        self._config.write_text(properties)
        level = os.environ.get(ENV_LOG_LEVEL, "WARN")
        self._log4j_config.write_text(_log4j2_properties(level))

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        assert self._libs_dir is not None
        return [
            _java(),
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self._log4j_config}",
            "-cp",
            str(self._libs_dir / "*"),  # expanded by java itself
            main_class,
            *args,
        ]

    def _format_storage(self) -> None:
        command = self._java_command(
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(self._config),
            "--cluster-id",
            _new_cluster_id(),
        )
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise KafkaBrokerError(
                f"kafka storage format failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        self._formatted = True

    def _launch(self) -> None:
        with self._log_file.open("ab") as log:
            banner = f"\n===== start {time.strftime('%H:%M:%S')} {self.bootstrap_servers} =====\n"
            log.write(banner.encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._java_command("kafka.Kafka", str(self._config)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._root,
                # Own session: a Ctrl-C in the terminal reaches pytest, which
                # then stops the broker cleanly, instead of killing it mid-test.
                start_new_session=True,
            )
        try:
            wait_until_ready(self.bootstrap_servers, READY_TIMEOUT_S, self.is_running)
        except KafkaBrokerError as exc:
            self._terminate(signal.SIGKILL, timeout=10.0)
            tail = _tail(self._log_file)
            raise KafkaBrokerError(f"{exc}\n--- {self._log_file} (tail) ---\n{tail}") from None

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning(
                "Kafka broker pid %s ignored %s for %.0fs; killing it", proc.pid, sig.name, timeout
            )
            proc.kill()
            proc.wait()


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
