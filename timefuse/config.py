"""Configuration: every setting, its environment variable and its default, in one place.

The seed's variable names are kept (``DB_HOST``, ``KAFKA_BOOTSTRAP_SERVERS``, ...); everything
else is ``TIMEFUSE_*``. Unset database and Kafka variables mean the embedded default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote


class ConfigError(ValueError):
    """A setting has a value timefuse can't use; the message names the variable."""


def _int(env: str, low: int = 0, high: int = 2**31) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{env} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{env} must be between {low} and {high}, got {value}")
        return value

    return parse


def _float(env: str, low: float = 0.0) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{env} must be a number, got {text!r}") from None
        if value < low:
            raise ConfigError(f"{env} must be at least {low:g}, got {value:g}")
        return value

    return parse


def _str(text: str) -> str:
    return text


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


KafkaConfig = Mapping[str, "str | int | float | bool"]


def _kafka_config(env: str) -> Callable[[str], KafkaConfig]:
    # librdkafka properties as one JSON object ({"linger.ms": 5, "sasl.mechanism": "PLAIN"}):
    # one variable per property would need a naming scheme for dotted keys, and JSON keeps
    # numbers and booleans typed.
    def parse(text: str) -> KafkaConfig:
        if not text.strip():
            return {}
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{env} must be a JSON object: {exc}") from None
        if not isinstance(value, dict) or not all(
            isinstance(v, str | int | float | bool) for v in value.values()
        ):
            raise ConfigError(
                f"{env} must be a JSON object of librdkafka properties to strings, numbers "
                f"or booleans, got {text!r}"
            )
        return value

    return parse


def _optional_port(text: str) -> int | None:
    return _int("TIMEFUSE_METRICS_PORT", 0, 65535)(text) if text.strip() else None


@dataclass(frozen=True, slots=True)
class Var:
    """One environment variable: its name, default (as text) and meaning."""

    env: str
    default: str
    help: str


def _setting(env: str, default: str, help: str, parse: Callable[[str], Any] = _str) -> Any:
    return field(default=None, metadata={"var": Var(env, default, help), "parse": parse})


@dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        "DATABASE_URL",
        "",
        "Event store: sqlite:///path or postgresql://... Unset: DB_HOST..., else ./timefuse.db.",
    )
    db_host: str = _setting("DB_HOST", "", "PostgreSQL host (selects PostgreSQL when set).")
    db_port: int = _setting("DB_PORT", "5432", "PostgreSQL port.", _int("DB_PORT", 1, 65535))
    db_name: str = _setting("DB_NAME", "timefuse", "PostgreSQL database.")
    db_username: str = _setting("DB_USERNAME", "timefuse", "PostgreSQL user.")
    db_password: str = _setting("DB_PASSWORD", "", "PostgreSQL password.")
    db_pool_size: int = _setting(
        "TIMEFUSE_DB_POOL_SIZE", "10", "PostgreSQL pool size.", _int("TIMEFUSE_DB_POOL_SIZE", 1)
    )
    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS", "", "Kafka brokers; set to use the Kafka ingest buffer."
    )
    kafka_partitions: int = _setting(
        "KAFKA_PARTITIONS", "24", "Partitions of the ingest topic.", _int("KAFKA_PARTITIONS", 1)
    )
    kafka_ingest_topic: str = _setting(
        "TIMEFUSE_KAFKA_INGEST_TOPIC", "timefuse.ingest", "Ingest topic name."
    )
    kafka_allowed_topics: tuple[str, ...] = _setting(
        "TIMEFUSE_KAFKA_ALLOWED_TOPICS",
        "",
        "Comma list: Kafka delivery only to these topics (empty: any but timefuse.*).",
        _csv,
    )
    kafka_dlq_topic: str = _setting(
        "TIMEFUSE_KAFKA_DLQ_TOPIC",
        "",
        "Topic for ingest records that can't be decoded or validated (empty: <ingest>.dlq).",
    )
    kafka_replication_factor: int = _setting(
        "TIMEFUSE_KAFKA_REPLICATION_FACTOR",
        "-1",
        "Replication factor of the topics timefuse creates (-1: the broker's default).",
        _int("TIMEFUSE_KAFKA_REPLICATION_FACTOR", -1, 32767),
    )
    kafka_consumer_group: str = _setting(
        "TIMEFUSE_KAFKA_CONSUMER_GROUP", "timefuse-ingest", "Consumer group of `timefuse ingest`."
    )
    kafka_submit_timeout: float = _setting(
        "TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS",
        "5",
        "How long the API waits for Kafka to acknowledge a submission before answering 503.",
        _float("TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS", 0.1),
    )
    kafka_ingest_batch_size: int = _setting(
        "TIMEFUSE_KAFKA_INGEST_BATCH_SIZE",
        "1000",
        "Most records the ingest consumer writes to the store in one transaction.",
        _int("TIMEFUSE_KAFKA_INGEST_BATCH_SIZE", 1, 100_000),
    )
    kafka_ingest_batch_ms: int = _setting(
        "TIMEFUSE_KAFKA_INGEST_BATCH_MS",
        "50",
        "Longest the ingest consumer waits to fill a batch before writing what it has.",
        _int("TIMEFUSE_KAFKA_INGEST_BATCH_MS", 1, 60_000),
    )
    kafka_delivery_timeout: float = _setting(
        "TIMEFUSE_KAFKA_DELIVERY_TIMEOUT_SECONDS",
        "30",
        "Kafka delivery: how long one record may wait for the broker's acknowledgement.",
        _float("TIMEFUSE_KAFKA_DELIVERY_TIMEOUT_SECONDS", 0.1),
    )
    kafka_client_config: KafkaConfig = _setting(
        "TIMEFUSE_KAFKA_CLIENT_CONFIG",
        "",
        "JSON object of librdkafka properties for every Kafka client (security, SASL...).",
        _kafka_config("TIMEFUSE_KAFKA_CLIENT_CONFIG"),
    )
    kafka_producer_config: KafkaConfig = _setting(
        "TIMEFUSE_KAFKA_PRODUCER_CONFIG",
        "",
        "JSON object of librdkafka properties overriding the producers' defaults.",
        _kafka_config("TIMEFUSE_KAFKA_PRODUCER_CONFIG"),
    )
    kafka_consumer_config: KafkaConfig = _setting(
        "TIMEFUSE_KAFKA_CONSUMER_CONFIG",
        "",
        "JSON object of librdkafka properties overriding the ingest consumer's defaults.",
        _kafka_config("TIMEFUSE_KAFKA_CONSUMER_CONFIG"),
    )
    poll_interval_ms: int = _setting(
        "SCHEDULER_POLL_INTERVAL_MS",
        "1000",
        "Longest the dispatcher sleeps without a wake-up (a backstop, not the main trigger).",
        _int("SCHEDULER_POLL_INTERVAL_MS", 1),
    )
    batch_size: int = _setting(
        "SCHEDULER_BATCH_SIZE",
        "500",
        "Events claimed per batch.",
        _int("SCHEDULER_BATCH_SIZE", 1, 100_000),
    )
    retention_days: int = _setting(
        "CLEANUP_RETENTION_DAYS",
        "7",
        "Days terminal events are kept.",
        _int("CLEANUP_RETENTION_DAYS", 0),
    )
    host: str = _setting("TIMEFUSE_HOST", "127.0.0.1", "Address the API listens on.")
    port: int = _setting(
        "TIMEFUSE_PORT", "8080", "Port the API listens on.", _int("TIMEFUSE_PORT", 0, 65535)
    )
    concurrency: int = _setting(
        "TIMEFUSE_CONCURRENCY",
        "1000",
        "Deliveries in flight at once, across all destinations.",
        _int("TIMEFUSE_CONCURRENCY", 1),
    )
    lease_seconds: float = _setting(
        "TIMEFUSE_LEASE_SECONDS",
        "60",
        "How long a claim holds an event before another dispatcher may take it back.",
        _float("TIMEFUSE_LEASE_SECONDS", 1.0),
    )
    shutdown_timeout_seconds: float = _setting(
        "TIMEFUSE_SHUTDOWN_TIMEOUT_SECONDS",
        "10",
        "On SIGTERM, how long in-flight deliveries may finish before their leases are released.",
        _float("TIMEFUSE_SHUTDOWN_TIMEOUT_SECONDS"),
    )
    retry_base_ms: int = _setting(
        "TIMEFUSE_RETRY_BASE_MS", "1000", "Retry backoff base.", _int("TIMEFUSE_RETRY_BASE_MS")
    )
    retry_cap_ms: int = _setting(
        "TIMEFUSE_RETRY_CAP_MS", "3600000", "Retry backoff cap.", _int("TIMEFUSE_RETRY_CAP_MS")
    )
    http_connect_timeout: float = _setting(
        "TIMEFUSE_HTTP_CONNECT_TIMEOUT_SECONDS",
        "5",
        "HTTP delivery connect timeout.",
        _float("TIMEFUSE_HTTP_CONNECT_TIMEOUT_SECONDS"),
    )
    http_total_timeout: float = _setting(
        "TIMEFUSE_HTTP_TIMEOUT_SECONDS",
        "30",
        "HTTP delivery total timeout.",
        _float("TIMEFUSE_HTTP_TIMEOUT_SECONDS"),
    )
    max_body_bytes: int = _setting(
        "TIMEFUSE_MAX_BODY_BYTES",
        "10485760",
        "Largest request body the API reads (413 above).",
        _int("TIMEFUSE_MAX_BODY_BYTES", 1),
    )
    max_payload_bytes: int = _setting(
        "TIMEFUSE_MAX_PAYLOAD_BYTES",
        "1048576",
        "Largest payload of one event.",
        _int("TIMEFUSE_MAX_PAYLOAD_BYTES", 1),
    )
    plugins: tuple[str, ...] | None = _setting(
        "TIMEFUSE_PLUGINS",
        "",
        "Comma list of external plugins (entry point names) to load; unset: all installed.",
        _csv,
    )
    log_level: str = _setting("TIMEFUSE_LOG_LEVEL", "info", "Log level.")
    log_format: str = _setting(
        "TIMEFUSE_LOG_FORMAT", "auto", "json, console, or auto (console on a terminal)."
    )
    worker_id: str = _setting(
        "TIMEFUSE_WORKER_ID", "", "This process's name in leases (default: host:pid)."
    )
    metrics_port: int | None = _setting(
        "TIMEFUSE_METRICS_PORT",
        "",
        "Port for /metrics and /health in processes without the API (ingest, dispatch).",
        _optional_port,
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (the process environment by default)."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            var: Var = f.metadata["var"]
            raw = source.get(var.env)
            if f.name == "plugins" and raw is None:
                values[f.name] = None
                continue
            values[f.name] = f.metadata["parse"](var.default if raw is None else raw)
        return cls(**values)

    @property
    def kafka_enabled(self) -> bool:
        return bool(self.kafka_bootstrap_servers.strip())

    @property
    def kafka_dead_letter_topic(self) -> str:
        return self.kafka_dlq_topic or f"{self.kafka_ingest_topic}.dlq"

    @property
    def store_url(self) -> str:
        """The event store to use: ``sqlite:///...`` or ``postgresql://...``."""
        if self.database_url:
            return self.database_url
        if self.db_host:
            user = quote(self.db_username, safe="")
            auth = f"{user}:{quote(self.db_password, safe='')}" if self.db_password else user
            return f"postgresql://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"
        return "sqlite:///timefuse.db"


def variables() -> list[Var]:
    """Every environment variable timefuse reads, for ``--help`` and the README."""
    return [f.metadata["var"] for f in fields(Settings)]
