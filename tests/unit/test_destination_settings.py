"""Destination limits and breakers as configured reach the dispatcher's gate, and the gate's
state reaches /metrics (what a running process shows; the gate's rules are in tests/service)."""

from __future__ import annotations

import json

import pytest

from timefuse.adapters.memory import MemoryStore
from timefuse.config import Settings
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap, gate_settings
from timefuse.service.gate import Claimed, DestinationLimits
from timefuse.testing.factories import make_event

ENV = {
    "TIMEFUSE_PLUGINS": "",
    "TIMEFUSE_DESTINATION_CONCURRENCY": "50",
    "TIMEFUSE_DESTINATION_RATE": "20",
    "TIMEFUSE_DESTINATION_LIMITS": json.dumps(
        {
            "slow.example": {"concurrency": 200},
            "metered.example:8443": {"rate": 2.5, "burst": 3, "queue": 7},
        }
    ),
    "TIMEFUSE_BREAKER_FAILURES": "3",
    "TIMEFUSE_BREAKER_COOLDOWN_SECONDS": "7",
    "TIMEFUSE_LEASE_SECONDS": "8",
}


@pytest.fixture
def process() -> Timefuse:
    return bootstrap(Settings.from_env(ENV), store=MemoryStore())


@pytest.mark.parametrize(
    ("destination", "limits"),
    [
        ("https://other.example/hook", DestinationLimits(concurrency=50, rate=20.0)),
        ("https://slow.example/hook", DestinationLimits(concurrency=200, rate=20.0)),
        ("https://slow.example:8443/hook", DestinationLimits(concurrency=200, rate=20.0)),
        (
            "https://metered.example:8443/x",
            DestinationLimits(concurrency=50, rate=2.5, burst=3, queue=7),
        ),
        ("https://metered.example/x", DestinationLimits(concurrency=50, rate=20.0)),
    ],
)
def test_a_destination_gets_the_limits_configured_for_it(
    process: Timefuse, destination: str, limits: DestinationLimits
) -> None:
    event = make_event(destination=destination)
    assert process.dispatcher.gate.limits_for(event) == limits


def metric(process: Timefuse, name: str, destination: str) -> float | None:
    process.metrics.destinations.prepare(None)  # what a scrape does first, on the loop
    return process.metrics.registry.get_sample_value(name, {"destination": destination})


async def test_a_tripped_breaker_shows_in_the_metrics_until_it_closes(
    process: Timefuse,
) -> None:
    gate = process.dispatcher.gate
    failing = DeliveryOutcome.retriable("HTTP 503", 503)
    for n in range(3):
        claimed = Claimed.of(make_event(destination="https://down.example/hook"), 0.0)
        gate.admit(claimed)
        assert metric(process, "timefuse_destination_in_flight", "down.example:443") == 1
        assert metric(process, "timefuse_destination_breaker_open", "down.example:443") == 0
        gate.finished(claimed, failing, 0.1)
        # The configured three failures open it, not the default five.
        assert gate.snapshot()["down.example:443"]["breaker"] == ("CLOSED", "CLOSED", "OPEN")[n]
    assert metric(process, "timefuse_destination_breaker_open", "down.example:443") == 1
    assert metric(process, "timefuse_destination_breaker_trips_total", "down.example:443") == 1
    probe_in = gate.snapshot()["down.example:443"]["probe_in_seconds"]
    assert probe_in == pytest.approx(7.0, abs=0.5)  # the configured cooldown
    assert gate.reset_breaker("down.example:443")
    # Closed and idle: no longer among the active destinations /metrics shows.
    assert metric(process, "timefuse_destination_breaker_open", "down.example:443") is None


@pytest.mark.parametrize(("lease", "hold"), [("8", 2.0), ("60", 5.0)])
def test_claimed_events_wait_a_quarter_of_the_lease_at_most_and_never_over_5_s(
    process: Timefuse, lease: str, hold: float
) -> None:
    settings = Settings.from_env({**ENV, "TIMEFUSE_LEASE_SECONDS": lease})
    assert gate_settings(settings.dispatch, process.registry).hold_seconds == hold
