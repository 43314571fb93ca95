"""timefuse's own settings, one section per component that reads them.

The seed's variable names are kept (``DB_HOST``, ``KAFKA_BOOTSTRAP_SERVERS``, ...); everything
else is ``TIMEFUSE_*``. Unset database and Kafka variables mean the embedded default. The
delivery types' settings are declared by their plugins (:mod:`timefuse.plugins.http_settings`,
:mod:`timefuse.plugins.kafka`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from timefuse.config.declare import ConfigError, Section, setting
from timefuse.config.parsers import (
    DestinationLimitTable,
    KafkaProperties,
    boolean,
    choice,
    comma_list,
    destination_limits,
    integer,
    kafka_properties,
    number,
    optional,
    producer_properties,
    source_quotas,
)
from timefuse.domain.quota import QuotaTable


@dataclass(frozen=True)
class StoreSettings(Section, title="Event store"):
    database_url: str = setting(
        env="DATABASE_URL",
        default="",
        help="Event store: sqlite:///path or postgresql://... Unset: DB_HOST..., else "
        "./timefuse.db.",
    )
    db_host: str = setting(
        env="DB_HOST", default="", help="PostgreSQL host (selects PostgreSQL when set)."
    )
    db_port: int = setting(
        env="DB_PORT", default="5432", help="PostgreSQL port.", parse=integer(1, 65535)
    )
    db_name: str = setting(env="DB_NAME", default="timefuse", help="PostgreSQL database.")
    db_username: str = setting(env="DB_USERNAME", default="timefuse", help="PostgreSQL user.")
    db_password: str = setting(env="DB_PASSWORD", default="", help="PostgreSQL password.")
    pool_size: int = setting(
        env="TIMEFUSE_DB_POOL_SIZE", default="10", help="PostgreSQL pool size.", parse=integer(1)
    )
    partition_granularity: str = setting(
        env="TIMEFUSE_PARTITION_GRANULARITY",
        default="day",
        help="PostgreSQL: time span of one events partition (day, week or month).",
        parse=choice("day", "week", "month"),
    )
    partitions_ahead: int = setting(
        env="TIMEFUSE_PARTITIONS_AHEAD",
        default="7",
        help="PostgreSQL: partitions kept created ahead of today (later dates use a default one).",
        parse=integer(0, 1000),
    )
    read_url: str = setting(
        env="TIMEFUSE_DATABASE_READ_URL",
        default="",
        help="PostgreSQL: a read replica (postgresql://...) for listings, searches by external "
        "id, attempts and statistics; claims, writes and reads by id stay on DATABASE_URL.",
    )
    read_max_lag_seconds: float = setting(
        env="TIMEFUSE_DATABASE_READ_MAX_LAG_SECONDS",
        default="30",
        help="Readiness fails while the read replica is further behind the primary than this.",
        parse=number(0.0),
    )

    def __repr__(self) -> str:
        # The password must not reach a log line or a traceback.
        read = f", read_url={redacted_url(self.read_url)!r}" if self.read_url else ""
        return f"StoreSettings(url={redacted_url(self.url)!r}{read}, pool_size={self.pool_size})"

    def __post_init__(self) -> None:
        if self.read_url and not self.read_url.startswith(("postgresql:", "postgres:")):
            raise ConfigError(
                "TIMEFUSE_DATABASE_READ_URL must be a postgresql:// URL, got "
                f"{redacted_url(self.read_url)!r}"
            )
        if self.read_url and not self.url.startswith(("postgresql:", "postgres:")):
            raise ConfigError("TIMEFUSE_DATABASE_READ_URL needs a PostgreSQL event store")

    @property
    def url(self) -> str:
        """The event store to use: ``sqlite:///...`` or ``postgresql://...``."""
        if self.database_url:
            return self.database_url
        if self.db_host:
            user = quote(self.db_username, safe="")
            auth = f"{user}:{quote(self.db_password, safe='')}" if self.db_password else user
            return f"postgresql://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"
        return "sqlite:///timefuse.db"


# libpq takes a password in the query string too (``?password=``, ``sslpassword=``).
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")


def redacted_url(url: str) -> str:
    """``url`` without its user and password (all before the last ``@``, scheme or not), and
    with any password in its query string replaced by ``***``."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    address, question, query = rest.partition("?")
    query = _QUERY_PASSWORD.sub(r"\1***", question + query)
    return f"{scheme}{separator}{address.rpartition('@')[2]}{query}"


@dataclass(frozen=True)
class KafkaSettings(Section, title="Kafka"):
    bootstrap_servers: str = setting(
        env="KAFKA_BOOTSTRAP_SERVERS",
        default="",
        help="Kafka brokers; set to use the Kafka ingest buffer and the kafka delivery type.",
    )
    partitions: int = setting(
        env="KAFKA_PARTITIONS",
        default="24",
        help="Partitions of the ingest topic and of its dead letter topic (when timefuse "
        "creates them).",
        parse=integer(1),
    )
    ingest_topic: str = setting(
        env="TIMEFUSE_KAFKA_INGEST_TOPIC", default="timefuse.ingest", help="Ingest topic name."
    )
    dlq_topic: str = setting(
        env="TIMEFUSE_KAFKA_DLQ_TOPIC",
        default="",
        help="Topic for ingest records that can't be decoded or validated (empty: <ingest>.dlq).",
    )
    replication_factor: int = setting(
        env="TIMEFUSE_KAFKA_REPLICATION_FACTOR",
        default="-1",
        help="Replication factor of the topics timefuse creates (-1: the broker's default).",
        parse=integer(-1, 32767),
    )
    max_record_bytes: int = setting(
        env="TIMEFUSE_KAFKA_MAX_RECORD_BYTES",
        default="4194304",
        help="Largest ingest record: the producer's message.max.bytes and the max.message.bytes "
        "of the topics timefuse creates. The default holds the largest event the default "
        "TIMEFUSE_MAX_PAYLOAD_BYTES allows (a body of base64 bytes is a third larger); raise "
        "both together. A topic that exists already keeps its own max.message.bytes.",
        parse=integer(1024, 1_000_000_000),
    )
    submit_timeout: float = setting(
        env="TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS",
        default="5",
        help="How long the API waits for Kafka to acknowledge a submission before answering 503 "
        "(and for the store to count a source's PENDING events, for a source with max_pending).",
        parse=number(0.1),
    )
    client_config: KafkaProperties = setting(
        env="TIMEFUSE_KAFKA_CLIENT_CONFIG",
        default="",
        help="JSON object of librdkafka properties for every Kafka client (security, SASL...); "
        "acks, enable.idempotence, message.timeout.ms and delivery.timeout.ms are refused.",
        parse=producer_properties,
    )
    producer_config: KafkaProperties = setting(
        env="TIMEFUSE_KAFKA_PRODUCER_CONFIG",
        default="",
        help="JSON object of librdkafka properties overriding the producers' defaults; acks, "
        "enable.idempotence, message.timeout.ms and delivery.timeout.ms are refused (they "
        "keep accepted events durable).",
        parse=producer_properties,
    )
    consumer_config: KafkaProperties = setting(
        env="TIMEFUSE_KAFKA_CONSUMER_CONFIG",
        default="",
        help="JSON object of librdkafka properties overriding the ingest consumer's defaults.",
        parse=kafka_properties,
    )

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers.strip())

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.ingest_topic}.dlq"


@dataclass(frozen=True)
class IngestSettings(Section, title="Ingest consumer (Kafka)"):
    consumer_group: str = setting(
        env="TIMEFUSE_KAFKA_CONSUMER_GROUP",
        default="timefuse-ingest",
        help="Consumer group of `timefuse ingest`.",
    )
    batch_size: int = setting(
        env="TIMEFUSE_KAFKA_INGEST_BATCH_SIZE",
        default="1000",
        help="Most records the ingest consumer writes to the store in one transaction.",
        parse=integer(1, 100_000),
    )
    batch_ms: int = setting(
        env="TIMEFUSE_KAFKA_INGEST_BATCH_MS",
        default="50",
        help="Longest the ingest consumer waits to fill a batch before writing what it has.",
        parse=integer(1, 60_000),
    )


@dataclass(frozen=True)
class DispatchSettings(Section, title="Dispatcher"):
    poll_interval_ms: int = setting(
        env="SCHEDULER_POLL_INTERVAL_MS",
        default="1000",
        help="Longest the dispatcher sleeps without a wake-up (a backstop, not the main trigger).",
        parse=integer(1),
    )
    batch_size: int = setting(
        env="SCHEDULER_BATCH_SIZE",
        default="500",
        help="Most events claimed per batch, and most outcomes written back per statement; "
        "the dispatcher claims again once it has room for half a batch.",
        parse=integer(1, 100_000),
    )
    concurrency: int = setting(
        env="TIMEFUSE_CONCURRENCY",
        default="1000",
        help="Deliveries in flight at once, across all destinations.",
        parse=integer(1),
    )
    lease_seconds: float = setting(
        env="TIMEFUSE_LEASE_SECONDS",
        default="60",
        help="How long a claim holds an event before another dispatcher may take it back.",
        parse=number(1.0),
    )
    shutdown_timeout_seconds: float = setting(
        env="TIMEFUSE_SHUTDOWN_TIMEOUT_SECONDS",
        default="10",
        help="On SIGTERM, how long in-flight deliveries may finish before their leases are "
        "released.",
        parse=number(),
    )
    retry_base_ms: int = setting(
        env="TIMEFUSE_RETRY_BASE_MS", default="1000", help="Retry backoff base.", parse=integer()
    )
    retry_cap_ms: int = setting(
        env="TIMEFUSE_RETRY_CAP_MS", default="3600000", help="Retry backoff cap.", parse=integer()
    )
    destination_concurrency: int = setting(
        env="TIMEFUSE_DESTINATION_CONCURRENCY",
        default="100",
        help="Deliveries in flight at once to one destination host (0: no cap).",
        parse=integer(0),
    )
    destination_rate: float = setting(
        env="TIMEFUSE_DESTINATION_RATE",
        default="0",
        help="Deliveries per second to one destination host, token bucket (0: unlimited).",
        parse=number(),
    )
    destination_limits: DestinationLimitTable = setting(
        env="TIMEFUSE_DESTINATION_LIMITS",
        default="",
        help='Per-destination overrides, JSON: {"host:port": {"concurrency": 10, "rate": 50, '
        '"burst": 100, "queue": 20}}; queue: most claimed events waiting for the destination '
        "(0: what it starts within the hold time); a bare host covers all its ports (see "
        "Protecting receivers).",
        parse=destination_limits,
    )
    breaker_failures: int = setting(
        env="TIMEFUSE_BREAKER_FAILURES",
        default="5",
        help="Consecutive retriable failures that open a destination's circuit breaker.",
        parse=integer(1),
    )
    breaker_cooldown_seconds: float = setting(
        env="TIMEFUSE_BREAKER_COOLDOWN_SECONDS",
        default="30",
        help="How long an open breaker waits before one delivery probes the destination.",
        parse=number(),
    )
    breaker_sources: int = setting(
        env="TIMEFUSE_BREAKER_SOURCES",
        default="2",
        help="Distinct sources whose failures in a row open a destination's breaker for every "
        "source; one source's failures alone hold only that source's events there.",
        parse=integer(1, 1000),
    )
    destination_idle_seconds: float = setting(
        env="TIMEFUSE_DESTINATION_IDLE_SECONDS",
        default="300",
        help="How long a dispatcher remembers a destination with nothing in flight, held or "
        "failing (its pace, a partial failure count).",
        parse=number(1.0),
    )
    destination_idle_max: int = setting(
        env="TIMEFUSE_DESTINATION_IDLE_MAX",
        default="10000",
        help="Most idle destinations a dispatcher remembers; past it the longest idle is "
        "forgotten first.",
        parse=integer(0, 10_000_000),
    )
    metrics_destinations: int = setting(
        env="TIMEFUSE_METRICS_DESTINATIONS",
        default="100",
        help="Most per-destination series on /metrics (the busiest destinations with "
        "something in flight, held or a breaker not closed; 0: none).",
        parse=integer(0, 100_000),
    )

    def __post_init__(self) -> None:
        # A cap below the base would silently cut every backoff to the cap: the operator meant
        # something else, so say so at start-up rather than retry on a schedule nobody chose.
        if self.retry_cap_ms < self.retry_base_ms:
            raise ConfigError(
                f"TIMEFUSE_RETRY_CAP_MS ({self.retry_cap_ms}) must not be below "
                f"TIMEFUSE_RETRY_BASE_MS ({self.retry_base_ms})"
            )


def _ui_secret(text: str) -> str:
    secret = text.strip()
    if secret and len(secret) < 32:
        raise ValueError("must be at least 32 characters (or unset)")
    return secret


@dataclass(frozen=True)
class ApiSettings(Section, title="API and console"):
    host: str = setting(
        env="TIMEFUSE_HOST",
        default="127.0.0.1",
        help="Address the API listens on; also the address of the metrics port of dispatch "
        "and ingest (TIMEFUSE_METRICS_PORT).",
    )
    port: int = setting(
        env="TIMEFUSE_PORT",
        default="8080",
        help="Port the API listens on.",
        parse=integer(0, 65535),
    )
    max_body_bytes: int = setting(
        env="TIMEFUSE_MAX_BODY_BYTES",
        default="10485760",
        help="Largest request body the API reads (413 above).",
        parse=integer(1),
    )
    max_payload_bytes: int = setting(
        env="TIMEFUSE_MAX_PAYLOAD_BYTES",
        default="1048576",
        help="Largest payload of one event.",
        parse=integer(1),
    )
    max_batch_events: int = setting(
        env="TIMEFUSE_MAX_BATCH_EVENTS",
        default="1000",
        help="Most events in one batch request (400 above).",
        parse=integer(1, 10_000),
    )
    max_json_depth: int = setting(
        env="TIMEFUSE_MAX_JSON_DEPTH",
        default="32",
        help="Deepest nesting of arrays and objects in a request body, envelope included (400 "
        "above).",
        parse=integer(2, 256),
    )
    max_horizon_days: int = setting(
        env="TIMEFUSE_MAX_HORIZON_DAYS",
        default="3650",
        help="Latest scheduled_at accepted, in days from now.",
        parse=integer(1, 36_500),
    )
    past_grace_seconds: float = setting(
        env="TIMEFUSE_PAST_GRACE_SECONDS",
        default="5",
        help="How far in the past scheduled_at may be (clock skew), in seconds.",
        parse=number(),
    )
    submit_timeout: float = setting(
        env="TIMEFUSE_SUBMIT_TIMEOUT_SECONDS",
        default="5",
        help="Longest a submission (one event or a batch) waits for the store to make it "
        "durable before the API answers 503, store outages included (without Kafka; with "
        "Kafka, TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS).",
        parse=number(0.1),
    )
    unknown_fields: str = setting(
        env="TIMEFUSE_UNKNOWN_FIELDS",
        default="warn",
        help="Fields timefuse doesn't know, in a submitted event, a batch body or a "
        "schedule's event template: warn (accepted, named in the answer's warnings) or reject "
        "(422 naming an event's or a template's; 400 naming a batch body's own).",
        parse=choice("warn", "reject"),
    )
    api_keys_file: str = setting(
        env="TIMEFUSE_API_KEYS_FILE",
        default="",
        help="TOML (or .json) file of API keys (SHA-256 hashes, sources, roles); unset: no "
        "auth, loopback only.",
    )
    metrics_auth: bool = setting(
        env="TIMEFUSE_METRICS_AUTH",
        default="true",
        help="With API keys, true: /metrics needs a key with the metrics or admin role; false: "
        "it answers without one, but without per-destination series or quota rejections.",
        parse=boolean,
    )
    ui: bool = setting(
        env="TIMEFUSE_UI",
        default="on",
        help="on: serve the operator console at /ui with the API (same keys); off: don't.",
        parse=boolean,
    )
    ui_secret: str = setting(
        env="TIMEFUSE_UI_SECRET",
        default="",
        help="Secret signing console sessions (32+ characters); unset: a random one per "
        "process, so sign-ins end at a restart and don't carry between API processes.",
        parse=_ui_secret,
    )

    def __repr__(self) -> str:
        secret = "(set)" if self.ui_secret else "(unset)"
        return f"ApiSettings(host={self.host!r}, port={self.port}, ui_secret={secret})"


@dataclass(frozen=True)
class ServerSettings(Section, title="HTTP listeners (API and metrics ports)"):
    max_connections: int = setting(
        env="TIMEFUSE_SERVER_MAX_CONNECTIONS",
        default="2048",
        help="Most client connections a listener holds (at most half the open-file limit); "
        "above it the longest-idle one is closed, or a new one answered 503 if none is idle.",
        parse=integer(1, 1_000_000),
    )
    header_timeout: float = setting(
        env="TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS",
        default="10",
        help="Longest a request's headers may take to arrive, from the connection or the "
        "request's first byte (408, or a silent close if nothing came).",
        parse=number(0.01),
    )
    max_header_bytes: int = setting(
        env="TIMEFUSE_SERVER_MAX_HEADER_BYTES",
        default="32768",
        help="Largest request line and headers together (431 above).",
        parse=integer(1024, 16 * 1024 * 1024),
    )
    body_timeout: float = setting(
        env="TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS",
        default="30",
        help="Longest a request's body may take to arrive after its headers (408); also how "
        "long the rest of a refused body is read and dropped so the client sees the answer.",
        parse=number(0.01),
    )
    keepalive_seconds: int = setting(
        env="TIMEFUSE_SERVER_KEEPALIVE_SECONDS",
        default="5",
        help="How long an idle keep-alive connection stays open (behind a load balancer: more "
        "than its idle timeout).",
        parse=integer(1, 3600),
    )


@dataclass(frozen=True)
class MaintenanceSettings(Section, title="Maintenance"):
    retention_days: int = setting(
        env="CLEANUP_RETENTION_DAYS",
        default="7",
        help="Days terminal events are kept; once retention deletes one, a resubmission of "
        "its (source, external_job_id, scheduled_at) makes a new event.",
        parse=integer(0, 36_500),
    )
    worker_dead_after_seconds: float = setting(
        env="TIMEFUSE_WORKER_DEAD_AFTER_SECONDS",
        default="5",
        help="A process whose heartbeats (one a second) stop for this long is dead: the "
        "maintenance leader returns its claimed events to PENDING at once, an attempt counted. "
        "Maintenance leadership is a lease of the same length, so a dead leader is replaced "
        "as fast.",
        parse=number(2.0),
    )


@dataclass(frozen=True)
class LogSettings(Section, title="Logging"):
    level: str = setting(env="TIMEFUSE_LOG_LEVEL", default="info", help="Log level.")
    format: str = setting(
        env="TIMEFUSE_LOG_FORMAT",
        default="auto",
        help="json, console, or auto (console on a terminal).",
    )


@dataclass(frozen=True)
class ProcessSettings(Section, title="Process"):
    worker_id: str = setting(
        env="TIMEFUSE_WORKER_ID",
        default="",
        help="This process's name in leases (default: host:pid).",
    )
    metrics_port: int | None = setting(
        env="TIMEFUSE_METRICS_PORT",
        default="",
        help="Port for /metrics and /health in processes without the API (ingest, dispatch).",
        parse=optional(integer(0, 65535)),
    )
    plugins: tuple[str, ...] | None = setting(
        env="TIMEFUSE_PLUGINS",
        default="",
        help="Comma list of external plugins (entry point names) to load; unset: all installed.",
        parse=comma_list,
        none_when_unset=True,
    )


@dataclass(frozen=True)
class TenantSettings(Section, title="Tenants (quotas per source)"):
    source_quotas: QuotaTable = setting(
        env="TIMEFUSE_SOURCE_QUOTAS",
        default="",
        help='Quotas per submitting source, JSON: {"billing": {"rate": 50, "burst": 100, '
        '"max_pending": 10000}, "*": {...}}; a source\'s own entry replaces "*", a field left '
        "out is no limit (see Quotas per source).",
        parse=source_quotas,
    )
