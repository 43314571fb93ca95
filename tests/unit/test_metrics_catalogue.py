"""The metrics timefuse exports, by name, type and labels: what dashboards and alert rules
query (deploy/), so a renamed series or a dropped label is a broken contract, not a detail."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from timefuse.service.metrics import Metrics

EXPORTED = {
    "timefuse_events_received": ("counter", ("delivery_type",)),
    "timefuse_events_rejected": ("counter", ()),
    "timefuse_events_delivered": ("counter", ("delivery_type",)),
    "timefuse_events_failed": ("counter", ("delivery_type", "outcome")),
    "timefuse_events_retried": ("counter", ("delivery_type",)),
    "timefuse_events_dead_lettered": ("counter", ("delivery_type",)),
    "timefuse_events_due": ("gauge", ("delivery_type",)),
    "timefuse_shared_breakers_open": ("gauge", ()),
    "timefuse_quota_rejections": ("counter", ("source", "reason")),
    "timefuse_events_permanently_failed": ("counter", ("delivery_type",)),
    "timefuse_events_cancelled": ("counter", ()),
    "timefuse_delivery_lateness_seconds": ("histogram", ("delivery_type",)),
    "timefuse_delivery_duration_seconds": ("histogram", ("delivery_type",)),
    "timefuse_dispatcher_batch_size": ("histogram", ()),
    "timefuse_dispatcher_claim_seconds": ("histogram", ()),
    "timefuse_deliveries_in_flight": ("gauge", ()),
    "timefuse_events": ("gauge", ("status",)),
    "timefuse_leases_recovered": ("counter", ()),
    "timefuse_kafka_records_produced": ("counter", ("purpose",)),
    "timefuse_kafka_produce_failures": ("counter", ("purpose",)),
    "timefuse_ingest_batches_persisted": ("counter", ()),
    "timefuse_ingest_events_persisted": ("counter", ()),
    "timefuse_ingest_duplicates": ("counter", ()),
    "timefuse_ingest_dead_lettered": ("counter", ()),
    "timefuse_ingest_store_retries": ("counter", ()),
    "timefuse_ingest_write_seconds": ("histogram", ()),
    "timefuse_ingest_consumer_lag": ("gauge", ("partition",)),
    "timefuse_events_throttled": ("counter", ("reason",)),
    "timefuse_spread_offset_seconds": ("histogram", ()),
}
PER_DESTINATION = {
    "timefuse_destination_breaker_open": "gauge",
    "timefuse_destination_in_flight": "gauge",
    "timefuse_destination_waiting": "gauge",
    "timefuse_destination_breaker_trips": "counter",
}


def test_every_series_is_exported_with_its_type_and_labels() -> None:
    metrics = Metrics()
    found = {
        m._name: (m._type, tuple(m._labelnames))
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    assert found == EXPORTED
    families = {family.name: family for family in metrics.registry.collect()}
    for name in EXPORTED:
        assert families[name].documentation, f"{name} has no help text"


def test_the_per_destination_series_come_from_the_gates_snapshot() -> None:
    metrics = Metrics()
    snapshot = {
        "a.example:443": {"breaker": "OPEN", "in_flight": 2, "waiting": 3, "trips": 4},
        "b.example:443": {"breaker": "HALF_OPEN", "in_flight": 0, "waiting": 0, "trips": 1},
        "c.example:443": {"breaker": "CLOSED", "in_flight": 1, "waiting": 0, "trips": 0},
    }
    metrics.destinations.source = lambda sources: snapshot
    metrics.destinations.prepare(None)  # what a scrape does first, on the event loop
    families = {f.name: f for f in metrics.registry.collect() if f.name in PER_DESTINATION}
    assert {name: f.type for name, f in families.items()} == PER_DESTINATION
    value = metrics.registry.get_sample_value
    rows = [
        (
            key,
            value("timefuse_destination_breaker_open", {"destination": key}),
            value("timefuse_destination_in_flight", {"destination": key}),
            value("timefuse_destination_waiting", {"destination": key}),
            value("timefuse_destination_breaker_trips_total", {"destination": key}),
        )
        for key in snapshot
    ]
    assert rows == [
        ("a.example:443", 1.0, 2.0, 3.0, 4.0),
        ("b.example:443", 1.0, 0.0, 0.0, 1.0),  # half-open counts as open
        ("c.example:443", 0.0, 1.0, 0.0, 0.0),
    ]


def test_without_a_dispatcher_no_destination_series_are_exported() -> None:
    metrics = Metrics()
    assert metrics.registry.get_sample_value("timefuse_destination_in_flight", {}) is None
    names = {f.name for f in metrics.registry.collect()}
    assert PER_DESTINATION.keys() <= names  # declared, with no samples


def test_after_a_scrape_the_destination_series_are_gone_but_still_declared() -> None:
    metrics = Metrics()
    snapshot = {"a.example:443": {"breaker": "OPEN", "in_flight": 2, "waiting": 3, "trips": 4}}
    metrics.destinations.source = lambda sources: snapshot
    metrics.destinations.tracked = lambda: 1
    metrics.destinations.prepare(None)
    metrics.destinations.clear()  # what a scrape does last
    value = metrics.registry.get_sample_value
    assert value("timefuse_destination_in_flight", {"destination": "a.example:443"}) is None
    assert value("timefuse_destinations_tracked", {}) is None
    names = {f.name for f in metrics.registry.collect()}
    assert {*PER_DESTINATION, "timefuse_destinations_tracked"} <= names


def test_outside_a_scrape_the_dispatchers_memory_is_not_read() -> None:
    # Read off the event loop, it could be read mid-change: only a scrape's prepare reads it.
    metrics = Metrics()
    asked: list[str] = []

    def tracked() -> int:
        asked.append("tracked")
        return 7

    metrics.destinations.tracked = tracked
    assert metrics.registry.get_sample_value("timefuse_destinations_tracked", {}) is None
    assert asked == []
    metrics.destinations.prepare(None)
    assert metrics.registry.get_sample_value("timefuse_destinations_tracked", {}) == 7.0
    assert asked == ["tracked"]


def test_a_process_with_no_dispatcher_tracks_no_destinations() -> None:
    metrics = Metrics()
    metrics.destinations.prepare(None)
    assert metrics.registry.get_sample_value("timefuse_destinations_tracked", {}) == 0.0


def test_the_breaker_series_says_which_breakers_it_counts() -> None:
    # Half-open counts as open and a source's own breaker counts too: the help text is where
    # an operator reading /metrics learns it.
    metrics = Metrics()
    help_line = (
        "# HELP timefuse_destination_breaker_open 1 while a breaker holds events to a "
        "destination: its own (every source) or a source's own (that source).\n"
    )
    assert help_line in generate_latest(metrics.registry).decode()


def test_the_series_are_registered_in_the_registry_given() -> None:
    given = CollectorRegistry()
    metrics = Metrics(given)
    metrics.received.labels("http").inc()
    assert metrics.registry is given
    assert given.get_sample_value("timefuse_events_received_total", {"delivery_type": "http"}) == 1


def bucket_bounds(exposition: str, name: str) -> list[float]:
    return [
        float(line.split('le="')[1].split('"')[0])
        for line in exposition.splitlines()
        if line.startswith(f"{name}_bucket{{") and 'le="+Inf"' not in line
    ]


def test_the_histograms_buckets_span_what_they_measure() -> None:
    metrics = Metrics()
    metrics.lateness.labels("http").observe(0.2)
    metrics.duration.labels("http").observe(0.2)
    for histogram in (metrics.claimed, metrics.claim_latency):
        histogram.observe(1)
    metrics.ingest_write_seconds.observe(0.1)
    metrics.spread_offset.observe(1.0)
    exposition = generate_latest(metrics.registry).decode()
    # From a millisecond to an hour: a healthy dispatcher and a backlog after an outage.
    seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    seconds += [30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]
    for name in (
        "timefuse_delivery_lateness_seconds",
        "timefuse_delivery_duration_seconds",
        "timefuse_dispatcher_claim_seconds",
        "timefuse_ingest_write_seconds",
        "timefuse_spread_offset_seconds",
    ):
        assert bucket_bounds(exposition, name) == seconds, name
    batch = [0.0, 1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0]
    assert bucket_bounds(exposition, "timefuse_dispatcher_batch_size") == batch


def test_the_process_and_platform_series_are_in_the_registry_served() -> None:
    # On Linux the process_* series read /proc/self; python_info comes from the interpreter.
    exposition = generate_latest(Metrics(CollectorRegistry()).registry).decode()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_info",
        "python_gc_collections_total",
    ):
        assert f"\n{name}" in exposition, name
