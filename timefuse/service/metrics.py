"""Prometheus metrics, built on a registry the caller owns (nothing is created at import)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# From 1 ms to 1 h: lateness spans both a healthy dispatcher and a backlog after an outage.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


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
        self.due_by_type = Gauge(
            "timefuse_events_due",
            "PENDING events due now and not yet claimed, per delivery type (refreshed "
            "periodically by the maintenance leader): the backlog, and events of a type no "
            "running dispatcher delivers.",
            ["delivery_type"],
            registry=r,
        )
        self.leases_recovered = Counter(
            "timefuse_leases_recovered", "Expired leases taken back.", registry=r
        )
        self._add_kafka_metrics(r)
        self._add_process_metrics(r)
        self._add_destination_metrics(r)
        self._add_quota_metrics(r)

    def _add_quota_metrics(self, r: CollectorRegistry) -> None:
        # Labelled by quota entry (a configured source, or "*" for every other source), not by
        # the submitted source: a client inventing sources can't grow the series.
        self.quota_rejections = Counter(
            "timefuse_quota_rejections",
            "Events refused by their source's quota, by quota entry (the source, or * for "
            "sources without an entry of their own) and reason (rate, pending).",
            ["source", "reason"],
            registry=r,
        )

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


DestinationSnapshot = Callable[[], dict[str, dict[str, object]]]


# Per-destination series are published only for destinations with something in flight or
# waiting, or a breaker that is not closed, and at most this many (the busiest): one tenant
# sending to thousands of hosts must not grow every scrape without bound.
DESTINATION_SERIES_LIMIT = 100


class _DestinationCollector(Collector):
    """Per-destination breaker state and load, read from the dispatcher's memory per scrape."""

    def __init__(self) -> None:
        self.source: DestinationSnapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self.source() if self.source is not None else {}
        state = GaugeMetricFamily(
            "timefuse_destination_breaker_open",
            "1 while a destination's circuit breaker is open or half-open.",
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
            "Times a destination's breaker opened.",
            labels=["destination"],
        )
        for key, info in snapshot.items():
            state.add_metric([key], 0.0 if info["breaker"] == "CLOSED" else 1.0)
            in_flight.add_metric([key], float(str(info["in_flight"])))
            waiting.add_metric([key], float(str(info["waiting"])))
            trips.add_metric([key], float(str(info["trips"])))
        yield from (state, in_flight, waiting, trips)
