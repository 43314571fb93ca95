"""The gate under shared limits: it follows the breakers other processes opened, closes them
here once their rows are gone (but not one it opened itself within the grace), and an
operator's reset closes every shared row of the destination."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.test_gate import FAIL, OK, Seen, claimed
from tests.service.test_gate_sources import A_AT_HOST, HOST, KEY, A, B, Published, attempt, gate_for
from timefuse.ports.store import SharedBreaker

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
