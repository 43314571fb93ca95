"""What the gate remembers stays bounded however many destinations a tenant sends to."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.conftest import loop_time
from tests.service.test_gate import FAIL, OK, Seen, claimed
from timefuse.service.gate import DestinationGate, GateSettings

pytestmark = pytest.mark.looptime


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
