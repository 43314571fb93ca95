"""What a dispatcher remembers of one destination, on its own: breaker keys, sources' own
breakers, an operator's reset, and when the state may be forgotten."""

from __future__ import annotations

from timefuse.domain.breaker import Admission, BreakerState, CircuitBreaker
from timefuse.domain.ratelimit import TokenBucket
from timefuse.service.destination_state import (
    MAX_SOURCE_BREAKERS,
    Change,
    DestinationState,
    source_breaker_key,
    split_breaker_key,
)
from timefuse.service.gate import DestinationLimits

KEY = "receiver.example:443"
A, B = "tenant-a", "tenant-b"


def state(bucket: TokenBucket | None = None) -> DestinationState:
    return DestinationState(KEY, DestinationLimits(), CircuitBreaker(3, 30.0), bucket)


def open_breaker(breaker: CircuitBreaker, at: float) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record(succeeded=False, retriable=True, now=at)
    assert breaker.state is BreakerState.OPEN


def test_a_destinations_own_breaker_key_splits_with_no_source() -> None:
    assert split_breaker_key(KEY) == (KEY, None)


def test_a_sources_breaker_key_splits_into_destination_and_source() -> None:
    assert split_breaker_key(source_breaker_key(KEY, A)) == (KEY, A)


def test_dropping_one_sources_breaker_keeps_the_others() -> None:
    dest = state()
    dest.new_hold(A)
    kept = dest.new_hold(B)
    dest.drop_hold(A)
    assert dest.hold_of(A) is None
    assert dest.hold_of(B) is kept


def test_dropping_a_source_with_no_breaker_here_changes_nothing() -> None:
    dest = state()
    kept = dest.new_hold(A)
    dest.drop_hold(B)
    assert dest.hold_of(A) is kept


def test_a_source_breaker_can_be_made_again_after_the_last_one_is_dropped() -> None:
    dest = state()
    dest.new_hold(A)
    dest.drop_hold(A)
    again = dest.new_hold(B)
    assert dest.hold_of(B) is again
    assert dest.present_sources() == {B}


def test_a_reset_closes_every_breaker_and_reports_each_that_was_not_closed() -> None:
    dest = state()
    open_breaker(dest.breaker, at=0.0)
    open_breaker(dest.new_hold(A).breaker, at=0.0)
    dest.new_hold(B)  # a partial count: closed, so not reported
    assert dest.reset() == [Change(KEY, False), Change(source_breaker_key(KEY, A), False)]
    assert dest.breaker.state is BreakerState.CLOSED
    assert dest.held_sources() == []
    assert not dest.tripped


def test_an_open_breaker_is_forgettable_once_its_cooldown_ended_idle_seconds_ago() -> None:
    dest = state()
    open_breaker(dest.breaker, at=0.0)  # reopens at 30
    assert not dest.forgettable(now=39.0, idle_seconds=10.0)
    assert dest.forgettable(now=40.0, idle_seconds=10.0)


def test_a_token_bucket_not_full_again_keeps_the_state() -> None:
    bucket = TokenBucket(rate=0.5, burst=2)
    dest = state(bucket)
    assert bucket.try_take(0.0)
    assert not dest.forgettable(now=1.0, idle_seconds=0.0)  # 1.5 tokens of 2
    assert dest.forgettable(now=2.0, idle_seconds=0.0)  # exactly full again


def test_past_the_most_source_breakers_the_closed_ones_are_forgotten_for_a_new_one() -> None:
    dest = state()
    held = dest.new_hold(A)
    open_breaker(held.breaker, at=0.0)
    for n in range(MAX_SOURCE_BREAKERS - 1):  # partial counts: closed
        dest.new_hold(f"source-{n}")
    assert len(dest.sources or {}) == MAX_SOURCE_BREAKERS
    dest.new_hold(B)
    # The open one holds events: it is kept; the closed ones are not.
    assert set(dest.sources or {}) == {A, B}


def test_a_source_that_succeeds_after_a_failure_is_no_longer_remembered() -> None:
    dest = state()
    for succeeded in (False, True):
        changes = dest.judge(
            A,
            succeeded=succeeded,
            retriable=not succeeded,
            now=0.0,
            sources_needed=2,
            probed=False,
            source_probed=False,
        )
        assert changes == []
        assert dest.present_sources() == (set() if succeeded else {A})
    assert dest.sources is None
    assert dest.present_sources() == set()
    assert dest.row(now=0.0)["sources"] == []


def test_a_row_shows_the_held_source_breaker_that_opens_again_soonest() -> None:
    dest = state()
    # A's breaker cooled down and is being probed; B's and C's are open, C's reopening first.
    probed = dest.new_hold(A).breaker
    open_breaker(probed, at=0.0)
    assert probed.admit(now=40.0) is Admission.PROBE
    open_breaker(dest.new_hold(B).breaker, at=20.0)  # reopens at 50
    open_breaker(dest.new_hold("tenant-c").breaker, at=15.0)  # reopens at 45
    row = dest.row(now=41.0)
    assert row["breaker"] == "OPEN"
    assert row["breaker_for_all"] is False
    assert row["held_sources"] == [A, B, "tenant-c"]
    assert row["probe_in_seconds"] == 4.0


def judge(
    dest: DestinationState,
    source: str,
    outcome: str,
    *,
    now: float = 0.0,
    probed: bool = False,
) -> list[Change]:
    """One attempt's result: ``outcome`` is "success", "retriable" or "permanent"."""
    return dest.judge(
        source,
        succeeded=outcome == "success",
        retriable=outcome == "retriable",
        now=now,
        sources_needed=2,
        probed=probed,
        source_probed=False,
    )


def test_a_permanent_failure_from_a_new_source_forgets_no_partial_counts() -> None:
    dest = state()
    for n in range(MAX_SOURCE_BREAKERS):  # partial counts: closed
        dest.new_hold(f"source-{n}")
    assert len(dest.sources or {}) == MAX_SOURCE_BREAKERS
    # A 4xx says the receiver is up: it counts nowhere and makes no room.
    assert judge(dest, B, "permanent") == []
    assert set(dest.sources or {}) == {f"source-{n}" for n in range(MAX_SOURCE_BREAKERS)}


def test_a_success_starts_the_count_of_failing_sources_again() -> None:
    dest = state()  # opens after 3 failures, from 2 sources or more
    judge(dest, A, "retriable")
    judge(dest, A, "success")
    # Three failures from B alone: A's earlier failure no longer counts as a second source.
    assert judge(dest, B, "retriable") == []
    assert judge(dest, B, "retriable") == []
    # B's own breaker opens; the destination's stays closed to every other source.
    assert judge(dest, B, "retriable") == [Change(source_breaker_key(KEY, B), True)]
    assert dest.breaker.state is BreakerState.CLOSED
    assert dest.row(now=0.0)["held_sources"] == [B]


def test_a_destination_breaker_closing_forgets_the_sources_partial_counts() -> None:
    dest = state()
    open_breaker(dest.breaker, at=0.0)
    judge(dest, B, "retriable")  # a straggler's failure: a partial count for B
    assert dest.present_sources() == {B}
    assert dest.breaker.admit(now=30.0) is Admission.PROBE
    assert judge(dest, A, "success", now=30.0, probed=True) == [Change(KEY, False)]
    assert dest.present_sources() == set()
    assert dest.row(now=30.0)["sources"] == []


def test_a_source_done_flying_leaves_the_others_counted() -> None:
    dest = state()
    dest.fly("tenant-a", 1)
    dest.fly("tenant-b", 1)
    dest.fly("tenant-b", 1)
    dest.fly("tenant-a", -1)
    assert dest.flying == {"tenant-b": 2}
    dest.fly("tenant-b", -1)
    dest.fly("tenant-b", -1)
    assert dest.flying is None  # nothing in flight: nothing kept
