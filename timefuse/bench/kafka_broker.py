"""A single-node Apache Kafka broker (KRaft) run from its jars, for benchmarks and tests.

``timefuse bench day`` starts one when no broker is named (``--kafka``,
``KAFKA_BOOTSTRAP_SERVERS``); the test suite starts the same one (``tests/support``). The broker
and its controller are one JVM on two free loopback ports, with its data in a temporary
directory removed by :meth:`LocalKafkaBroker.close`. The jars come from Maven Central through
``scripts/kafka/fetch-kafka.sh`` in a source checkout (cached under ``~/.cache/timefuse``), or
from the directory ``TIMEFUSE_KAFKA_LIBS`` names.

Topics are never created automatically (``auto.create.topics.enable=false``): as on a
production cluster, the code under test creates the topics it uses.
"""

from __future__ import annotations

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
FETCH_SCRIPT = REPO_ROOT / "scripts" / "kafka" / "fetch-kafka.sh"
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "timefuse"
ENV_LIBS = "TIMEFUSE_KAFKA_LIBS"
ENV_LOG_LEVEL = "TIMEFUSE_TEST_KAFKA_LOG_LEVEL"  # broker.log level, default WARN

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 600.0

# Small heap by default: CI and developer machines are shared 2-core boxes. C1-only JIT and the
# serial GC halve start-up time and CPU (measured: ~2 s vs ~4 s). A benchmark passes its own.
JVM_FLAGS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# For a sustained load: the full JIT and a larger heap, still one GC thread.
THROUGHPUT_JVM_FLAGS = (
    "-Xms512m",
    "-Xmx1g",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_log = logging.getLogger(__name__)


class KafkaBrokerError(RuntimeError):
    """The broker could not be provided, started or stopped."""


def _probe_config(bootstrap_servers: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        # librdkafka backs off up to 10 s between reconnects by default, which would add
        # seconds to every start(); poll a freshly booting broker fast.
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 250,
        "socket.connection.setup.timeout.ms": 2000,
        # "Connection refused" while the JVM boots is expected, not news.
        "log_level": 0,
        "error_cb": lambda _err: None,
    }


def _metadata_is_ready(metadata: Any) -> bool:
    """Broker registered and every partition has a leader (so after a restart producers and
    consumers work at once instead of hitting NOT_LEADER)."""
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
    """Poll metadata until the broker answers; :class:`KafkaBrokerError` on timeout or as soon
    as ``is_alive()`` says the broker process is gone."""
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


def find_kafka_libs() -> Path:
    """The directory of the broker's jars: ``TIMEFUSE_KAFKA_LIBS``, else fetched (or found in
    the cache) by ``scripts/kafka/fetch-kafka.sh``, else the newest complete cached copy."""
    named = os.environ.get(ENV_LIBS, "").strip()
    if named:
        if not Path(named).is_dir():
            raise KafkaBrokerError(f"{ENV_LIBS}={named!r} is not a directory")
        return Path(named)
    if FETCH_SCRIPT.exists():
        return _run_fetch_script()
    cached = sorted(CACHE_ROOT.glob("kafka-*/.complete"), reverse=True)
    if cached:
        return cached[0].parent / "libs"
    raise KafkaBrokerError(
        "no Kafka broker jars: set KAFKA_BOOTSTRAP_SERVERS (or --kafka) to use a running "
        f"broker, or {ENV_LIBS} to a directory of the broker's jars"
    )


def _run_fetch_script() -> Path:
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


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now. Sockets stay open until all are picked so the ports
    differ; a later race is handled by :class:`LocalKafkaBroker`."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _new_cluster_id() -> str:
    # Same format as `kafka-storage random-uuid`, without paying for a JVM; like it, never one
    # starting with "-", which the tool's argument parser would read as an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


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


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
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
        # One node: every replication factor / ISR must be 1 or the internal topics (offsets,
        # transactions, share groups) can never be created.
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
        # After kill() the restarted controller refuses the broker's new registration until
        # the old one's session expires (default 9 s). Heartbeats stay in-process, so a short
        # session is still safe.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        # Code under test creates its topics explicitly.
        "auto.create.topics.enable": "false",
        # Fewer threads and a 16 MiB (not 128 MiB) compaction buffer keep the broker within
        # its small heap on a shared 2-core machine.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _log4j2_properties(level: str) -> str:
    # Kafka 4.x logs through slf4j -> log4j2; without a config it would log INFO to stdout.
    # The broker's stdout/stderr go to broker.log.
    return (
        "status = warn\n"
        # log4j's own JVM shutdown hook would stop logging while Kafka is still shutting
        # down, hiding why a stop() was slow or unclean.
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


# Strong references on purpose: a broker dropped without close() must still be found (and its
# JVM stopped) at exit.
_live_local_brokers: set[LocalKafkaBroker] = set()


@atexit.register
def _close_leftover_brokers() -> None:
    # A run that forgets close() (or dies on an exception) must not leave a JVM behind on a
    # shared machine.
    for broker in list(_live_local_brokers):
        broker.close()


class LocalKafkaBroker:
    """Single-node KRaft Kafka as a child JVM, with data in a private temp dir.

    ``start()`` after ``stop()`` resumes on the same port with the same data; ``close()``
    stops it and removes everything.
    """

    kind = "local"
    restartable = True
    _BIND_RETRIES = 3

    def __init__(
        self, libs_dir: Path | None = None, jvm_flags: tuple[str, ...] = JVM_FLAGS
    ) -> None:
        self._libs_dir = libs_dir
        self._jvm_flags = jvm_flags
        self._root = Path(tempfile.mkdtemp(prefix="timefuse-kafka-"))
        self._data_dir = self._root / "data"
        self._config = self._root / "server.properties"
        self._log4j_config = self._root / "log4j2.properties"
        self._log_file = self._root / "broker.log"
        self._port, self._controller_port = free_ports(2)
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

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running() and self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        if not self._root.exists():
            raise KafkaBrokerError("broker was closed; create a new one")
        if self._libs_dir is None:
            self._libs_dir = find_kafka_libs()
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
            # Another process took a port between free_ports() and the JVM's bind(): pick
            # new ports and start over with fresh storage.
            self._port, self._controller_port = free_ports(2)
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._formatted = False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._terminate(signal.SIGKILL, timeout=10.0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)
        _live_local_brokers.discard(self)

    def wait_until_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        wait_until_ready(self.bootstrap_servers, timeout)

    def _write_config(self) -> None:
        properties = server_properties(self._port, self._controller_port, self._data_dir)
        self._config.write_text(properties)
        level = os.environ.get(ENV_LOG_LEVEL, "WARN")
        self._log4j_config.write_text(_log4j2_properties(level))

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        assert self._libs_dir is not None
        return [
            _java(),
            *self._jvm_flags,
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
                # Own session: a Ctrl-C in the terminal reaches the caller, which then stops
                # the broker cleanly, instead of killing it mid-run.
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

    def __repr__(self) -> str:
        return f"<LocalKafkaBroker {self.bootstrap_servers}>"
