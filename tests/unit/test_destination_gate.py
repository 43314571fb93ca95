from __future__ import annotations

from timefuse.domain.outcome import DeliveryOutcome
from timefuse.service.destinations import (
    DestinationGate,
    DestinationLimits,
    GateSettings,
    Verdict,
    destination_key,
)
from timefuse.testing import make_event


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def events(host: str, n: int) -> list:
    return [make_event(destination=f"https://{host}/hook") for _ in range(n)]


def test_the_key_is_the_host_and_port_or_the_destination_itself() -> None:
    assert destination_key(make_event(destination="https://A.example:8443/x?y")) == (
        "a.example:8443"
    )
    assert destination_key(make_event(delivery_type="kafka", destination="orders")) == (
        "kafka:orders"
    )


def test_a_busy_destination_queues_then_defers_while_others_start() -> None:
    gate = DestinationGate(GateSettings(DestinationLimits(concurrency=2, queue=1)), Clock())
    slow = [gate.offer(e).verdict for e in events("slow", 5)]
    assert slow == [Verdict.START, Verdict.START, Verdict.WAIT, Verdict.DEFER, Verdict.DEFER]
    assert gate.offer(events("fast", 1)[0]).verdict is Verdict.START


def test_a_finished_delivery_lets_the_next_waiting_event_start() -> None:
    gate = DestinationGate(GateSettings(DestinationLimits(concurrency=1)), Clock())
    first, second = events("h", 2)
    assert gate.offer(first).verdict is Verdict.START
    assert gate.offer(second).verdict is Verdict.WAIT
    gate.finished(first, DeliveryOutcome.success(200))
    start, defer, wait = gate.pump(first)
    assert (start, defer, wait) == ([second], [], 0.0)


def test_an_open_breaker_defers_until_its_cooldown_ends() -> None:
    clock = Clock()
    settings = GateSettings(breaker_failures=2, breaker_cooldown_seconds=30)
    gate = DestinationGate(settings, clock)
    a, b, c = events("down", 3)
    for event in (a, b):
        assert gate.offer(event).verdict is Verdict.START
        gate.finished(event, DeliveryOutcome.retriable("HTTP 503", 503))
    clock.now = 10.0
    decision = gate.offer(c)
    assert decision.verdict is Verdict.DEFER
    assert decision.delay_seconds == 20.0
    assert gate.snapshot()["down"]["breaker"] == "OPEN"
    clock.now = 30.0
    assert gate.offer(c).verdict is Verdict.START  # the probe


def test_a_rate_limit_holds_events_and_says_when_to_look_again() -> None:
    clock = Clock()
    gate = DestinationGate(GateSettings(DestinationLimits(rate=2, burst=1)), clock)
    first, second = events("limited", 2)
    assert gate.offer(first).verdict is Verdict.START
    decision = gate.offer(second)
    assert decision.verdict is Verdict.WAIT
    assert decision.delay_seconds == 0.5
    clock.now = 0.5
    assert gate.pump(second)[0] == [second]


def test_overrides_apply_per_host() -> None:
    settings = GateSettings(
        DestinationLimits(concurrency=1, queue=1),
        overrides={"big": DestinationLimits(concurrency=3)},
    )
    gate = DestinationGate(settings, Clock())
    assert [gate.offer(e).verdict for e in events("big", 3)] == [Verdict.START] * 3


def test_held_events_are_handed_back_at_shutdown() -> None:
    gate = DestinationGate(GateSettings(DestinationLimits(concurrency=1)), Clock())
    batch = events("h", 3)
    for event in batch:
        gate.offer(event)
    assert {e.id for e in gate.drain_waiting()} == {batch[1].id, batch[2].id}
    assert gate.reset_breaker("h")
    assert not gate.reset_breaker("unknown")


def first_deferral(gate: DestinationGate, batch: list) -> float:
    for event in batch:
        decision = gate.offer(event)
        if decision.verdict is Verdict.DEFER:
            return decision.delay_seconds
    raise AssertionError("nothing was deferred")


def test_overflow_comes_back_about_when_the_queue_ahead_has_drained() -> None:
    settings = GateSettings(DestinationLimits(concurrency=2, queue=2))
    gate = DestinationGate(settings, Clock())
    slow, fast = events("slow", 10), events("fast", 10)
    gate.offer(slow[0])
    gate.offer(fast[0])
    gate.finished(slow[0], DeliveryOutcome.success(), seconds=2.0)
    gate.finished(fast[0], DeliveryOutcome.success(), seconds=0.001)
    assert first_deferral(gate, fast[1:]) == settings.min_defer_seconds
    assert 0.3 < first_deferral(gate, slow[1:]) <= settings.max_defer_seconds


def test_a_delivery_type_can_bring_its_own_default_cap() -> None:
    settings = GateSettings(
        DestinationLimits(concurrency=1, queue=1),
        type_defaults={"kafka": DestinationLimits(concurrency=0)},
    )
    gate = DestinationGate(settings, Clock())
    topic = [make_event(delivery_type="kafka", destination="orders") for _ in range(50)]
    assert all(gate.offer(event).verdict is Verdict.START for event in topic)
    assert [gate.offer(e).verdict for e in events("web", 2)] == [Verdict.START, Verdict.WAIT]


def test_only_the_probes_failure_reopens_a_half_open_breaker() -> None:
    clock = Clock()
    gate = DestinationGate(GateSettings(breaker_failures=1, breaker_cooldown_seconds=5), clock)
    first, straggler, probe, other = events("flaky", 4)
    gate.offer(first)
    gate.offer(straggler)
    gate.finished(first, DeliveryOutcome.retriable("HTTP 503", 503))
    clock.now = 5.0
    assert gate.offer(probe).verdict is Verdict.START
    gate.finished(straggler, DeliveryOutcome.retriable("HTTP 503", 503))
    assert gate.snapshot()["flaky"]["breaker"] == "HALF_OPEN"
    assert gate.offer(other).verdict is Verdict.DEFER
    gate.finished(probe, DeliveryOutcome.success(200))
    assert gate.snapshot()["flaky"]["breaker"] == "CLOSED"
