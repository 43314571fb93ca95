"""The gate at shutdown: drain gives back every waiting event and stops the timers."""

from __future__ import annotations

import asyncio

import pytest

from tests.service.test_gate import OK, Seen, claimed, gate_with
from timefuse.service.gate import DestinationLimits

pytestmark = pytest.mark.looptime


async def test_drain_gives_back_the_waiting_and_files_their_destination_idle() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(rate=1.0, burst=1), hold_seconds=5.0)
    first, second = claimed(), claimed()
    gate.admit(first)
    gate.admit(second)  # no token left: waits
    gate.finished(first, OK, 0.1)
    assert gate.snapshot(active_only=True)["a.example:443"]["waiting"] == 1
    assert gate.drain() == [second]
    assert gate.occupied == 0
    assert gate.snapshot(active_only=True) == {}  # nothing in flight or waiting there now
    assert gate.shared_limits().mine == {}
    await asyncio.sleep(10.0)
    assert seen.started == [first]
    assert seen.handed_back == []  # its timer was stopped: given back by drain only


async def test_after_drain_no_timer_is_set_and_a_late_event_is_given_by_the_next_drain() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=2.0)
    running, waiting, late = claimed(), claimed(), claimed()
    gate.admit(running)
    gate.admit(waiting)
    assert gate.drain() == [waiting]
    gate.admit(late)  # the one slot is still taken: it waits, with no timer to hand it back
    assert gate.occupied == 2
    await asyncio.sleep(5.0)
    assert seen.handed_back == []
    assert gate.drain() == [late]
    assert seen.started == [running]
