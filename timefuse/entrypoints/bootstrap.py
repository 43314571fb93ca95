"""The composition root: builds every adapter from configuration, or takes the caller's."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from timefuse.adapters.cron import CronRecurrence
from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.system.clock import SystemClock
from timefuse.config import (
    ApiSettings,
    ConfigError,
    DispatchSettings,
    IngestSettings,
    KafkaSettings,
    ProcessSettings,
    Settings,
    StoreSettings,
)
from timefuse.config.sections import redacted_url
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.validation import SubmissionLimits
from timefuse.plugins.kafka import cluster_clients
from timefuse.plugins.manager import Plugins, build_registry, delivery_observer, load_plugins
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock
from timefuse.ports.ingest import IngestBuffer, IngestStream
from timefuse.ports.store import StoreAdapter
from timefuse.service.admin import Admin
from timefuse.service.dispatcher import Dispatcher, DispatcherSettings
from timefuse.service.events import EventService
from timefuse.service.gate import DestinationLimits, GateSettings
from timefuse.service.ingest_consumer import IngestConsumer
from timefuse.service.ingest_consumer import IngestSettings as ConsumerSettings
from timefuse.service.maintenance import Maintenance
from timefuse.service.maintenance import MaintenanceSettings as MaintenanceRules
from timefuse.service.metrics import Metrics
from timefuse.service.planner import SchedulePlanner, schedule_metrics
from timefuse.service.presence import Presence
from timefuse.service.quotas import SourceQuotas
from timefuse.service.schedules import ScheduleService
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal

# The longest a claimed event waits for its destination's cap or rate before it goes back.
HOLD_SECONDS = 5.0

if TYPE_CHECKING:  # the Kafka adapter (and confluent-kafka) load only when Kafka is configured
    from timefuse.adapters.kafka import TopicSpec


@dataclass
class Timefuse:
    """Everything one process runs, wired together."""

    settings: Settings
    store: Store
    buffer: IngestBuffer
    plugins: Plugins
    registry: DeliveryRegistry
    clock: Clock
    metrics: Metrics
    wakeup: DueSignal
    service: EventService
    dispatcher: Dispatcher
    maintenance: Maintenance
    worker_id: str = field(default="")
    ingest: IngestConsumer | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    schedules: ScheduleService | None = None
    planner: SchedulePlanner | None = None

    def presence(self, roles: Collection[str]) -> Presence:
        """Heartbeats of this process, naming the roles it runs."""
        return Presence(
            self.store,
            worker=self.worker_id,
            roles=roles,
            started_at=self.started_at,
            in_flight=lambda: self.dispatcher.in_flight,
            dead_after_seconds=self.settings.maintenance.worker_dead_after_seconds,
        )

    async def open(self) -> None:
        await self.store.open()
        await self.buffer.open()
        await self.registry.start()

    async def close(self) -> None:
        await self.registry.stop()
        await self.buffer.close()
        await self.store.close()

    @property
    def admin(self) -> Admin:
        """Retention on demand and this process's destinations, for the admin API."""
        return Admin(
            maintenance=self.maintenance,
            gate=self.dispatcher.gate,
            store=self.store,
            retention_days=self.settings.maintenance.retention_days,
            dead_after_seconds=self.settings.maintenance.worker_dead_after_seconds,
            registry=self.registry,
        )


def build_store(settings: StoreSettings, clock: Clock) -> StoreAdapter:
    url = settings.url
    if url.startswith("sqlite:"):
        from timefuse.adapters.sqlite import from_url

        return from_url(url, clock=clock)
    if url.startswith(("postgresql:", "postgres:")):
        from timefuse.adapters.postgres import PostgresEventStore

        return PostgresEventStore(
            url,
            pool_size=settings.pool_size,
            partition_granularity=settings.partition_granularity,
            partitions_ahead=settings.partitions_ahead,
            read_url=settings.read_url or None,
        )
    raise ConfigError(
        f"DATABASE_URL must start with sqlite:// or postgresql://, got {redacted_url(url)!r}"
    )


def build_buffer(settings: KafkaSettings, store: Store, metrics: Metrics) -> IngestBuffer:
    """Kafka when ``KAFKA_BOOTSTRAP_SERVERS`` is set, else straight into the store."""
    if not settings.enabled:
        return InlineIngestBuffer(store)
    from timefuse.adapters.kafka import KafkaIngestBuffer

    produced = metrics.kafka_produced.labels("ingest")
    failed = metrics.kafka_produce_failures.labels("ingest")

    def observe(acknowledged: int, error: str | None) -> None:
        produced.inc(acknowledged)
        if error is not None:
            failed.inc()

    return KafkaIngestBuffer(
        cluster_clients(settings),
        _ingest_topic(settings),
        submit_timeout=settings.submit_timeout,
        observer=observe,
    )


def build_stream(kafka: KafkaSettings, ingest: IngestSettings) -> IngestStream | None:
    """The ingest topic as a consumer group member; ``None`` without Kafka."""
    if not kafka.enabled:
        return None
    from timefuse.adapters.kafka import KafkaIngestStream, TopicSpec

    return KafkaIngestStream(
        cluster_clients(kafka),
        _ingest_topic(kafka),
        TopicSpec(
            kafka.dead_letter_topic,
            kafka.partitions,
            kafka.replication_factor,
            max_message_bytes=kafka.max_record_bytes,
        ),
        ingest.consumer_group,
    )


def build_ingest(
    settings: IngestSettings,
    stream: IngestStream | None,
    store: Store,
    metrics: Metrics,
    limits: SubmissionLimits,
    wakeup: DueSignal,
) -> IngestConsumer | None:
    """The consumer moving ``stream``'s events into ``store``; ``None`` without a stream."""
    if stream is None:
        return None
    return IngestConsumer(
        stream=stream,
        store=store,
        metrics=metrics,
        settings=ConsumerSettings(
            batch_size=settings.batch_size,
            batch_timeout_seconds=settings.batch_ms / 1000.0,
        ),
        limits=limits,
        wakeup=wakeup,
    )


def _ingest_topic(settings: KafkaSettings) -> TopicSpec:
    from timefuse.adapters.kafka import TopicSpec

    return TopicSpec(
        settings.ingest_topic,
        settings.partitions,
        settings.replication_factor,
        max_message_bytes=settings.max_record_bytes,
    )


def submission_limits(settings: ApiSettings) -> SubmissionLimits:
    return SubmissionLimits(
        max_payload_bytes=settings.max_payload_bytes,
        max_horizon_days=settings.max_horizon_days,
        past_grace_seconds=settings.past_grace_seconds,
    )


def dispatcher_settings(settings: DispatchSettings, worker_id: str) -> DispatcherSettings:
    return DispatcherSettings(
        worker_id=worker_id,
        batch_size=settings.batch_size,
        concurrency=settings.concurrency,
        lease_seconds=settings.lease_seconds,
        poll_interval_seconds=settings.poll_interval_ms / 1000.0,
        shutdown_timeout_seconds=settings.shutdown_timeout_seconds,
        retry_policy=RetryPolicy(settings.retry_base_ms / 1000.0, settings.retry_cap_ms / 1000.0),
    )


def gate_settings(settings: DispatchSettings, registry: DeliveryRegistry) -> GateSettings:
    default = DestinationLimits(
        concurrency=settings.destination_concurrency, rate=settings.destination_rate
    )
    type_defaults = {
        t.name: DestinationLimits(concurrency=t.destination_concurrency, rate=default.rate)
        for t in registry.types()
        if t.destination_concurrency is not None
    }
    overrides = {
        host: DestinationLimits(
            concurrency=int(limits.get("concurrency", default.concurrency)),
            rate=limits.get("rate", default.rate),
            burst=int(limits.get("burst", 0)),
            queue=int(limits.get("queue", 0)),
        )
        for host, limits in settings.destination_limits.items()
    }
    return GateSettings(
        default=default,
        overrides=overrides,
        type_defaults=type_defaults,
        breaker_failures=settings.breaker_failures,
        breaker_cooldown_seconds=settings.breaker_cooldown_seconds,
        breaker_sources=settings.breaker_sources,
        idle_seconds=settings.destination_idle_seconds,
        idle_max=settings.destination_idle_max,
        # Well inside the lease: an event waiting for its destination is handed back long
        # before its lease could expire.
        hold_seconds=min(HOLD_SECONDS, settings.lease_seconds / 4),
    )


def default_worker_id(settings: ProcessSettings) -> str:
    return settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"


def bootstrap(
    settings: Settings | None = None,
    *,
    store: StoreAdapter | Store | None = None,
    buffer: IngestBuffer | None = None,
    stream: IngestStream | None = None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    plugins: Plugins | None = None,
    extra_plugins: tuple[object, ...] = (),
) -> Timefuse:
    """Wire a process. Every part can be passed in; what isn't is built from ``settings``."""
    settings = settings or Settings.from_env()
    clock = clock or SystemClock()
    metrics = metrics or Metrics()
    if store is None:
        store = build_store(settings.store, clock)
    if not isinstance(store, Store):
        store = Store(store)
    buffer = buffer or build_buffer(settings.kafka, store, metrics)
    stream = stream or build_stream(settings.kafka, settings.ingest)
    plugins = plugins or load_plugins(settings, *extra_plugins)
    registry = build_registry(plugins)
    wakeup = DueSignal(clock)
    worker_id = default_worker_id(settings.process)
    limits = submission_limits(settings.api)
    # With Kafka nothing else bounds the store read of a capped source (inline, the submit
    # timeout does): TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS bounds it too.
    count_timeout = settings.kafka.submit_timeout if settings.kafka.enabled else None
    quotas = SourceQuotas(
        settings.tenants.source_quotas, store, metrics, count_timeout=count_timeout
    )
    service = EventService(
        buffer=buffer,
        store=store,
        registry=registry,
        clock=clock,
        metrics=metrics,
        limits=limits,
        wakeup=wakeup,
        buffered=settings.kafka.enabled,
        # How long a submission may wait, its turn among others included, before a 503: with
        # Kafka, for its acknowledgement (TIMEFUSE_KAFKA_SUBMIT_TIMEOUT_SECONDS).
        submit_timeout=(
            settings.kafka.submit_timeout if settings.kafka.enabled else settings.api.submit_timeout
        ),
        quotas=quotas,
    )
    dispatcher = Dispatcher(
        store=store,
        registry=registry,
        clock=clock,
        metrics=metrics,
        settings=dispatcher_settings(settings.dispatch, worker_id),
        gate_settings=gate_settings(settings.dispatch, registry),
        wakeup=wakeup,
        observer=delivery_observer(plugins),
    )
    gate = dispatcher.gate
    top = settings.dispatch.metrics_destinations
    metrics.destinations.source = lambda sources: (
        gate.snapshot(active_only=True, top=top, sources=sources) if top else {}
    )
    metrics.destinations.tracked = lambda: gate.tracked
    schedules, planner = build_schedules(store, clock, metrics, limits, service, wakeup)
    maintenance = Maintenance(
        store=store,
        clock=clock,
        metrics=metrics,
        settings=MaintenanceRules(
            retention_days=settings.maintenance.retention_days,
            dead_after_seconds=settings.maintenance.worker_dead_after_seconds,
        ),
        holder=worker_id,
        wakeup=wakeup,
        planner=planner,
    )
    ingest = build_ingest(settings.ingest, stream, store, metrics, limits, wakeup)
    return Timefuse(
        settings=settings,
        store=store,
        buffer=buffer,
        plugins=plugins,
        registry=registry,
        clock=clock,
        metrics=metrics,
        wakeup=wakeup,
        service=service,
        dispatcher=dispatcher,
        maintenance=maintenance,
        worker_id=worker_id,
        ingest=ingest,
        schedules=schedules,
        planner=planner,
    )


def build_schedules(
    store: Store,
    clock: Clock,
    metrics: Metrics,
    limits: SubmissionLimits,
    service: EventService,
    wakeup: DueSignal,
) -> tuple[ScheduleService, SchedulePlanner]:
    """The schedules' use cases (for the API) and their planner (run by maintenance)."""
    recurrence = CronRecurrence()
    series = schedule_metrics(metrics.registry)
    schedules = ScheduleService(
        store=store,
        recurrence=recurrence,
        clock=clock,
        build_event=service.build,
        submission_limits=limits,
        metrics=series,
        wakeup=wakeup,
    )
    planner = SchedulePlanner(
        store=store,
        recurrence=recurrence,
        clock=clock,
        limits=limits,
        metrics=series,
        wakeup=wakeup,
    )
    return schedules, planner
