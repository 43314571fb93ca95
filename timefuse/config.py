"""Configuration: every setting, its environment variable and its default, in one place.

The seed's variable names are kept (``DB_HOST``, ``KAFKA_BOOTSTRAP_SERVERS``, ...); everything
else is ``TIMEFUSE_*``. Unset database and Kafka variables mean the embedded default.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from timefuse.domain.destination import normalise_destination_limit_key
from timefuse.plugins.http_credentials_file import CredentialsConfig, load_credentials
from timefuse.plugins.signing_keys import load_keyring
from timefuse.webhooks import SECRET_PREFIX, decode_secret


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


def _choice(env: str, allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ConfigError(f"{env} must be one of {', '.join(allowed)}, got {text!r}")
        return value

    return parse


def _str(text: str) -> str:
    return text


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _bool(env: str) -> Callable[[str], bool]:
    def parse(text: str) -> bool:
        value = text.strip().lower()
        if value not in _TRUE + _FALSE:
            raise ConfigError(f"{env} must be true or false, got {text!r}")
        return value in _TRUE

    return parse


def _ui_secret(text: str) -> str:
    secret = text.strip()
    if secret and len(secret) < 32:
        raise ConfigError("TIMEFUSE_UI_SECRET must be at least 32 characters (or unset)")
    return secret


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


_LIMIT_KEYS = frozenset({"concurrency", "rate", "burst", "queue"})


def _destination_limits(text: str) -> Mapping[str, Mapping[str, float]]:
    # Keys are read into the dispatcher's canonical destination keys, so that an override for
    # "hooks.example.com:443" holds for https://hooks.example.com/ however the URL is spelled.
    env = "TIMEFUSE_DESTINATION_LIMITS"
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{env} must be a JSON object: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{env} must be a JSON object of host -> limits")
    limits: dict[str, Mapping[str, float]] = {}
    written_as: dict[str, str] = {}
    for host, entry in raw.items():
        if not isinstance(entry, dict) or not set(entry) <= _LIMIT_KEYS:
            raise ConfigError(f"{env}: {host!r} must map to an object with {sorted(_LIMIT_KEYS)}")
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{env}: {host}.{key} must be a number >= 0")
        try:
            destination = normalise_destination_limit_key(host)
        except ValueError as exc:
            raise ConfigError(
                f"{env}: key {host!r} {exc}; write host:port, a host, an http(s) URL "
                "or <delivery type>:<destination>"
            ) from None
        if destination in written_as:
            raise ConfigError(
                f"{env}: keys {written_as[destination]!r} and {host!r} both name {destination}"
            )
        written_as[destination] = host
        limits[destination] = {key: float(value) for key, value in entry.items()}
    return limits


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(env: str) -> Callable[[str], tuple[IpNetwork, ...]]:
    def parse(text: str) -> tuple[IpNetwork, ...]:
        networks = []
        for part in _csv(text):
            try:
                # strict: "10.0.0.5/8" is more likely a typo than a wish to allow all of 10/8.
                networks.append(ipaddress.ip_network(part, strict=True))
            except ValueError as exc:
                raise ConfigError(
                    f"{env} must be a comma list of CIDR networks (e.g. 10.0.0.0/8,fd00::/8), "
                    f"got {part!r}: {exc}"
                ) from None
        return tuple(networks)

    return parse


# The specification asks for 24 to 64 random bytes; shorter keys are guessable.
_SECRET_BYTES = range(24, 65)


class WebhookSecrets(Mapping[str, tuple[str, ...]]):
    """Webhook signing secrets by event source (``*``: any other source).

    Its repr names sources only: settings end up in logs and tracebacks, secrets must not.
    """

    def __init__(self, by_source: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self._by_source = dict(by_source or {})

    def __getitem__(self, source: str) -> tuple[str, ...]:
        return self._by_source[source]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_source)

    def __len__(self) -> int:
        return len(self._by_source)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s!r}: {len(v)} secret(s)" for s, v in self._by_source.items())
        return f"WebhookSecrets({{{counts}}})"


def _webhook_secrets(env: str) -> Callable[[str], WebhookSecrets]:
    # {"billing": ["whsec_new", "whsec_old"], "*": "whsec_..."}: JSON because a secret's
    # base64 may hold "+", "/" and "=", which rule out a simpler key=value list. Messages
    # never quote a secret, only where it sits.
    def parse(text: str) -> WebhookSecrets:
        if not text.strip():
            return WebhookSecrets()
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{env} must be a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{env} must be a JSON object of sources to secrets")
        return WebhookSecrets(
            {source: _source_secrets(env, source, secrets) for source, secrets in value.items()}
        )

    return parse


def _source_secrets(env: str, source: str, secrets: object) -> tuple[str, ...]:
    listed = [secrets] if isinstance(secrets, str) else secrets
    if not source or not isinstance(listed, list):
        raise ConfigError(
            f"{env}: source {source!r} must map to a {SECRET_PREFIX} secret or a list of them"
        )
    for index, secret in enumerate(listed):
        where = f"{env}: secret {index} of source {source!r}"
        if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
            raise ConfigError(f"{where} must start with {SECRET_PREFIX}")
        try:
            key = decode_secret(secret)
        except ValueError:
            raise ConfigError(f"{where} must be {SECRET_PREFIX} followed by base64") from None
        if len(key) not in _SECRET_BYTES:
            raise ConfigError(f"{where} must decode to 24 to 64 bytes, not {len(key)}")
    return tuple(listed)


def _webhook_secrets_file(env: str) -> Callable[[str], WebhookSecrets]:
    parse_json = _webhook_secrets(env)

    def parse(text: str) -> WebhookSecrets:
        if not text.strip():
            return WebhookSecrets()
        try:
            content = Path(text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{env}: can't read {text!r}: {exc}") from None
        return parse_json(content)

    return parse


# -- parsers of the receiver-credentials and signing-key settings (see the block at the end of
# Settings). Both files are read at start-up, so a bad one stops the process with a message
# naming the entry; neither message quotes a secret.


def _http_credentials(text: str) -> CredentialsConfig:
    if not text.strip():
        return CredentialsConfig()
    try:
        return load_credentials(Path(text))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _signing_keys_file(text: str) -> str:
    if text.strip():
        try:
            load_keyring(Path(text))
        except ValueError as exc:
            raise ConfigError(f"TIMEFUSE_SIGNING_KEYS_FILE: {exc}") from None
    return text.strip()


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
        "KAFKA_BOOTSTRAP_SERVERS",
        "",
        "Kafka brokers; set to use the Kafka ingest buffer and the kafka delivery type.",
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
    http_allowed_networks: tuple[IpNetwork, ...] = _setting(
        "TIMEFUSE_HTTP_ALLOWED_NETWORKS",
        "",
        "Comma list of CIDRs HTTP delivery may reach besides public addresses (e.g. 10.0.0.0/8).",
        _networks("TIMEFUSE_HTTP_ALLOWED_NETWORKS"),
    )
    webhook_secrets: Mapping[str, tuple[str, ...]] = _setting(
        "TIMEFUSE_WEBHOOK_SECRETS",
        "",
        'JSON {"<source>": ["whsec_...", ...], "*": [...]}: secrets signing HTTP deliveries.',
        _webhook_secrets("TIMEFUSE_WEBHOOK_SECRETS"),
    )
    webhook_secrets_file: Mapping[str, tuple[str, ...]] = _setting(
        "TIMEFUSE_WEBHOOK_SECRETS_FILE",
        "",
        "Path of a JSON file in the TIMEFUSE_WEBHOOK_SECRETS format, read at start-up.",
        _webhook_secrets_file("TIMEFUSE_WEBHOOK_SECRETS_FILE"),
    )
    api_keys_file: str = _setting(
        "TIMEFUSE_API_KEYS_FILE",
        "",
        "TOML (or .json) file of API keys (SHA-256 hashes, sources, roles); unset: no auth, "
        "loopback only.",
    )
    metrics_auth: bool = _setting(
        "TIMEFUSE_METRICS_AUTH",
        "false",
        "true: /metrics needs an API key with the read or admin role.",
        _bool("TIMEFUSE_METRICS_AUTH"),
    )
    max_batch_events: int = _setting(
        "TIMEFUSE_MAX_BATCH_EVENTS",
        "1000",
        "Most events in one batch request (400 above).",
        _int("TIMEFUSE_MAX_BATCH_EVENTS", 1, 10_000),
    )
    max_json_depth: int = _setting(
        "TIMEFUSE_MAX_JSON_DEPTH",
        "32",
        "Deepest nesting of arrays and objects in a request body, envelope included (400 above).",
        _int("TIMEFUSE_MAX_JSON_DEPTH", 2, 256),
    )
    max_horizon_days: int = _setting(
        "TIMEFUSE_MAX_HORIZON_DAYS",
        "3650",
        "Latest scheduled_at accepted, in days from now.",
        _int("TIMEFUSE_MAX_HORIZON_DAYS", 1, 36_500),
    )
    past_grace_seconds: float = _setting(
        "TIMEFUSE_PAST_GRACE_SECONDS",
        "5",
        "How far in the past scheduled_at may be (clock skew), in seconds.",
        _float("TIMEFUSE_PAST_GRACE_SECONDS"),
    )
    destination_concurrency: int = _setting(
        "TIMEFUSE_DESTINATION_CONCURRENCY",
        "100",
        "Deliveries in flight at once to one destination host (0: no cap).",
        _int("TIMEFUSE_DESTINATION_CONCURRENCY", 0),
    )
    destination_rate: float = _setting(
        "TIMEFUSE_DESTINATION_RATE",
        "0",
        "Deliveries per second to one destination host, token bucket (0: unlimited).",
        _float("TIMEFUSE_DESTINATION_RATE"),
    )
    destination_limits: Mapping[str, Mapping[str, float]] = _setting(
        "TIMEFUSE_DESTINATION_LIMITS",
        "",
        'Per-destination overrides, JSON: {"host:port": {"concurrency": 10, "rate": 50, '
        '"burst": 100}}; a bare host covers all its ports (see Protecting receivers).',
        _destination_limits,
    )
    breaker_failures: int = _setting(
        "TIMEFUSE_BREAKER_FAILURES",
        "5",
        "Consecutive retriable failures that open a destination's circuit breaker.",
        _int("TIMEFUSE_BREAKER_FAILURES", 1),
    )
    partition_granularity: str = _setting(
        "TIMEFUSE_PARTITION_GRANULARITY",
        "day",
        "PostgreSQL: time span of one events partition (day, week or month).",
        _choice("TIMEFUSE_PARTITION_GRANULARITY", ("day", "week", "month")),
    )
    partitions_ahead: int = _setting(
        "TIMEFUSE_PARTITIONS_AHEAD",
        "7",
        "PostgreSQL: partitions kept created ahead of today (later dates use a default one).",
        _int("TIMEFUSE_PARTITIONS_AHEAD", 0, 1000),
    )
    breaker_cooldown_seconds: float = _setting(
        "TIMEFUSE_BREAKER_COOLDOWN_SECONDS",
        "30",
        "How long an open breaker waits before one delivery probes the destination.",
        _float("TIMEFUSE_BREAKER_COOLDOWN_SECONDS"),
    )
    # -- The operator console (/ui) --
    ui: bool = _setting(
        "TIMEFUSE_UI",
        "on",
        "on: serve the operator console at /ui with the API (same keys); off: don't.",
        _bool("TIMEFUSE_UI"),
    )
    ui_secret: str = _setting(
        "TIMEFUSE_UI_SECRET",
        "",
        "Secret signing console sessions (32+ characters); unset: a random one per process, "
        "so sign-ins end at a restart and don't carry between API processes.",
        _ui_secret,
    )

    # -- credentials toward receivers, and signing-key rotation -----------------------------
    http_credentials: CredentialsConfig = _setting(
        "TIMEFUSE_HTTP_CREDENTIALS_FILE",
        "",
        "TOML file of credentials per HTTP destination (header, basic, OAuth 2.0 client "
        "credentials, client TLS), read at start-up; see docs/credentials.md.",
        _http_credentials,
    )
    signing_keys_file: str = _setting(
        "TIMEFUSE_SIGNING_KEYS_FILE",
        "",
        "JSON keyring of dated webhook signing keys per source, managed through the admin API "
        "and re-read by every process when it changes (unset: no rotation at run time).",
        _signing_keys_file,
    )
    # -- end of credentials and signing-key rotation ----------------------------------------

    # --- HTTP listener limits (slow, idle and hostile clients) ---
    server_max_connections: int = _setting(
        "TIMEFUSE_SERVER_MAX_CONNECTIONS",
        "2048",
        "Most client connections a listener holds (at most half the open-file limit); above "
        "it the longest-idle one is closed, or a new one answered 503 if none is idle.",
        _int("TIMEFUSE_SERVER_MAX_CONNECTIONS", 1, 1_000_000),
    )
    server_header_timeout: float = _setting(
        "TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS",
        "10",
        "Longest a request's headers may take to arrive, from the connection or the request's "
        "first byte (408, or a silent close if nothing came).",
        _float("TIMEFUSE_SERVER_HEADER_TIMEOUT_SECONDS", 0.01),
    )
    server_max_header_bytes: int = _setting(
        "TIMEFUSE_SERVER_MAX_HEADER_BYTES",
        "32768",
        "Largest request line and headers together (431 above).",
        _int("TIMEFUSE_SERVER_MAX_HEADER_BYTES", 1024, 16 * 1024 * 1024),
    )
    server_body_timeout: float = _setting(
        "TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS",
        "30",
        "Longest a request's body may take to arrive after its headers (408); also how long "
        "the rest of a refused body is read and dropped so the client sees the answer.",
        _float("TIMEFUSE_SERVER_BODY_TIMEOUT_SECONDS", 0.01),
    )
    server_keepalive_seconds: int = _setting(
        "TIMEFUSE_SERVER_KEEPALIVE_SECONDS",
        "5",
        "How long an idle keep-alive connection stays open (behind a load balancer: more than "
        "its idle timeout).",
        _int("TIMEFUSE_SERVER_KEEPALIVE_SECONDS", 1, 3600),
    )
    # --- end of HTTP listener limits ---

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
        _check_retry_backoff(values["retry_base_ms"], values["retry_cap_ms"])
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


def _check_retry_backoff(base_ms: int, cap_ms: int) -> None:
    # A cap below the base would silently cut every backoff to the cap: the operator meant
    # something else, so say so at start-up rather than retry on a schedule nobody chose.
    if cap_ms < base_ms:
        raise ConfigError(
            f"TIMEFUSE_RETRY_CAP_MS ({cap_ms}) must not be below TIMEFUSE_RETRY_BASE_MS ({base_ms})"
        )


def variables() -> list[Var]:
    """Every environment variable timefuse reads, for ``--help`` and the README."""
    return [f.metadata["var"] for f in fields(Settings)]
