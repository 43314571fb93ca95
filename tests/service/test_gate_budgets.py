"""How much a claim may take for a destination the gate knows: its free slots and tokens,
plus what its pace starts within a hold time, within its queue limit."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.test_gate import OK, Seen, claimed, gate_with
from timefuse.service.gate import RECENTLY_IDLE_LISTED, DestinationLimits

pytestmark = pytest.mark.looptime

HOST = "known.example"
KEY = "known.example:443"


async def test_a_known_destinations_budget_follows_its_typical_delivery_time() -> None:
    gate = gate_with(Seen(), default=DestinationLimits(concurrency=2), hold_seconds=5.0)
    first = claimed(HOST)
    gate.admit(first)
    # Nothing finished yet: a round of the cap per hold time is assumed (2 / 5 s per second).
    assert gate.claim_budget().budgets[KEY] == 2  # floor(1 free + 0.4 * 5 * 0.8)
    gate.finished(first, OK, 0.5)
    # 2 free slots, plus 2 / 0.5 s = 4 per second for 80 % of the hold time.
    assert gate.claim_budget().budgets[KEY] == 18


async def test_a_rate_under_one_per_second_still_paces_a_known_destination() -> None:
    gate = gate_with(Seen(), default=DestinationLimits(concurrency=0, rate=0.5))
    gate.admit(claimed(HOST))  # takes the bucket's one token
    # No token now, 0.5 per second for 80 % of the 5 s hold time.
    assert gate.claim_budget().budgets[KEY] == 2


async def test_an_unlimited_known_destination_may_take_as_much_as_an_unknown_one() -> None:
    gate = gate_with(Seen(), default=DestinationLimits(concurrency=0))
    gate.admit(claimed(HOST))
    budget = gate.claim_budget()
    assert budget.budgets[KEY] == budget.default == 1_000_000


async def test_a_queue_limit_lets_as_many_wait_as_it_says_on_top_of_the_free_slots() -> None:
    gate = gate_with(Seen(), default=DestinationLimits(concurrency=5, queue=10))
    first = claimed(HOST)
    gate.admit(first)
    gate.finished(first, OK, 0.1)  # a fast receiver: its pace alone would allow 200 more
    assert gate.claim_budget().budgets[KEY] == 15


async def test_a_drained_destination_keeps_its_known_budget_for_a_hold_time() -> None:
    gate = gate_with(Seen(), default=DestinationLimits(concurrency=2), hold_seconds=5.0)
    await asyncio.sleep(10.0)
    first = claimed(HOST)
    gate.admit(first)
    gate.finished(first, OK, 0.5)  # idle from t = 10
    await asyncio.sleep(5.0)
    budget = gate.claim_budget()
    assert budget.budgets[KEY] == 18  # as in the test above, at the hold time's very end
    await asyncio.sleep(0.001)
    budget = gate.claim_budget()
    assert KEY not in budget.budgets  # now it gets what an unknown destination gets
    assert budget.default == 2


async def test_a_claim_lists_only_the_latest_destinations_that_drained() -> None:
    gate = gate_with(Seen(), default=DestinationLimits(concurrency=2))
    hosts = [f"host-{n}.example" for n in range(RECENTLY_IDLE_LISTED + 1)]
    for host in hosts:
        c = claimed(host)
        gate.admit(c)
        gate.finished(c, OK, 0.5)
    listed = gate.claim_budget().budgets
    assert len(listed) == RECENTLY_IDLE_LISTED
    assert f"{hosts[0]}:443" not in listed  # the first to drain
    assert f"{hosts[-1]}:443" in listed
