from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.outcome import DeliveryOutcome
from timefuse.domain.retry import RetryPolicy
from timefuse.domain.status import EventStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(base_seconds=1.0, cap_seconds=60.0)


@pytest.mark.parametrize(
    ("outcome", "attempts", "max_retries", "status"),
    [
        (DeliveryOutcome.success(200), 1, 3, EventStatus.COMPLETED),
        (DeliveryOutcome.success(200), 4, 3, EventStatus.COMPLETED),
        (DeliveryOutcome.permanent("HTTP 400", 400), 1, 3, EventStatus.FAILED),
        (DeliveryOutcome.retriable("HTTP 503", 503), 1, 3, EventStatus.PENDING),
        (DeliveryOutcome.retriable("HTTP 503", 503), 3, 3, EventStatus.PENDING),
        (DeliveryOutcome.retriable("HTTP 503", 503), 4, 3, EventStatus.DEAD_LETTER),
        (DeliveryOutcome.retriable("timeout"), 1, 0, EventStatus.DEAD_LETTER),
        (DeliveryOutcome.retriable("HTTP 503", 503), 3, 2, EventStatus.DEAD_LETTER),
    ],
)
def test_decides_the_next_status_from_the_outcome_and_attempts(
    outcome: DeliveryOutcome, attempts: int, max_retries: int, status: EventStatus
) -> None:
    decision = POLICY.decide(
        outcome, attempts=attempts, max_retries=max_retries, now=NOW, rng=random.Random(1)
    )
    assert decision.status is status
    assert (decision.next_attempt_at is not None) is (status is EventStatus.PENDING)


@pytest.mark.parametrize(
    ("failures", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (500, 60.0)]
)
def test_the_backoff_ceiling_doubles_up_to_the_cap(failures: int, ceiling: float) -> None:
    assert POLICY.ceiling(failures) == ceiling


def test_retry_after_raises_the_wait_but_not_past_the_cap() -> None:
    rng = random.Random(7)
    assert POLICY.backoff(1, rng, retry_after=30.0) == 30.0
    assert POLICY.backoff(1, rng, retry_after=3600.0) == 60.0


class Draws(random.Random):
    """Jitter that draws the same fraction of its range every time."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@pytest.mark.parametrize(
    ("attempts", "wait"),
    # base 1 s, cap 60 s: the n-th attempt failed waits up to 2**(n-1) s.
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (9, 60.0)],
)
def test_a_retry_is_due_when_its_backoff_says(attempts: int, wait: float) -> None:
    decide = partial(
        POLICY.decide,
        DeliveryOutcome.retriable("HTTP 503", 503),
        attempts=attempts,
        max_retries=10,
        now=NOW,
    )
    top = decide(rng=Draws(1.0))
    assert (top.next_attempt_at, top.delay_seconds) == (NOW + timedelta(seconds=wait), wait)
    half = decide(rng=Draws(0.5))
    assert half.next_attempt_at == NOW + timedelta(seconds=wait / 2)
    assert decide(rng=Draws(0.0)).next_attempt_at == NOW


def test_a_retry_after_decides_the_due_time_only_when_it_is_longer() -> None:
    def due(retry_after: float) -> datetime | None:
        outcome = DeliveryOutcome.retriable("HTTP 429", 429, retry_after=retry_after)
        decision = POLICY.decide(outcome, attempts=4, max_retries=10, now=NOW, rng=Draws(0.5))
        return decision.next_attempt_at

    assert due(10.0) == NOW + timedelta(seconds=10.0)  # above the 4 s drawn
    assert due(1.0) == NOW + timedelta(seconds=4.0)  # the backoff's own 4 s


def test_no_due_time_when_the_event_is_done() -> None:
    for outcome, attempts in [
        (DeliveryOutcome.success(200), 1),
        (DeliveryOutcome.permanent("HTTP 400", 400), 1),
        (DeliveryOutcome.retriable("HTTP 503", 503), 4),
    ]:
        decision = POLICY.decide(outcome, attempts=attempts, max_retries=3, now=NOW, rng=Draws(1))
        assert (decision.next_attempt_at, decision.delay_seconds) == (None, None)


def test_full_jitter_spreads_retries_of_events_that_failed_together() -> None:
    rng = random.Random(11)
    delays = {round(POLICY.backoff(5, rng), 3) for _ in range(100)}
    assert len(delays) > 90
    assert min(delays) < 4.0 < max(delays)


def test_a_negative_base_or_cap_is_refused() -> None:
    for base, cap in ((-1.0, 60.0), (1.0, -1.0)):
        with pytest.raises(ValueError, match=r"^backoff base and cap must not be negative$"):
            RetryPolicy(base_seconds=base, cap_seconds=cap)


@given(
    base=st.floats(min_value=0, max_value=1e6),
    cap=st.floats(min_value=0, max_value=1e7),
    failures=st.integers(min_value=0, max_value=10_000),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=1e9)),
    seed=st.integers(),
)
def test_backoff_is_never_negative_and_never_above_the_cap(
    base: float, cap: float, failures: int, retry_after: float | None, seed: int
) -> None:
    delay = RetryPolicy(base, cap).backoff(failures, random.Random(seed), retry_after)
    assert 0.0 <= delay <= cap


@given(
    max_retries=st.integers(min_value=0, max_value=10),
    outcomes=st.lists(st.sampled_from(["ok", "retry", "fail"]), min_size=1, max_size=20),
)
def test_attempts_never_exceed_max_retries_plus_one(max_retries: int, outcomes: list[str]) -> None:
    make = {
        "ok": DeliveryOutcome.success(),
        "retry": DeliveryOutcome.retriable("x"),
        "fail": DeliveryOutcome.permanent("x"),
    }
    rng = random.Random(0)
    attempts = 0
    status = EventStatus.PENDING
    for name in outcomes:
        if status is not EventStatus.PENDING:
            break
        attempts += 1
        status = POLICY.decide(
            make[name], attempts=attempts, max_retries=max_retries, now=NOW, rng=rng
        ).status
    assert attempts <= max_retries + 1
    if status is EventStatus.DEAD_LETTER:
        assert attempts == max_retries + 1
