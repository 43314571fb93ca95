"""The gate under shared limits: it follows the breakers other processes opened, closes them
here once their rows are gone (but not one it opened itself within the grace), and an
operator's reset closes every shared row of the destination."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.test_gate import FAIL, OK, ManualClock, Seen, claimed
from tests.service.test_gate_sources import (
    A_AT_HOST,
    HOST,
    KEY,
    A,
    B,
    Published,
    attempt,
    gate_for,
)
from timefuse.ports.store import DestinationRule, SharedBreaker, SharedLimits
from timefuse.service.gate import DestinationGate, DestinationLimits, GateSettings

pytestmark = pytest.mark.looptime

OTHER = "other.example:443"


async def test_a_destination_breaker_open_elsewhere_holds_it_here_until_its_row_is_gone() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    attempt(gate, B, OK)  # the destination is known here, and idle
    gate.sync_breakers([SharedBreaker(KEY, 5.0, None)])
    state = gate.snapshot()[KEY]
    assert (state["breaker"], state["breaker_for_all"], state["probe_in_seconds"]) == (
        "OPEN",
        True,
        25.0,
    )
    assert KEY in gate.claim_budget().excluded
    assert list(gate.snapshot(active_only=True)) == [KEY]
    # Another process's probe succeeded: the row is gone, so the breaker closes here too.
    await asyncio.sleep(1.0)
    gate.sync_breakers([])
    state = gate.snapshot()[KEY]
    assert (state["breaker"], state["breaker_for_all"]) == ("CLOSED", False)
    assert KEY not in gate.claim_budget().excluded
    assert gate.snapshot(active_only=True) == {}
    assert published.changes == []  # nothing this process judged itself
    attempt(gate, B)  # the next failure counts from one
    assert gate.snapshot()[KEY]["consecutive_failures"] == 1


async def test_a_source_breaker_open_elsewhere_closes_here_when_its_row_is_gone() -> None:
    seen = Seen()
    gate = gate_for(seen, shared=True)
    attempt(gate, B, OK)
    gate.sync_breakers([SharedBreaker(A_AT_HOST, 5.0, None)])
    assert gate.snapshot()[KEY]["held_sources"] == [A]
    await asyncio.sleep(1.0)
    gate.sync_breakers([])
    assert gate.snapshot()[KEY]["held_sources"] == []
    assert A_AT_HOST not in gate.claim_budget().excluded


async def test_a_destination_breaker_opened_here_outlasts_a_missing_row_for_the_grace() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True, breaker_failures=2)
    await asyncio.sleep(10.0)
    attempt(gate, A)
    attempt(gate, B)
    assert published.changes == [(KEY, True)]
    await asyncio.sleep(2.0)  # its publication may still be on its way
    gate.sync_breakers([])
    assert gate.snapshot()[KEY]["breaker_for_all"] is True
    await asyncio.sleep(0.5)
    gate.sync_breakers([])
    assert gate.snapshot()[KEY]["breaker_for_all"] is False


async def test_a_source_breaker_opened_here_outlasts_a_missing_row_for_the_grace() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    await asyncio.sleep(10.0)
    for _ in range(3):
        attempt(gate, A)
    assert published.changes == [(A_AT_HOST, True)]
    await asyncio.sleep(2.0)
    gate.sync_breakers([])
    assert gate.snapshot()[KEY]["held_sources"] == [A]
    await asyncio.sleep(0.5)
    gate.sync_breakers([])
    assert gate.snapshot()[KEY]["held_sources"] == []


async def test_a_shared_probe_shows_half_open_and_its_success_closes_the_breaker() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    attempt(gate, B, OK)
    gate.sync_breakers([SharedBreaker(KEY, 5.0, None)])
    await asyncio.sleep(25.0)
    probe = claimed(HOST, source=B)
    gate.admit(probe, probe=True)
    assert gate.snapshot()[KEY]["breaker"] == "HALF_OPEN"
    gate.finished(probe, OK, 0.1)
    assert published.changes == [(KEY, False)]
    assert gate.snapshot()[KEY]["breaker"] == "CLOSED"


async def test_a_sync_while_a_sources_probe_is_out_keeps_that_probe() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    attempt(gate, B, OK)
    gate.sync_breakers([SharedBreaker(A_AT_HOST, 5.0, None)])
    await asyncio.sleep(30.0)
    probe = claimed(HOST, source=A)
    gate.admit(probe, probe=True)
    gate.sync_breakers([SharedBreaker(A_AT_HOST, 35.0, "worker-1")])  # the probe's own row
    gate.finished(probe, FAIL, 0.1)
    # The probe's failure reopens A's breaker, and that is published for everyone.
    assert published.changes == [(A_AT_HOST, True)]
    assert gate.snapshot()[KEY]["held_sources"] == [A]


async def test_a_reset_closes_the_shared_rows_of_sources_not_met_here_and_no_others() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    # Rows listed before this process met the destination: nothing here to open for them.
    gate.sync_breakers([SharedBreaker(A_AT_HOST, 5.0, None), SharedBreaker(OTHER, 5.0, None)])
    assert {A_AT_HOST, OTHER} <= gate.claim_budget().excluded
    attempt(gate, B, OK)  # B's events to the host still come
    assert gate.reset_breaker(KEY)
    assert published.changes == [(A_AT_HOST, False)]
    excluded = gate.claim_budget().excluded
    assert A_AT_HOST not in excluded
    assert OTHER in excluded


def gate_on(clock: ManualClock, published: Published, **settings: object) -> DestinationGate:
    """A gate with shared limits on a clock that moves only when the test moves it."""
    return DestinationGate(
        GateSettings(shared=True, breaker_cooldown_seconds=30.0, **settings),  # type: ignore[arg-type]
        start=lambda c: None,
        hand_back=lambda c, delay, why: None,
        monotonic=clock,
        on_breaker=lambda key, opened: published.changes.append((key, opened)),
    )


async def test_the_store_is_given_every_rule_with_the_burst_it_means_and_what_is_held_here() -> (
    None
):
    gate = gate_for(
        Seen(),
        shared=True,
        breaker_cooldown_seconds=12.0,
        default=DestinationLimits(concurrency=10, rate=2.5),
        overrides={
            KEY: DestinationLimits(concurrency=3, rate=10.0, burst=4),
            OTHER: DestinationLimits(concurrency=0, rate=0.5, burst=3),
        },
        type_defaults={"kafka": DestinationLimits(concurrency=0, rate=0.5)},
    )
    gate.admit(claimed(HOST))
    gate.admit(claimed(HOST))
    # burst 0: a second's worth of the rate, rounded up, at least 1.
    assert gate.shared_limits() == SharedLimits(
        default=DestinationRule(10, 2.5, 3),
        overrides={KEY: DestinationRule(3, 10.0, 4), OTHER: DestinationRule(0, 0.5, 3)},
        type_defaults={"kafka": DestinationRule(0, 0.5, 1)},
        mine={KEY: 2},
        breaker_cooldown_seconds=12.0,
    )


async def test_a_destination_another_process_probes_is_left_out_of_claims_for_a_second() -> None:
    clock = ManualClock()
    gate = gate_on(clock, Published())
    # Cooled down long ago, but its one probe is out elsewhere.
    gate.sync_breakers([SharedBreaker(KEY, 40.0, "worker-2")])
    clock.now += 0.5
    assert KEY in gate.claim_budget().excluded
    clock.now += 0.6
    assert KEY not in gate.claim_budget().excluded


async def test_a_destination_opened_elsewhere_is_left_out_until_its_cool_down_ends() -> None:
    clock = ManualClock()
    clock.now = 1000.0
    gate = gate_on(clock, Published())
    gate.sync_breakers([SharedBreaker(KEY, 5.0, None)])  # not met here: 25 s of it left
    clock.now = 1024.5
    assert KEY in gate.claim_budget().excluded
    clock.now = 1025.0  # its probe may be claimed now
    assert KEY not in gate.claim_budget().excluded


async def test_a_destination_breaker_opened_here_is_left_out_until_its_cool_down_ends() -> None:
    clock = ManualClock()
    clock.now = 1000.0
    published = Published()
    gate = gate_on(clock, published, breaker_failures=2)
    for source in (A, B):
        failing = claimed(HOST, source=source)
        gate.admit(failing)
        gate.finished(failing, FAIL, 0.1)
    assert published.changes == [(KEY, True)]
    clock.now = 1029.5
    assert KEY in gate.claim_budget().excluded
    clock.now = 1030.0
    assert KEY not in gate.claim_budget().excluded


async def test_a_probe_of_a_destination_and_its_source_not_met_here_closes_both() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    gate.sync_breakers([SharedBreaker(KEY, 40.0, None), SharedBreaker(A_AT_HOST, 40.0, None)])
    probe = claimed(HOST, source=A)
    gate.admit(probe, probe=True)
    state = gate.snapshot()[KEY]
    assert (state["breaker"], state["held_sources"]) == ("HALF_OPEN", [A])
    gate.finished(probe, OK, 0.1)
    assert published.changes == [(A_AT_HOST, False), (KEY, False)]
    assert gate.snapshot()[KEY]["held_sources"] == []


async def test_a_failed_probe_of_a_destination_reopens_it_for_everyone() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    gate.sync_breakers([SharedBreaker(KEY, 40.0, None)])
    probe = claimed(HOST, source=A)
    gate.admit(probe, probe=True)
    gate.finished(probe, FAIL, 0.1)
    assert published.changes == [(KEY, True)]
    assert gate.snapshot()[KEY]["breaker"] == "OPEN"


async def test_a_probe_given_before_any_sync_probes_its_sources_breaker() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    # Another process opened A's breaker here; this one hasn't synced since.
    probe = claimed(HOST, source=A)
    gate.admit(probe, probe=True)
    state = gate.snapshot()[KEY]
    assert (state["breaker_for_all"], state["held_sources"]) == (False, [A])
    gate.finished(probe, OK, 0.1)
    assert published.changes == [(A_AT_HOST, False)]


async def test_a_failed_probe_of_breakers_opened_here_reopens_the_sources_too() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True, breaker_failures=2)
    for source in (A, A, B):  # A's own breaker opens, then B's failure opens the destination's
        attempt(gate, source)
    assert published.changes == [(A_AT_HOST, True), (KEY, True)]
    await asyncio.sleep(30.0)
    # Their rows were never listed here (no sync yet): the probe is for both all the same.
    probe = claimed(HOST, source=A)
    gate.admit(probe, probe=True)
    gate.finished(probe, FAIL, 0.1)
    assert published.changes[2:] == [(A_AT_HOST, True), (KEY, True)]
    assert A_AT_HOST in gate.claim_budget().excluded


async def test_an_event_given_plainly_closes_the_breakers_held_here_for_it() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    attempt(gate, B, OK)
    gate.sync_breakers([SharedBreaker(KEY, 5.0, None), SharedBreaker(A_AT_HOST, 5.0, None)])
    assert gate.snapshot()[KEY]["held_sources"] == [A]
    # The store let it through no breaker: both closed for everyone (probes elsewhere).
    plain = claimed(HOST, source=A)
    gate.admit(plain)
    state = gate.snapshot()[KEY]
    assert (state["breaker"], state["held_sources"]) == ("CLOSED", [])
    gate.finished(plain, FAIL, 0.1)  # a new run of failures starts
    assert gate.snapshot()[KEY]["consecutive_failures"] == 1
    assert published.changes == []
