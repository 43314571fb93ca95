from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.breaker import Admission, BreakerState, CircuitBreaker
from timefuse.domain.ratelimit import TokenBucket


def fail(breaker: CircuitBreaker, now: float, retriable: bool = True) -> None:
    breaker.record(succeeded=False, retriable=retriable, now=now)


def test_opens_after_consecutive_retriable_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=10)
    fail(breaker, 0)
    fail(breaker, 0)
    assert breaker.admit(0) is Admission.ALLOW
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit(5) is Admission.REJECT
    assert breaker.trips == 1


def test_a_success_or_a_permanent_failure_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2)
    fail(breaker, 0)
    breaker.record(succeeded=True, retriable=False, now=0)
    fail(breaker, 0)
    fail(breaker, 0, retriable=False)
    fail(breaker, 0)
    assert breaker.state is BreakerState.CLOSED


def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10)
    fail(breaker, 0)
    assert breaker.admit(9.9) is Admission.REJECT
    assert breaker.admit(10) is Admission.PROBE
    assert breaker.admit(10) is Admission.REJECT  # only one probe at a time
    breaker.record(succeeded=True, retriable=False, now=11)
    assert breaker.admit(11) is Admission.ALLOW


def test_a_failed_probe_opens_the_breaker_again_for_a_new_cooldown() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10)
    fail(breaker, 0)
    assert breaker.admit(10) is Admission.PROBE
    fail(breaker, 12)
    assert breaker.state is BreakerState.OPEN
    assert breaker.reopens_at() == 22
    assert breaker.admit(21) is Admission.REJECT


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.try_take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_seconds(100.0) == pytest.approx(0.1)
    assert bucket.try_take(100.1)
    assert not bucket.try_take(100.1)


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=100),
    steps=st.lists(st.floats(min_value=0, max_value=5), max_size=50),
)
def test_a_bucket_never_allows_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    now, taken = 1000.0, 0
    for step in steps:
        now += step
        while bucket.try_take(now):
            taken += 1
    assert taken <= burst + rate * (now - 1000.0) + 1e-6


def test_a_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=0, burst=1)


def test_a_straggler_finishing_while_half_open_does_not_take_the_probes_place() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10)
    fail(breaker, 0)
    assert breaker.admit(10) is Admission.PROBE
    breaker.record(succeeded=False, retriable=True, now=11, current=False)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit(11) is Admission.REJECT  # the probe is still out
    breaker.record(succeeded=True, retriable=False, now=12, current=False)
    assert breaker.admit(12) is Admission.ALLOW


def test_a_reset_while_a_probe_is_out_starts_the_count_afresh() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=10)
    for _ in range(3):
        fail(breaker, 0)
    assert breaker.admit(10) is Admission.PROBE
    breaker.reset()  # an operator closes it while the probe is out
    assert breaker.admit(10) is Admission.ALLOW
    fail(breaker, 11)  # one failure of three: not a failed probe
    fail(breaker, 11)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 12)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit(22) is Admission.PROBE  # and it probes again after the cooldown


def test_a_token_wait_counts_the_part_of_a_token_already_there() -> None:
    bucket = TokenBucket(rate=10, burst=1)
    assert bucket.try_take(100.0)
    assert bucket.wait_seconds(100.04) == pytest.approx(0.06)
    assert bucket.available(100.04) == pytest.approx(0.4)
    assert not bucket.try_take(100.09)
    assert bucket.try_take(100.1)


def test_a_bucket_refills_no_further_than_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    assert bucket.try_take(0.0)
    assert bucket.available(1000.0) == 2
    assert [bucket.try_take(1000.0) for _ in range(3)] == [True, True, False]


def test_a_token_that_is_there_means_no_wait() -> None:
    bucket = TokenBucket(rate=1, burst=2)
    assert bucket.wait_seconds(0.0) == 0.0
    assert bucket.try_take(0.0)
    assert bucket.wait_seconds(0.0) == 0.0  # one of two left: exactly a token
    assert bucket.try_take(0.0)
    assert bucket.wait_seconds(0.0) == 1.0


def test_a_bucket_may_start_empty_and_refuses_a_bad_rate_or_burst() -> None:
    empty = TokenBucket(rate=1, burst=5, tokens=0.0)
    assert not empty.try_take(0.0)
    assert empty.wait_seconds(0.0) == 1.0
    for rate, burst in [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.5)]:
        with pytest.raises(
            ValueError, match=r"^a token bucket needs a positive rate and a burst of at least 1$"
        ):
            TokenBucket(rate=rate, burst=burst)


def test_a_stragglers_permanent_failure_while_open_closes_the_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=10)
    fail(breaker, 0)
    assert breaker.state is BreakerState.OPEN
    # A 4xx from a delivery admitted before the breaker opened: the receiver is up.
    breaker.record(succeeded=False, retriable=False, now=1, current=False)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit(1) is Admission.ALLOW


def test_a_token_due_but_for_rounding_is_granted_and_no_earlier() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.try_take(0.0)
    assert not TokenBucket(rate=1, burst=1, tokens=0.0).try_take(1.0 - 2e-9)
    assert bucket.try_take(1.0 - 1e-9)  # a billionth of a token short: rounding
    assert not bucket.try_take(1.0 - 1e-9)
