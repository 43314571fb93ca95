"""Prometheus metrics, built on a registry the caller owns (nothing is created at import)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# From 1 ms to 1 h: lateness spans both a healthy dispatcher and a backlog after an outage.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


class DeliverySeries:
    """One delivery type's labelled series, looked up once: a ``labels()`` call takes a lock
    and builds a key, which per delivery cost more than the observation itself."""

    __slots__ = (
        "_failed",
        "_metrics",
        "dead_lettered",
        "delivered",
        "duration",
        "kind",
        "lateness",
        "permanently_failed",
        "retried",
    )

    def __init__(self, metrics: Metrics, kind: str) -> None:
        self._metrics = metrics
        self.kind = kind
        self.duration = metrics.duration.labels(kind)
        self.lateness = metrics.lateness.labels(kind)
        self.delivered = metrics.delivered.labels(kind)
        self.retried = metrics.retried.labels(kind)
        self.dead_lettered = metrics.dead_lettered.labels(kind)
        self.permanently_failed = metrics.permanently_failed.labels(kind)
        self._failed: dict[str, Counter] = {}

    def failed(self, outcome: str) -> Counter:
        found = self._failed.get(outcome)
        if found is None:
            found = self._failed[outcome] = self._metrics.failed.labels(self.kind, outcome)
        return found


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "timefuse_events_received", "Events accepted by the API.", ["delivery_type"], registry=r
        )
        self.rejected = Counter(
            "timefuse_events_rejected", "Submitted events refused by validation.", registry=r
        )
        self.delivered = Counter(
            "timefuse_events_delivered", "Events delivered.", ["delivery_type"], registry=r
        )
        self.failed = Counter(
            "timefuse_events_failed",
            "Delivery attempts that failed.",
            ["delivery_type", "outcome"],
            registry=r,
        )
        self.retried = Counter(
            "timefuse_events_retried",
            "Events rescheduled for retry.",
            ["delivery_type"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "timefuse_events_dead_lettered",
            "Events whose retries ran out.",
            ["delivery_type"],
            registry=r,
        )
        self.permanently_failed = Counter(
            "timefuse_events_permanently_failed",
            "Events that ended FAILED.",
            ["delivery_type"],
            registry=r,
        )
        self.cancelled = Counter("timefuse_events_cancelled", "Events cancelled.", registry=r)
        self.lateness = Histogram(
            "timefuse_delivery_lateness_seconds",
            "Delivered time minus scheduled time.",
            ["delivery_type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "timefuse_delivery_duration_seconds",
            "How long one delivery attempt took.",
            ["delivery_type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.claimed = Histogram(
            "timefuse_dispatcher_batch_size",
            "Events claimed per batch.",
            buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 5000),
            registry=r,
        )
        self.claim_latency = Histogram(
            "timefuse_dispatcher_claim_seconds",
            "How long one claim statement took.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "timefuse_deliveries_in_flight", "Deliveries running now.", registry=r
        )
        self.events_by_status = Gauge(
            "timefuse_events",
            "Events per status (refreshed periodically, not per scrape).",
            ["status"],
            registry=r,
        )
        self.shared_breakers_open = Gauge(
            "timefuse_shared_breakers_open",
            "Circuit breakers open for the whole cluster (shared through the store), refreshed "
            "periodically by the maintenance leader.",
            registry=r,
        )
        self.due_by_type = Gauge(
            "timefuse_events_due",
            "PENDING events due now and not yet claimed, per delivery type (refreshed "
            "periodically by the maintenance leader): the backlog, and events of a type no "
            "running dispatcher delivers.",
            ["delivery_type"],
            registry=r,
        )
        self._series: dict[str, DeliverySeries] = {}
        self.leases_recovered = Counter(
            "timefuse_leases_recovered", "Expired leases taken back.", registry=r
        )
        self._add_kafka_metrics(r)
        self._add_process_metrics(r)
        self._add_destination_metrics(r)
        self._add_quota_metrics(r)
        self._scrape = asyncio.Lock()

    async def exposition(self, sources: frozenset[str] | None) -> bytes:
        """What a scrape answers: every series, with the per-destination ones of destinations
        ``sources`` send to (``None``: every source; empty: none).

        The text is rendered in a worker thread, one scrape at a time, so a large scrape
        never holds the event loop (the deliveries and requests it runs).
        """
        async with self._scrape:
            self.destinations.prepare(sources)
            self._quota_series.narrow(sources)
            try:
                return await asyncio.to_thread(generate_latest, self.registry)
            finally:
                self.destinations.clear()
                self._quota_series.narrow(None)

    def delivery_series(self, kind: str) -> DeliverySeries:
        """The per-delivery series of delivery type ``kind``."""
        found = self._series.get(kind)
        if found is None:
            found = self._series[kind] = DeliverySeries(self, kind)
        return found

    def count_in_flight(self, running: Callable[[], int]) -> None:
        """Read deliveries in flight from ``running`` when scraped, instead of counting each
        start and end on the gauge (two locked updates per delivery)."""
        self.in_flight.set_function(running)

    def _add_quota_metrics(self, r: CollectorRegistry) -> None:
        # Labelled by quota entry (a configured source, or "*" for every other source), not by
        # the submitted source: a client inventing sources can't grow the series.
        # Per source, so a scrape shows only the sources its caller may see (as the
        # per-destination series): registered through a collector that narrows it.
        self.quota_rejections = Counter(
            "timefuse_quota_rejections",
            "Events refused by their source's quota, by quota entry (the source, or * for "
            "sources without an entry of their own) and reason (rate, pending); a key scoped "
            "to sources sees only theirs (* only a key of every source).",
            ["source", "reason"],
            registry=None,
        )
        self._quota_series = _BySource(self.quota_rejections)
        r.register(self._quota_series)

    def _add_kafka_metrics(self, r: CollectorRegistry) -> None:
        # The Kafka ingest path: API -> topic -> `timefuse ingest` -> store. Kafka *delivery*
        # is counted by the delivery metrics above, with delivery_type="kafka".
        self.kafka_produced = Counter(
            "timefuse_kafka_records_produced",
            "Records the broker acknowledged, by purpose (ingest: the API's submissions).",
            ["purpose"],
            registry=r,
        )
        self.kafka_produce_failures = Counter(
            "timefuse_kafka_produce_failures",
            "Submissions or dead letters Kafka did not acknowledge (answered 503 / retried).",
            ["purpose"],
            registry=r,
        )
        self.ingest_batches = Counter(
            "timefuse_ingest_batches_persisted",
            "Batches the ingest consumer wrote to the store and committed.",
            registry=r,
        )
        self.ingest_persisted = Counter(
            "timefuse_ingest_events_persisted",
            "Events the ingest consumer wrote to the store (duplicates included).",
            registry=r,
        )
        self.ingest_duplicates = Counter(
            "timefuse_ingest_duplicates",
            "Ingested events the store already had (redelivered or resubmitted).",
            registry=r,
        )
        self.ingest_dead_lettered = Counter(
            "timefuse_ingest_dead_lettered",
            "Ingest records sent to the dead letter topic (undecodable or invalid).",
            registry=r,
        )
        self.ingest_store_retries = Counter(
            "timefuse_ingest_store_retries",
            "Batches retried because the store or the stream was unavailable.",
            registry=r,
        )
        self.ingest_write_seconds = Histogram(
            "timefuse_ingest_write_seconds",
            "How long one ingest batch took to write to the store.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_lag = Gauge(
            "timefuse_ingest_consumer_lag",
            "Ingest records not yet committed, per partition this process consumes.",
            ["partition"],
            registry=r,
        )

    def _add_process_metrics(self, r: CollectorRegistry) -> None:
        # The standard process_* (resident memory, CPU seconds, open fds), python_info and
        # python_gc_* series, on this registry: the default registry is not the one served.
        # Each reads /proc/self or the interpreter when scraped: no I/O of timefuse's own.
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def _add_destination_metrics(self, r: CollectorRegistry) -> None:
        self.throttled = Counter(
            "timefuse_events_throttled",
            "Claimed events handed back uncounted, by reason (breaker: an open circuit "
            "breaker; wait: longer than the hold time for a destination's cap or rate; "
            "shutdown).",
            ["reason"],
            registry=r,
        )
        self.spread_offset = Histogram(
            "timefuse_spread_offset_seconds",
            "Offsets given to events submitted with a delivery window.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.destinations = _DestinationCollector()
        r.register(self.destinations)


# A snapshot of destinations (see DestinationGate.snapshot) for the sources given (None:
# every source).
DestinationSnapshot = Callable[[frozenset[str] | None], dict[str, dict[str, object]]]


class _DestinationCollector(Collector):
    """Per-destination breaker state and load, read from the dispatcher's memory.

    The dispatcher's state belongs to the event loop, and a scrape is rendered off it: the
    series are taken on the loop by :meth:`prepare` (a bounded snapshot: the busiest
    destinations with something in flight, held, or a breaker not closed), then rendered.
    """

    def __init__(self) -> None:
        self.source: DestinationSnapshot | None = None
        self.tracked: Callable[[], int] | None = None
        self._prepared: list[Metric] | None = None

    def prepare(self, sources: frozenset[str] | None) -> None:
        snapshot = self.source(sources) if self.source is not None else {}
        self._prepared = self._families(snapshot, live=True)

    def clear(self) -> None:
        self._prepared = None

    def collect(self) -> Iterator[Metric]:
        yield from self._prepared if self._prepared is not None else self._families({}, live=False)

    def _families(self, snapshot: dict[str, dict[str, object]], *, live: bool) -> list[Metric]:
        state = GaugeMetricFamily(
            "timefuse_destination_breaker_open",
            "1 while a breaker holds events to a destination: its own (every source) or a "
            "source's own (that source).",
            labels=["destination"],
        )
        in_flight = GaugeMetricFamily(
            "timefuse_destination_in_flight",
            "Deliveries running now, per destination.",
            labels=["destination"],
        )
        waiting = GaugeMetricFamily(
            "timefuse_destination_waiting",
            "Claimed events waiting for their destination's cap or rate limit.",
            labels=["destination"],
        )
        trips = CounterMetricFamily(
            "timefuse_destination_breaker_trips",
            "Times a destination's breakers (its own and its sources') opened.",
            labels=["destination"],
        )
        tracked = GaugeMetricFamily(
            "timefuse_destinations_tracked",
            "Destinations the dispatcher remembers (busy, held, or idle for a while).",
        )
        if live:
            tracked.add_metric([], float(self.tracked() if self.tracked is not None else 0))
        for key, info in snapshot.items():
            state.add_metric([key], 0.0 if info["breaker"] == "CLOSED" else 1.0)
            in_flight.add_metric([key], float(str(info["in_flight"])))
            waiting.add_metric([key], float(str(info["waiting"])))
            trips.add_metric([key], float(str(info["trips"])))
        return [state, in_flight, waiting, trips, tracked]


class _BySource(Collector):
    """The series of ``inner`` (labelled ``source``), during a scrape only those of the
    sources its caller may see."""

    def __init__(self, inner: Counter) -> None:
        self._inner = inner
        self._sources: frozenset[str] | None = None

    def narrow(self, sources: frozenset[str] | None) -> None:
        """Show only the series of ``sources`` (``None``: every series; empty: none)."""
        self._sources = sources

    def describe(self) -> Iterator[Metric]:
        return iter(self._inner.describe())

    def collect(self) -> Iterator[Metric]:
        sources = self._sources
        for family in self._inner.collect():
            if sources is not None:
                family.samples = [s for s in family.samples if s.labels["source"] in sources]
            yield family
