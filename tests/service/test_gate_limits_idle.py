"""The gate's limits per delivery type and destination, which idle destinations it remembers,
and how a destination left out of claims comes back."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.test_gate import FAIL, OK, Seen, claimed, gate_with
from timefuse.service.gate import DestinationLimits
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.looptime

KAFKA = DestinationLimits(concurrency=3, rate=0.5, burst=2)
ORDERS = DestinationLimits(concurrency=1)
HOOKS = DestinationLimits(concurrency=7)


async def test_a_delivery_types_default_limits_apply_with_no_override_set() -> None:
    gate = gate_with(Seen(), type_defaults={"kafka": KAFKA})
    event = make_event(delivery_type="kafka", destination="orders")
    assert gate.limits_for(event) == KAFKA


async def test_a_delivery_types_default_limits_apply_when_no_override_matches() -> None:
    gate = gate_with(Seen(), type_defaults={"kafka": KAFKA}, overrides={"hooks.example:443": HOOKS})
    event = make_event(delivery_type="kafka", destination="orders")
    assert gate.limits_for(event) == KAFKA


async def test_an_override_for_a_non_url_destination_is_found_by_its_type_and_name() -> None:
    gate = gate_with(Seen(), type_defaults={"kafka": KAFKA}, overrides={"kafka:orders": ORDERS})
    assert gate.limits_for(make_event(delivery_type="kafka", destination="orders")) == ORDERS
    assert gate.limits_for(make_event(delivery_type="kafka", destination="payments")) == KAFKA


async def test_a_destination_busy_again_is_not_forgotten_as_idle() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_max=1)
    first = claimed("busy.example")
    gate.admit(first)
    gate.finished(first, OK, 0.1)  # idle now
    again = claimed("busy.example")
    gate.admit(again)  # busy again
    other = claimed("other.example")
    gate.admit(other)
    gate.finished(other, OK, 0.1)  # the one idle destination
    assert sorted(gate.snapshot()) == ["busy.example:443", "other.example:443"]
    gate.finished(again, OK, 0.1)
    assert gate.occupied == 0


async def test_a_destination_idle_again_counts_as_idle_since_its_latest_use() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_max=2, breaker_failures=2, breaker_cooldown_seconds=30.0)
    for source in ("tenant-a", "tenant-b"):  # two sources fail: a.example is held
        c = claimed("a.example", source=source)
        gate.admit(c)
        gate.finished(c, FAIL, 0.1)
    await asyncio.sleep(1.0)
    c = claimed("b.example")
    gate.admit(c)
    gate.finished(c, OK, 0.1)
    await asyncio.sleep(1.0)
    refused = claimed("a.example")
    gate.admit(refused)  # handed back at once: a.example is idle since now
    assert [c for c, _, _ in seen.handed_back] == [refused]
    await asyncio.sleep(1.0)
    c = claimed("c.example")
    gate.admit(c)
    gate.finished(c, OK, 0.1)  # three idle, two kept: the longest idle (b) goes
    assert sorted(gate.snapshot()) == ["a.example:443", "c.example:443"]


async def test_idle_destinations_up_to_the_limit_stay_until_a_claim_sweeps_them() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_max=2, idle_seconds=1.0)
    for host in ("a.example", "b.example"):
        c = claimed(host)
        gate.admit(c)
        gate.finished(c, OK, 0.1)
        await asyncio.sleep(5.0)
    assert gate.tracked == 2  # the bound is not passed: nothing forgotten yet
    gate.claim_budget()
    assert gate.tracked == 0


async def test_a_rate_limited_destination_left_out_asks_for_claims_again_once_it_has_room() -> None:
    seen = Seen()
    gate = gate_with(
        seen, default=DestinationLimits(concurrency=1, rate=100.0, burst=5), hold_seconds=1.0
    )
    first = claimed("slow.example")
    gate.admit(first)
    assert "slow.example:443" in gate.claim_budget().excluded
    gate.finished(first, OK, 10.0)
    assert seen.rooms == 1


async def test_room_is_announced_once_per_exclusion_not_at_every_completion() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=1.0)
    first = claimed("slow.example")
    gate.admit(first)
    assert "slow.example:443" in gate.claim_budget().excluded
    gate.finished(first, OK, 10.0)
    assert seen.rooms == 1
    second = claimed("slow.example")
    gate.admit(second)
    gate.finished(second, OK, 10.0)
    assert seen.rooms == 1  # not left out of a claim since: nothing to announce
