"""The breaker rule across sources, in the gate: one source's failures hold only that source;
failures from several sources hold the destination for everyone."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tests.service.conftest import loop_time
from tests.service.test_gate import FAIL, OK, Seen, claimed
from timefuse.ports.store import SharedBreaker
from timefuse.service.gate import (
    Claimed,
    DestinationGate,
    DestinationLimits,
    GateSettings,
    HandBackReason,
    source_breaker_key,
)

pytestmark = pytest.mark.looptime

HOST = "shared.example"
KEY = "shared.example:443"
A, B, C = "tenant-a", "tenant-b", "tenant-c"
A_AT_HOST = source_breaker_key(KEY, A)


@dataclass
class Published:
    changes: list[tuple[str, bool]] = field(default_factory=list)


def gate_for(seen: Seen, published: Published | None = None, **settings: object) -> DestinationGate:
    fields: dict[str, object] = {"breaker_failures": 3, "breaker_cooldown_seconds": 30.0}
    fields.update(settings)
    return DestinationGate(
        GateSettings(**fields),  # type: ignore[arg-type]
        start=seen.started.append,
        hand_back=lambda c, delay, why: seen.handed_back.append((c, delay, why)),
        monotonic=loop_time,
        on_room=lambda: setattr(seen, "rooms", seen.rooms + 1),
        on_breaker=lambda key, opened: (published or Published()).changes.append((key, opened)),
    )


def attempt(gate: DestinationGate, source: str, outcome: object = FAIL) -> Claimed:
    c = claimed(HOST, source=source)
    gate.admit(c)
    gate.finished(c, outcome, 0.1)  # type: ignore[arg-type]
    return c


async def test_one_sources_failures_hold_only_that_source() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published)
    for _ in range(3):
        attempt(gate, A)
    assert published.changes == [(A_AT_HOST, True)]
    budget = gate.claim_budget()
    assert A_AT_HOST in budget.excluded
    assert KEY not in budget.excluded
    assert budget.budgets[KEY] >= 1
    held, other = claimed(HOST, source=A), claimed(HOST, source=B)
    gate.admit(held)
    gate.admit(other)
    assert seen.started[-1] is other
    (back, delay, reason) = seen.handed_back[-1]
    assert (back, reason) == (held, HandBackReason.BREAKER)
    assert delay <= 5.0  # back within a hold time, so a reset releases it soon
    state = gate.snapshot()[KEY]
    assert (state["breaker"], state["breaker_for_all"], state["held_sources"]) == (
        "OPEN",
        False,
        [A],
    )


async def test_failures_from_two_sources_hold_the_destination_for_everyone() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published)
    attempt(gate, A)
    attempt(gate, A)
    attempt(gate, B)
    assert published.changes == [(KEY, True)]  # neither source reached 3 on its own
    assert KEY in gate.claim_budget().excluded
    late = claimed(HOST, source=C)
    gate.admit(late)
    (back, delay, reason) = seen.handed_back[-1]
    assert (back, reason) == (late, HandBackReason.BREAKER)
    # Due again at once: claims leave the held destination out until its probe, so a reset
    # of the breaker releases it without waiting out the cool-down.
    assert delay < 1.0
    assert gate.snapshot()[KEY]["breaker_for_all"] is True


async def test_a_success_between_failures_keeps_the_destination_open_to_others() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published)
    attempt(gate, A)
    attempt(gate, A)
    attempt(gate, C, OK)  # the receiver answers another source
    attempt(gate, B)
    attempt(gate, A)  # A's third failure in a row: A alone is held
    assert published.changes == [(A_AT_HOST, True)]
    budget = gate.claim_budget()
    assert KEY not in budget.excluded
    assert source_breaker_key(KEY, B) not in budget.excluded


async def test_a_held_sources_probe_decides_for_that_source_alone() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published)
    for _ in range(3):
        attempt(gate, A)
    await asyncio.sleep(30.0)
    assert A_AT_HOST not in gate.claim_budget().excluded  # cooled down: one may probe
    probe, second = claimed(HOST, source=A), claimed(HOST, source=A)
    gate.admit(probe)
    gate.admit(second)
    assert seen.started[-1] is probe
    assert seen.handed_back[-1][0] is second
    assert A_AT_HOST in gate.claim_budget().excluded  # while its probe is out
    gate.finished(probe, OK, 0.1)
    assert published.changes[-1] == (A_AT_HOST, False)
    assert A_AT_HOST not in gate.claim_budget().excluded
    again = claimed(HOST, source=A)
    gate.admit(again)
    assert seen.started[-1] is again


async def test_a_failed_probe_holds_the_source_for_another_cooldown() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published)
    for _ in range(3):
        attempt(gate, A)
    await asyncio.sleep(30.0)
    attempt(gate, A)  # the probe fails
    assert published.changes == [(A_AT_HOST, True), (A_AT_HOST, True)]
    assert gate.snapshot()[KEY]["trips"] == 2
    assert A_AT_HOST in gate.claim_budget().excluded
    assert KEY not in gate.claim_budget().excluded  # one source's probe holds no one else


async def test_a_reset_closes_the_destinations_and_its_sources_breakers() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, breaker_cooldown_seconds=600.0)
    for _ in range(3):
        attempt(gate, A)
    attempt(gate, B)  # four failures in a row from two sources: for everyone now
    assert KEY in gate.claim_budget().excluded
    rooms = seen.rooms
    assert gate.reset_breaker(KEY)
    assert sorted(published.changes[-2:]) == [(KEY, False), (A_AT_HOST, False)]
    assert seen.rooms == rooms + 1  # the dispatcher claims again at once
    budget = gate.claim_budget()
    assert not {KEY, A_AT_HOST} & budget.excluded
    for source in (A, B):
        c = claimed(HOST, source=source)
        gate.admit(c)
        assert seen.started[-1] is c


async def test_a_waiting_event_of_a_source_that_gets_held_is_handed_back() -> None:
    seen = Seen()
    limits = DestinationLimits(concurrency=0, rate=0.1, burst=3)
    gate = gate_for(seen, default=limits, hold_seconds=5.0)
    running = [claimed(HOST, source=A) for _ in range(3)]
    for c in running:
        gate.admit(c)  # the burst's three tokens
    queued_a, queued_b = claimed(HOST, source=A), claimed(HOST, source=B)
    gate.admit(queued_a)
    gate.admit(queued_b)  # both wait for a token
    for c in running:
        gate.finished(c, FAIL, 0.1)  # the third failure holds A
    assert [(c, why) for c, _, why in seen.handed_back] == [(queued_a, HandBackReason.BREAKER)]
    assert gate.snapshot()[KEY]["waiting"] == 1  # B's event still waits for its token


async def test_shared_breakers_of_sources_are_followed_and_probed() -> None:
    seen, published = Seen(), Published()
    gate = gate_for(seen, published, shared=True)
    gate.admit(claimed(HOST, source=B))  # the destination is known here
    gate.sync_breakers([SharedBreaker(A_AT_HOST, 5.0, None)])
    budget = gate.claim_budget()
    assert A_AT_HOST in budget.excluded
    assert KEY not in budget.excluded
    assert gate.snapshot()[KEY]["held_sources"] == [A]
    # After its cool-down the store gives A's probe; it fails: A's breaker reopens, only it.
    await asyncio.sleep(30.0)
    probe = claimed(HOST, source=A)
    gate.admit(probe, probe=True)
    gate.finished(probe, FAIL, 0.1)
    assert published.changes == [(A_AT_HOST, True)]
    # Another process's probe succeeded: the row is gone, so it closes here too.
    await asyncio.sleep(3.0)
    gate.sync_breakers([])
    assert gate.snapshot()[KEY]["held_sources"] == []


async def test_after_a_sources_abandoned_probe_another_event_of_it_may_probe() -> None:
    seen = Seen()
    gate = gate_for(seen)
    for _ in range(3):
        attempt(gate, A)
    await asyncio.sleep(30.0)
    probe = claimed(HOST, source=A)
    gate.admit(probe)
    assert A_AT_HOST in gate.claim_budget().excluded  # while its probe is out
    gate.abandoned(probe)  # it never ran
    assert A_AT_HOST not in gate.claim_budget().excluded
    again = claimed(HOST, source=A)
    gate.admit(again)
    assert seen.started[-1] is again


async def test_a_held_sources_event_comes_back_when_its_probe_is_due_within_the_hold_time() -> None:
    seen = Seen()
    gate = gate_for(seen, hold_seconds=5.0)
    for _ in range(3):
        attempt(gate, A)  # A's breaker reopens 30 s from now
    early = claimed(HOST, source=A)
    gate.admit(early)
    await asyncio.sleep(27.0)
    later = claimed(HOST, source=A)
    gate.admit(later)
    await asyncio.sleep(2.5)
    last = claimed(HOST, source=A)
    gate.admit(last)
    delays = [(c, why, pytest.approx(delay)) for c, delay, why in seen.handed_back]
    assert delays == [
        (early, HandBackReason.BREAKER, 5.0),  # a whole hold time, not the cool-down
        (later, HandBackReason.BREAKER, 3.0),
        (last, HandBackReason.BREAKER, 0.5),
    ]


async def test_a_held_sources_event_does_not_take_the_destinations_probe_from_the_others() -> None:
    seen = Seen()
    gate = gate_for(seen)
    a1, a2, a3, b1 = (claimed(HOST, source=s) for s in (A, A, A, B))
    for c in (a1, a2, a3, b1):
        gate.admit(c)
    for c in (a1, a2, b1):  # failures from two sources: the destination opens, reopens at 30
        gate.finished(c, FAIL, 0.1)
    await asyncio.sleep(10.0)
    gate.finished(a3, FAIL, 0.1)  # A's third: A's own breaker opens, reopens at 40
    await asyncio.sleep(27.0)
    # The destination may be probed now, but not by A, held for 3 s more.
    held, other = claimed(HOST, source=A), claimed(HOST, source=B)
    gate.admit(held)
    assert seen.handed_back == [(held, 3.0, HandBackReason.BREAKER)]
    gate.admit(other)
    assert seen.started[-1] is other
    assert gate.snapshot()[KEY]["breaker"] == "HALF_OPEN"
