"""What the gate remembers stays bounded however many destinations a tenant sends to, and so
does what a scrape of /metrics shows of them."""

from __future__ import annotations

import asyncio
import re
import tracemalloc
from dataclasses import replace

import pytest

from tests.service.conftest import loop_time
from tests.service.test_gate import FAIL, OK, Seen, claimed
from timefuse.domain.event import Event
from timefuse.service.gate import Claimed, DestinationGate, GateSettings
from timefuse.service.metrics import Metrics
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.looptime

SERIES = re.compile(r"^timefuse_destination_\w+\{destination=", re.MULTILINE)


def gate_with(seen: Seen, **settings: object) -> DestinationGate:
    return DestinationGate(
        GateSettings(**settings),  # type: ignore[arg-type]
        start=seen.started.append,
        hand_back=lambda c, delay, why: seen.handed_back.append((c, delay, why)),
        monotonic=loop_time,
    )


async def test_idle_destinations_past_the_limit_are_forgotten_longest_idle_first() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_max=3)
    for n in range(5):
        c = claimed(f"host-{n}.example")
        gate.admit(c)
        gate.finished(c, OK, 0.1)
        await asyncio.sleep(1.0)
    assert gate.tracked == 3
    assert sorted(gate.snapshot()) == [f"host-{n}.example:443" for n in (2, 3, 4)]


async def test_a_busy_destination_is_never_forgotten() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_max=0, idle_seconds=1.0)
    busy = claimed("busy.example")
    gate.admit(busy)
    for n in range(3):
        c = claimed(f"host-{n}.example")
        gate.admit(c)
        gate.finished(c, OK, 0.1)
    await asyncio.sleep(10.0)
    gate.claim_budget()
    assert list(gate.snapshot()) == ["busy.example:443"]
    gate.finished(busy, OK, 0.1)  # still counted and judged
    assert gate.occupied == 0


async def test_a_failure_count_is_forgotten_with_its_idle_destination() -> None:
    # A destination that failed once and never came back must not be kept for ever.
    seen = Seen()
    gate = gate_with(seen, idle_seconds=60.0)
    c = claimed("failed-once.example")
    gate.admit(c)
    gate.finished(c, FAIL, 0.1)
    await asyncio.sleep(61.0)
    gate.claim_budget()
    assert gate.tracked == 0


async def test_an_open_breaker_is_kept_until_its_cooldown_is_long_over() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_seconds=60.0, breaker_failures=2, breaker_cooldown_seconds=120.0)
    for source in ("tenant-a", "tenant-b"):
        c = claimed("down.example", source=source)
        gate.admit(c)
        gate.finished(c, FAIL, 0.1)
    await asyncio.sleep(150.0)  # idle for longer than idle_seconds, still within reach
    assert "down.example:443" in gate.claim_budget().budgets  # up for its probe
    assert gate.tracked == 1
    await asyncio.sleep(40.0)  # the cool-down ended more than idle_seconds ago
    gate.claim_budget()
    assert gate.tracked == 0


async def test_a_claim_lists_only_busy_held_and_just_idle_destinations() -> None:
    seen = Seen()
    gate = gate_with(seen, hold_seconds=2.0)
    for n in range(1000):
        c = claimed(f"host-{n}.example")
        gate.admit(c)
        gate.finished(c, OK, 0.1)
    await asyncio.sleep(3.0)
    busy = claimed("busy.example")
    gate.admit(busy)
    budget = gate.claim_budget()
    assert set(budget.budgets) == {"busy.example:443"}
    assert gate.tracked == 1001  # remembered all the same, until idle_seconds


def sprayed(template: Event, batch: int, n: int) -> Claimed:
    # A distinct receiver per event, built without parsing a URL 100,000 times.
    host = f"h{batch}-{n}.example"
    event = replace(
        template,
        id=f"{batch:08d}-{n:04d}",
        source=f"s{n % 7}",
        destination=f"https://{host}/hook",
        destination_key=f"{host}:443",
    )
    return Claimed.of(event, loop_time())


async def test_a_hundred_thousand_destinations_leave_memory_and_metrics_bounded() -> None:
    started = 0

    def start(_: Claimed) -> None:
        nonlocal started
        started += 1  # counted, not kept: what the test keeps must not be what it measures

    gate = DestinationGate(
        GateSettings(idle_max=2_000, idle_seconds=300.0),
        start=start,
        hand_back=lambda c, delay, why: pytest.fail("nothing waits here"),
        monotonic=loop_time,
    )
    metrics = Metrics()
    metrics.destinations.source = lambda sources: gate.snapshot(
        active_only=True, top=100, sources=sources
    )
    metrics.destinations.tracked = lambda: gate.tracked
    template = make_event(locked_by="worker-1", claim_count=1)

    async def spray(batches: range) -> None:
        for batch in batches:  # a claim of 500 events every 10 ms, each to a new receiver
            gate.claim_budget()
            claims = [sprayed(template, batch, n) for n in range(500)]
            for c in claims:
                gate.admit(c)
            # Half fail (a partial failure count each), half succeed; the last batch is still
            # in flight when the scrape comes.
            if batch < 199:
                for n, c in enumerate(claims):
                    gate.finished(c, FAIL if n % 2 else OK, 0.01)
            await asyncio.sleep(0.01)

    await spray(range(160))
    # Past the bound, what is kept no longer grows: the last 20,000 receivers, traced, leave
    # about as much as the bound holds (all 20,000 kept would leave ten times as much).
    tracemalloc.start()
    try:
        await spray(range(160, 200))
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert started == 100_000
    assert gate.tracked == 2_000 + 500  # the idle bound, and the batch in flight
    assert grown < 4_000_000, f"{grown / 1e6:.1f} MB"
    assert len(gate.claim_budget().budgets) <= 500 + 1000  # busy + latest idle, not 100,000
    body = (await metrics.exposition(None)).decode()
    series = SERIES.findall(body)
    assert len(series) == 4 * 100  # four series per destination, the 100 busiest
    assert len(body) < 100_000, len(body)
    assert "timefuse_destinations_tracked 2500.0" in body


async def test_an_idle_destination_is_kept_for_exactly_idle_seconds() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_seconds=300.0)
    await asyncio.sleep(100.0)  # idle from t=100 on the gate's clock, not from its start
    c = claimed("idle.example")
    gate.admit(c)
    gate.finished(c, OK, 0.1)
    await asyncio.sleep(150.0)
    gate.claim_budget()
    assert gate.tracked == 1
    await asyncio.sleep(150.0)  # idle for exactly idle_seconds: still kept
    gate.claim_budget()
    assert gate.tracked == 1
    await asyncio.sleep(0.5)
    gate.claim_budget()
    assert gate.tracked == 0
