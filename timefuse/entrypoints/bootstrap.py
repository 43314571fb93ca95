"""The composition root: builds every adapter from configuration, or takes the caller's."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.system.clock import SystemClock
from timefuse.config import ConfigError, Settings
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.validation import SubmissionLimits
from timefuse.plugins.manager import Plugins, build_registry, delivery_observer, load_plugins
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock
from timefuse.ports.ingest import IngestBuffer
from timefuse.ports.store import EventStore
from timefuse.service.dispatcher import Dispatcher, DispatcherSettings
from timefuse.service.events import EventService
from timefuse.service.maintenance import Leadership, Maintenance, MaintenanceSettings
from timefuse.service.metrics import Metrics
from timefuse.service.wakeup import DueSignal


@dataclass
class Timefuse:
    """Everything one process runs, wired together."""

    settings: Settings
    store: EventStore
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

    async def open(self) -> None:
        await self.store.open()
        await self.buffer.open()
        await self.registry.start()

    async def close(self) -> None:
        await self.registry.stop()
        await self.buffer.close()
        await self.store.close()


def build_store(settings: Settings, clock: Clock) -> EventStore:
    url = settings.store_url
    if url.startswith("sqlite:"):
        from timefuse.adapters.sqlite import from_url

        return from_url(url, clock=clock)
    if url.startswith(("postgresql:", "postgres:")):
        from timefuse.adapters.postgres import PostgresEventStore

        return PostgresEventStore(url, pool_size=settings.db_pool_size)
    raise ConfigError(f"DATABASE_URL must start with sqlite:// or postgresql://, got {url!r}")


def build_leadership(store: EventStore) -> Leadership | None:
    """The store's own leader election where it has one (PostgreSQL advisory locks)."""
    leadership = getattr(store, "leadership", None)
    return leadership() if callable(leadership) else None


def default_worker_id(settings: Settings) -> str:
    return settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"


def bootstrap(
    settings: Settings | None = None,
    *,
    store: EventStore | None = None,
    buffer: IngestBuffer | None = None,
    clock: Clock | None = None,
    metrics: Metrics | None = None,
    plugins: Plugins | None = None,
    extra_plugins: tuple[object, ...] = (),
) -> Timefuse:
    """Wire a process. Every part can be passed in; what isn't is built from ``settings``."""
    settings = settings or Settings.from_env()
    clock = clock or SystemClock()
    metrics = metrics or Metrics()
    store = store or build_store(settings, clock)
    buffer = buffer or InlineIngestBuffer(store)
    plugins = plugins or load_plugins(settings, *extra_plugins)
    registry = build_registry(plugins, settings)
    wakeup = DueSignal()
    worker_id = default_worker_id(settings)
    limits = SubmissionLimits(max_payload_bytes=settings.max_payload_bytes)
    service = EventService(
        buffer=buffer,
        store=store,
        registry=registry,
        clock=clock,
        metrics=metrics,
        limits=limits,
        wakeup=wakeup,
    )
    dispatcher = Dispatcher(
        store=store,
        registry=registry,
        clock=clock,
        metrics=metrics,
        settings=DispatcherSettings(
            worker_id=worker_id,
            batch_size=settings.batch_size,
            concurrency=settings.concurrency,
            lease_seconds=settings.lease_seconds,
            poll_interval_seconds=settings.poll_interval_ms / 1000.0,
            shutdown_timeout_seconds=settings.shutdown_timeout_seconds,
            retry_policy=RetryPolicy(
                settings.retry_base_ms / 1000.0, settings.retry_cap_ms / 1000.0
            ),
        ),
        wakeup=wakeup,
        observer=delivery_observer(plugins),
    )
    maintenance = Maintenance(
        store=store,
        clock=clock,
        metrics=metrics,
        settings=MaintenanceSettings(retention_days=settings.retention_days),
        leadership=build_leadership(store),
        wakeup=wakeup,
    )
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
    )
