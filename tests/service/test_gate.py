"""The destination gate on its own: what it starts, queues, hands back, and lets claims take."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tests.service.conftest import loop_time
from timefuse.domain.outcome import DeliveryOutcome
from timefuse.service.destination_state import source_breaker_key
from timefuse.service.gate import (
    Claimed,
    DestinationGate,
    DestinationLimits,
    GateSettings,
    HandBackReason,
)
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.looptime

FAIL = DeliveryOutcome.retriable("HTTP 503", 503)
OK = DeliveryOutcome.success(200)


@dataclass
class Seen:
    started: list[Claimed] = field(default_factory=list)
    handed_back: list[tuple[Claimed, float, HandBackReason]] = field(default_factory=list)
    rooms: int = 0


def gate_with(seen: Seen, **settings: object) -> DestinationGate:
    return DestinationGate(
        GateSettings(**settings),  # type: ignore[arg-type]
        start=seen.started.append,
        hand_back=lambda c, delay, why: seen.handed_back.append((c, delay, why)),
        monotonic=loop_time,
        on_room=lambda: setattr(seen, "rooms", seen.rooms + 1),
    )


def claimed(host: str = "a.example", at: float | None = None, source: str = "tests") -> Claimed:
    event = make_event(
        destination=f"https://{host}/hook", source=source, locked_by="worker-1", claim_count=1
    )
    return Claimed.of(event, loop_time() if at is None else at)


async def test_a_destination_with_room_starts_events_at_once() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=2))
    first, second, third = claimed(), claimed(), claimed()
    for c in (first, second, third):
        gate.admit(c)
    assert seen.started == [first, second]
    assert gate.occupied == 3  # two in flight, one waiting
    gate.finished(first, OK, 0.1)
    assert seen.started == [first, second, third]


async def test_nothing_waits_longer_than_the_hold_time() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=2.0)
    running, waiting = claimed(), claimed()
    gate.admit(running)
    gate.admit(waiting)
    await asyncio.sleep(1.9)
    assert seen.handed_back == []
    await asyncio.sleep(0.2)
    (back, delay, reason) = seen.handed_back[0]
    assert (back, reason) == (waiting, HandBackReason.WAIT)
    assert 0 < delay <= 2.0
    gate.finished(running, OK, 0.1)
    assert seen.started == [running]  # the handed-back event is not started after all


async def test_a_claim_made_long_ago_is_handed_back_not_started() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=2.0)
    busy = claimed()
    gate.admit(busy)
    stale = claimed(at=loop_time() - 5.0)  # its claim was asked for 5 s ago
    gate.admit(stale)
    assert [b for b, _, _ in seen.handed_back] == [stale]
    assert seen.started == [busy]


async def test_a_rate_starts_events_as_tokens_come_and_hands_back_the_rest() -> None:
    seen = Seen()
    starts: list[float] = []
    gate = DestinationGate(
        GateSettings(default=DestinationLimits(concurrency=0, rate=2.0, burst=1), hold_seconds=2.0),
        start=lambda c: starts.append(loop_time()),
        hand_back=lambda c, delay, why: seen.handed_back.append((c, delay, why)),
        monotonic=loop_time,
    )
    start = loop_time()
    for _ in range(10):
        gate.admit(claimed())
    await asyncio.sleep(3.0)
    # One token at once, then one each half second, until the claim's hold time is up.
    assert [round(t - start, 2) for t in starts] == [0.0, 0.5, 1.0, 1.5]
    assert len(seen.handed_back) == 6
    assert {reason for _, _, reason in seen.handed_back} == {HandBackReason.WAIT}
    # The tokens went to the events started: the next one is there half a second after
    # the last start, not spent on the events handed back.
    gate.admit(claimed())
    assert len(starts) == 5


async def test_a_destination_that_can_take_nothing_is_left_out_of_claims() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=1.0)
    first = claimed("slow.example")
    gate.admit(first)
    gate.finished(first, OK, 30.0)  # the receiver takes 30 s an answer
    gate.admit(claimed("slow.example"))
    budget = gate.claim_budget()
    assert "slow.example:443" in budget.excluded
    assert "slow.example:443" not in budget.budgets
    assert budget.default == 1  # a destination not met yet: one round of its cap


async def test_a_destination_left_out_asks_for_claims_again_once_it_has_room() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=1.0)
    first = claimed("slow.example")
    gate.admit(first)
    assert "slow.example:443" in gate.claim_budget().excluded
    rooms = seen.rooms
    gate.finished(first, OK, 10.0)
    assert seen.rooms == rooms + 1
    assert gate.claim_budget().budgets["slow.example:443"] >= 1


async def test_a_budget_is_what_a_destination_starts_within_the_hold_time() -> None:
    seen = Seen()
    gate = gate_with(
        seen,
        default=DestinationLimits(concurrency=0),
        overrides={"metered.example:443": DestinationLimits(concurrency=0, rate=10.0, burst=10)},
        hold_seconds=5.0,
    )
    budget = gate.claim_budget()
    assert budget.budgets["metered.example:443"] == 10  # nothing met yet: one burst
    gate.admit(claimed("metered.example"))
    # 9 tokens left + 10/s for (most of) the hold time.
    assert 40 <= gate.claim_budget().budgets["metered.example:443"] <= 50


async def test_an_open_breaker_hands_back_until_its_probe_and_leaves_claims_alone() -> None:
    seen = Seen()
    gate = gate_with(seen, breaker_failures=2, breaker_cooldown_seconds=30.0)
    for source in ("tenant-a", "tenant-b"):  # two sources fail: held for everyone
        c = claimed("down.example", source=source)
        gate.admit(c)
        gate.finished(c, FAIL, 0.1)
    assert "down.example:443" in gate.claim_budget().excluded
    late = claimed("down.example")
    gate.admit(late)
    (back, delay, reason) = seen.handed_back[-1]
    assert (back, reason) == (late, HandBackReason.BREAKER)
    # Due again at once: claims leave the destination out until its probe, so the event
    # waits in the store, and a reset lets it be claimed without waiting the cool-down out.
    assert delay < 1.0
    await asyncio.sleep(30.0)
    assert gate.claim_budget().budgets["down.example:443"] == 1  # the probe alone
    probe = claimed("down.example")
    gate.admit(probe)
    assert seen.started[-1] is probe
    assert "down.example:443" in gate.claim_budget().excluded  # while the probe is out


async def probing(seen: Seen) -> tuple[DestinationGate, Claimed]:
    """A gate whose destination's own breaker opened at one failure and cooled down for 5 s,
    and the event admitted then: its probe."""
    gate = gate_with(seen, breaker_failures=1, breaker_cooldown_seconds=5.0, breaker_sources=1)
    c = claimed("down.example")
    gate.admit(c)
    gate.finished(c, FAIL, 0.1)
    await asyncio.sleep(5.0)
    probe = claimed("down.example")
    gate.admit(probe)
    return gate, probe


async def test_an_abandoned_probe_lets_another_event_probe() -> None:
    seen = Seen()
    # One source is enough to open the destination's own breaker, whose probe this is.
    gate, probe = await probing(seen)
    gate.abandoned(probe)
    again = claimed("down.example")
    gate.admit(again)
    assert seen.started[-1] is again


async def test_a_reset_breaker_takes_events_at_once() -> None:
    seen = Seen()
    gate = gate_with(seen, breaker_failures=1, breaker_cooldown_seconds=600.0)
    c = claimed("down.example")
    gate.admit(c)
    gate.finished(c, FAIL, 0.1)
    rooms = seen.rooms
    gate.claim_budget()
    assert gate.reset_breaker("down.example:443")
    assert seen.rooms == rooms + 1
    after = claimed("down.example")
    gate.admit(after)
    assert seen.started[-1] is after
    assert not gate.reset_breaker("unknown.example:443")


async def test_an_idle_destination_is_forgotten() -> None:
    seen = Seen()
    gate = gate_with(seen, idle_seconds=60.0)
    c = claimed("once.example")
    gate.admit(c)
    gate.finished(c, OK, 0.1)
    assert "once.example:443" in gate.snapshot()
    await asyncio.sleep(61.0)
    gate.claim_budget()
    assert gate.snapshot() == {}


async def test_the_snapshot_of_active_destinations_is_bounded() -> None:
    seen = Seen()
    gate = gate_with(seen)
    for n in range(50):
        gate.admit(claimed(f"host-{n}.example"))
    done = claimed("idle.example")
    gate.admit(done)
    gate.finished(done, OK, 0.1)
    active = gate.snapshot(active_only=True, top=10)
    assert len(active) == 10
    assert "idle.example:443" not in gate.snapshot(active_only=True)
    assert len(gate.snapshot()) == 51


async def test_draining_takes_every_waiting_event_and_stops_the_timers() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=2.0)
    running, waiting = claimed(), claimed()
    gate.admit(running)
    gate.admit(waiting)
    assert gate.drain() == [waiting]
    await asyncio.sleep(5.0)
    assert seen.handed_back == []  # the timer that would have handed it back is gone


class ManualClock:
    """A monotonic clock that moves only when the test moves it (the gate's timers don't
    fire in between), to look at the gate between a token coming and its timer."""

    def __init__(self) -> None:
        self.now = loop_time()

    def __call__(self) -> float:
        return self.now


async def test_a_new_event_waits_behind_those_already_waiting() -> None:
    seen = Seen()
    clock = ManualClock()
    gate = DestinationGate(
        GateSettings(default=DestinationLimits(concurrency=0, rate=1.0, burst=1), hold_seconds=5.0),
        start=seen.started.append,
        hand_back=lambda c, delay, why: seen.handed_back.append((c, delay, why)),
        monotonic=clock,
    )
    first, second, third = (claimed(at=clock.now) for _ in range(3))
    gate.admit(first)
    gate.admit(second)  # no token left: waits
    clock.now += 1.0  # a token is there; the timer that would start `second` hasn't run
    gate.admit(third)
    assert seen.started == [first, second]  # the token went to the one that waited
    clock.now += 1.0
    gate.finished(first, OK, 0.1)
    assert seen.started == [first, second, third]


async def test_a_token_wait_counts_the_part_of_a_token_already_there() -> None:
    starts: list[float] = []
    gate = DestinationGate(
        GateSettings(default=DestinationLimits(concurrency=0, rate=2.0, burst=1), hold_seconds=5.0),
        start=lambda c: starts.append(loop_time()),
        hand_back=lambda c, delay, why: None,
        monotonic=loop_time,
    )
    start = loop_time()
    gate.admit(claimed())
    gate.admit(claimed())  # waits for the next token, half a second away
    await asyncio.sleep(0.2)
    gate.admit(claimed())  # sets the timer again: 0.3 s to go, not another 0.5 s
    await asyncio.sleep(1.5)
    assert [round(t - start, 2) for t in starts] == [0.0, 0.5, 1.0]


async def test_a_breaker_closed_by_hand_while_probing_probes_again_when_it_next_opens() -> None:
    seen = Seen()
    # One source: the destination's own breaker opens on its failures alone.
    gate = gate_with(seen, breaker_failures=2, breaker_cooldown_seconds=5.0, breaker_sources=1)
    for _ in range(2):
        first = claimed("down.example")
        gate.admit(first)
        gate.finished(first, FAIL, 0.1)
    await asyncio.sleep(5.0)
    probe = claimed("down.example")
    gate.admit(probe)
    assert seen.started[-1] is probe
    assert gate.reset_breaker("down.example:443")  # an operator closes it meanwhile
    for n in range(2):
        again = claimed("down.example")
        gate.admit(again)
        gate.finished(again, FAIL, 0.1)
        # One failure after the reset is one of two, not a failed probe; two open it again
        # (the old probe still out).
        assert gate.snapshot()["down.example:443"]["breaker"] == ("CLOSED", "OPEN")[n]
    await asyncio.sleep(5.0)
    # The event that went out before the reset is no longer the probe: a new one may go.
    assert gate.claim_budget().budgets["down.example:443"] == 1
    next_probe = claimed("down.example")
    gate.admit(next_probe)
    assert seen.started[-1] is next_probe
    gate.finished(probe, FAIL, 12.0)  # the old one's failure says nothing new
    # Opened twice, not three times; each opening counts the destination's breaker and its
    # one source's.
    assert gate.snapshot()["down.example:443"]["trips"] == 2 * 2


async def test_a_straggler_that_succeeds_while_the_breaker_is_open_closes_it() -> None:
    seen = Seen()
    gate = gate_with(seen, breaker_failures=2, breaker_cooldown_seconds=60.0)
    slow, first, second = (claimed("flaky.example") for _ in range(3))
    for c in (slow, first, second):
        gate.admit(c)
    gate.finished(first, FAIL, 0.1)
    gate.finished(second, FAIL, 0.1)
    assert gate.snapshot()["flaky.example:443"]["breaker"] == "OPEN"
    gate.finished(slow, OK, 5.0)  # admitted before it opened, and the receiver answered
    assert gate.snapshot()["flaky.example:443"]["breaker"] == "CLOSED"
    after = claimed("flaky.example")
    gate.admit(after)
    assert seen.started[-1] is after


async def test_an_attempt_that_never_ran_frees_its_slot_for_the_next_event() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1))
    first, second = claimed(), claimed()
    gate.admit(first)
    gate.admit(second)
    assert (gate.occupied, seen.started) == (2, [first])
    gate.abandoned(first)
    assert seen.started == [first, second]  # the waiting one took the slot
    assert gate.occupied == 1
    assert gate.snapshot()["a.example:443"]["in_flight"] == 1
    gate.finished(second, OK, 0.1)
    assert gate.occupied == 0
    assert gate.snapshot()["a.example:443"]["in_flight"] == 0


async def test_after_an_abandoned_probe_the_next_claim_may_take_a_probe() -> None:
    seen = Seen()
    gate, probe = await probing(seen)
    assert "down.example:443" in gate.claim_budget().excluded  # its probe is out
    gate.abandoned(probe)
    assert gate.claim_budget().budgets["down.example:443"] == 1


async def test_events_waiting_when_the_breaker_opens_are_handed_back_until_its_probe() -> None:
    seen = Seen()
    gate = gate_with(
        seen,
        default=DestinationLimits(concurrency=1),
        breaker_failures=1,
        breaker_cooldown_seconds=30.0,
        breaker_sources=1,
    )
    await asyncio.sleep(100.0)  # any moment, not the clock's start
    running, first, second = (claimed("down.example") for _ in range(3))
    for c in (running, first, second):
        gate.admit(c)
    assert gate.occupied == 3
    await asyncio.sleep(1.0)
    gate.finished(running, FAIL, 1.0)  # opens it: the two waiting go back
    assert gate.occupied == 0
    assert [(c, reason) for c, _, reason in seen.handed_back] == [
        (first, HandBackReason.BREAKER),
        (second, HandBackReason.BREAKER),
    ]
    # Due again at once: claims leave the destination out until its probe, and a reset of the
    # breaker releases them without waiting out the cool-down.
    assert [delay < 1.0 for _, delay, _ in seen.handed_back] == [True, True]
    assert [k for k in gate.claim_budget().excluded if "down.example" in k]


async def test_the_snapshot_shows_the_busiest_active_destinations_first() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1))
    idle = claimed("idle.example")
    gate.admit(idle)
    gate.finished(idle, OK, 0.1)  # known, nothing in flight: listed first, not active
    loads = {"one.example": 1, "three.example": 3, "two.example": 2, "four.example": 4}
    for host, n in loads.items():
        for _ in range(n):  # one in flight, the rest waiting
            gate.admit(claimed(host))
    busiest = gate.snapshot(active_only=True, top=2)
    assert list(busiest) == ["four.example:443", "three.example:443"]
    assert (busiest["four.example:443"]["in_flight"], busiest["four.example:443"]["waiting"]) == (
        1,
        3,
    )
    assert set(gate.snapshot(active_only=True)) == {f"{h}:443" for h in loads}
    assert gate.snapshot()["idle.example:443"]["probe_in_seconds"] is None


async def test_a_breaker_due_to_probe_shows_its_probe_at_once() -> None:
    seen = Seen()
    gate = gate_with(seen, breaker_failures=1, breaker_cooldown_seconds=30.0)
    c = claimed("down.example")
    gate.admit(c)
    gate.finished(c, FAIL, 0.1)
    await asyncio.sleep(10.0)
    assert gate.snapshot()["down.example:443"]["probe_in_seconds"] == pytest.approx(20.0)
    await asyncio.sleep(25.0)
    assert gate.snapshot()["down.example:443"]["probe_in_seconds"] == 0.0


async def test_an_event_handed_back_for_waiting_comes_back_when_the_queue_has_drained() -> None:
    seen = Seen()
    gate = DestinationGate(
        GateSettings(default=DestinationLimits(concurrency=0, rate=2.0, burst=1), hold_seconds=2.0),
        start=seen.started.append,
        hand_back=lambda c, delay, why: seen.handed_back.append((c, delay, why)),
        monotonic=loop_time,
    )
    for _ in range(10):
        gate.admit(claimed())
    await asyncio.sleep(3.0)
    # Four started (0, 0.5, 1, 1.5 s); the six left all reach the hold time at 2 s and go
    # back in order, each due when the ones still behind it would have drained at 2 a second
    # (never later than the hold time, never sooner than the least deferral).
    assert len(seen.started) == 4
    delays = [delay for _, delay, _ in seen.handed_back]
    assert delays == pytest.approx([2.0, 2.0, 1.5, 1.0, 0.5, 0.05])


async def test_an_abandoned_attempt_no_longer_counts_for_its_source_or_its_destination() -> None:
    seen = Seen()
    gate = gate_with(seen)
    first, second = claimed(source="tenant-a"), claimed(source="tenant-a")
    gate.admit(first)
    gate.admit(second)
    gate.abandoned(first)
    state = gate.snapshot()["a.example:443"]
    assert (state["in_flight"], state["sources"]) == (1, ["tenant-a"])
    gate.abandoned(second)
    state = gate.snapshot()["a.example:443"]
    assert (state["in_flight"], state["sources"]) == (0, [])
    assert gate.snapshot(active_only=True) == {}  # idle again
    assert gate.snapshot(sources=frozenset({"tenant-a"})) == {}


async def test_an_event_left_waiting_after_an_abandoned_attempt_leaves_its_destination_idle() -> (
    None
):
    seen = Seen()
    limits = DestinationLimits(concurrency=0, rate=0.1, burst=1)
    gate = gate_with(seen, default=limits, hold_seconds=5.0)
    running, queued = claimed(), claimed()
    gate.admit(running)
    gate.admit(queued)  # waits for the next token, 10 s away
    gate.abandoned(running)
    await asyncio.sleep(5.1)
    assert [(c, why) for c, _, why in seen.handed_back] == [(queued, HandBackReason.WAIT)]
    assert gate.occupied == 0
    assert gate.snapshot(active_only=True) == {}


async def test_an_event_left_waiting_after_a_reset_leaves_its_destination_idle() -> None:
    seen = Seen()
    limits = DestinationLimits(concurrency=0, rate=0.1, burst=1)
    gate = gate_with(seen, default=limits, hold_seconds=5.0)
    first = claimed()
    gate.admit(first)
    gate.finished(first, FAIL, 0.1)
    queued = claimed()
    gate.admit(queued)  # waits for the next token, 10 s away
    assert gate.reset_breaker("a.example:443")
    assert gate.snapshot()["a.example:443"]["consecutive_failures"] == 0
    await asyncio.sleep(5.1)
    assert [(c, why) for c, _, why in seen.handed_back] == [(queued, HandBackReason.WAIT)]
    assert gate.snapshot(active_only=True) == {}


async def test_events_handed_back_one_after_the_other_leave_their_destination_idle() -> None:
    seen = Seen()
    limits = DestinationLimits(concurrency=0, rate=0.1, burst=1)
    gate = gate_with(seen, default=limits, hold_seconds=2.0)
    first, early = claimed(), claimed()
    gate.admit(first)
    gate.finished(first, OK, 0.1)
    gate.admit(early)  # waits for the next token, 10 s away
    await asyncio.sleep(0.5)
    late = claimed()
    gate.admit(late)
    await asyncio.sleep(1.6)  # the early one's hold time is up, not yet the late one's
    assert [(c, why) for c, _, why in seen.handed_back] == [(early, HandBackReason.WAIT)]
    await asyncio.sleep(0.5)
    assert [c for c, _, _ in seen.handed_back] == [early, late]
    assert gate.occupied == 0
    assert gate.snapshot(active_only=True) == {}


@pytest.mark.parametrize(
    ("cap", "queue", "hold", "room_after"),
    [
        # 10 per 2 s (hold time as the first guess of a delivery's time) is 5/s: a batch of
        # 40 % of the 10 it starts within the hold time is 4.
        (10, 8, 2.0, 4),
        # 300/s starts 300 within a 1 s hold time: 40 % is 120, but no more than 100.
        (300, 150, 1.0, 100),
    ],
)
async def test_a_destination_left_out_comes_back_for_a_worthwhile_batch(
    cap: int, queue: int, hold: float, room_after: int
) -> None:
    rooms_at: list[int] = []
    finished: list[Claimed] = []
    started: list[Claimed] = []
    gate = DestinationGate(
        GateSettings(default=DestinationLimits(concurrency=cap, queue=queue), hold_seconds=hold),
        start=started.append,
        hand_back=lambda c, delay, why: None,
        monotonic=loop_time,
        on_room=lambda: rooms_at.append(len(finished)),
    )
    for _ in range(cap + queue):
        gate.admit(claimed())
    assert (len(started), gate.occupied) == (cap, cap + queue)
    assert "a.example:443" in gate.claim_budget().excluded  # full: slots taken, queue full
    while started[len(finished) :] and not rooms_at:
        done = started[len(finished)]
        finished.append(done)
        gate.finished(done, OK, hold)  # deliveries as long as the first guess: same pace
    assert rooms_at == [room_after]
    assert gate.claim_budget().budgets["a.example:443"] == room_after


async def test_a_full_destination_with_a_token_to_spare_waits_for_a_slot_without_spinning() -> None:
    looks = 0

    def clock() -> float:
        nonlocal looks
        looks += 1
        if looks > 1000:  # stops a busy loop so that the assertion below can tell
            raise RuntimeError("the gate keeps looking at its clock")
        return loop_time()

    started: list[Claimed] = []
    gate = DestinationGate(
        GateSettings(default=DestinationLimits(concurrency=1, rate=1.0, burst=1), hold_seconds=5),
        start=started.append,
        hand_back=lambda c, delay, why: None,
        monotonic=clock,
    )
    running, waiting = claimed(), claimed()
    gate.admit(running)
    gate.admit(waiting)
    await asyncio.sleep(3.0)  # a token is there from 1 s on; the slot is not
    assert looks < 20
    assert started == [running]
    gate.finished(running, OK, 3.0)
    assert started == [running, waiting]  # the freed slot takes the waiting event at once


async def test_a_finished_attempt_no_longer_counts_for_its_source_or_its_destination() -> None:
    seen = Seen()
    gate = gate_with(seen)
    first, second = claimed(source="tenant-a"), claimed(source="tenant-a")
    gate.admit(first)
    gate.admit(second)
    gate.finished(first, OK, 0.1)
    state = gate.snapshot()["a.example:443"]
    assert (state["in_flight"], state["sources"]) == (1, ["tenant-a"])
    gate.finished(second, OK, 0.1)
    state = gate.snapshot()["a.example:443"]
    assert (state["in_flight"], state["sources"]) == (0, [])
    assert gate.snapshot(sources=frozenset({"tenant-a"})) == {}


async def test_a_budget_paces_a_capped_destination_by_its_moving_average_duration() -> None:
    seen = Seen()
    gate = gate_with(seen, default=DestinationLimits(concurrency=1), hold_seconds=10.0)
    first, second = claimed(), claimed()
    gate.admit(first)
    gate.finished(first, OK, 0.5)
    # One free slot + 1 slot / 0.5 s for 80 % of the hold time.
    assert gate.claim_budget().budgets["a.example:443"] == 1 + 16
    gate.admit(second)
    gate.finished(second, OK, 5.5)
    # The average moves a tenth of the way: 0.5 + 0.1 * (5.5 - 0.5) = 1.0 s.
    assert gate.claim_budget().budgets["a.example:443"] == 1 + 8


async def test_a_failed_probe_lets_the_next_probe_be_claimed_after_the_next_cooldown() -> None:
    seen = Seen()
    gate, probe = await probing(seen)
    assert seen.started[-1] is probe
    gate.finished(probe, FAIL, 0.1)  # open again
    assert "down.example:443" in gate.claim_budget().excluded
    await asyncio.sleep(5.0)
    assert gate.claim_budget().budgets["down.example:443"] == 1  # the next probe
    again = claimed("down.example")
    gate.admit(again)
    assert seen.started[-1] is again


async def test_a_stragglers_end_leaves_its_sources_probe_out() -> None:
    seen = Seen()
    gate = gate_with(seen, breaker_failures=2, breaker_cooldown_seconds=5.0, breaker_sources=2)
    pair = source_breaker_key("a.example:443", "tenant-a")
    first, second, straggler = (claimed(source="tenant-a") for _ in range(3))
    for c in (first, second, straggler):
        gate.admit(c)
    gate.finished(first, FAIL, 0.1)
    gate.finished(second, FAIL, 0.1)  # tenant-a's own breaker opens
    await asyncio.sleep(5.0)
    probe = claimed(source="tenant-a")
    gate.admit(probe)
    assert seen.started[-1] is probe
    assert pair in gate.claim_budget().excluded  # while its probe is out
    gate.finished(straggler, FAIL, 0.1)  # admitted before the breaker opened: not the probe
    assert pair in gate.claim_budget().excluded  # the probe is still out
    gate.finished(probe, OK, 0.1)
    assert pair not in gate.claim_budget().excluded


async def test_an_event_handed_back_after_a_finish_leaves_its_destination_idle() -> None:
    seen = Seen()
    limits = DestinationLimits(concurrency=0, rate=0.1, burst=1)  # a token every 10 s
    gate = gate_with(seen, default=limits, hold_seconds=2.0)
    running, waiting = claimed(), claimed()
    gate.admit(running)
    gate.admit(waiting)  # no token until 10 s: waits
    gate.finished(running, OK, 0.1)
    assert list(gate.snapshot(active_only=True)) == ["a.example:443"]  # one waiting
    await asyncio.sleep(2.0)
    assert [(c, why) for c, _, why in seen.handed_back] == [(waiting, HandBackReason.WAIT)]
    assert gate.snapshot(active_only=True) == {}  # idle again


async def test_a_source_held_at_a_finish_lets_the_next_sources_event_start() -> None:
    seen = Seen()
    gate = gate_with(
        seen,
        default=DestinationLimits(concurrency=2),
        breaker_failures=2,
        breaker_sources=2,
    )
    a1, a2, a3, a4 = (claimed(source="tenant-a") for _ in range(4))
    b1 = claimed(source="tenant-b")
    for c in (a1, a2, a3, a4, b1):
        gate.admit(c)
    assert seen.started == [a1, a2]
    gate.finished(a1, FAIL, 0.1)  # a3 takes the slot
    assert seen.started == [a1, a2, a3]
    gate.finished(a2, FAIL, 0.1)  # tenant-a's own breaker opens: a4 is held, b1 starts
    assert [(c, why) for c, _, why in seen.handed_back] == [(a4, HandBackReason.BREAKER)]
    assert seen.started == [a1, a2, a3, b1]
