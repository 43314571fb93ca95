"""The retry policy: what happens to an event after an attempt."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.status import EventStatus


@dataclass(frozen=True, slots=True)
class Decision:
    """Where an attempt leaves the event.

    ``next_attempt_at`` is set only when ``status`` is PENDING (a retry).
    """

    status: EventStatus
    next_attempt_at: datetime | None = None
    delay_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter and a cap.

    The n-th retry waits a uniform random time in ``[0, min(cap, base * 2**(n-1))]``: full
    jitter keeps retries of events that failed together from failing again together. A
    receiver's ``Retry-After`` raises the wait to what it asked for, never above the cap.
    """

    base_seconds: float = 1.0
    cap_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError("backoff base and cap must not be negative")

    def ceiling(self, failed_attempts: int) -> float:
        """The largest wait after ``failed_attempts`` failures (1 for the first failure)."""
        exponent = max(0, failed_attempts - 1)
        # 2**exponent overflows float arithmetic long before it matters: stop at the cap.
        if exponent >= 64:
            return self.cap_seconds
        return float(min(self.cap_seconds, self.base_seconds * (2**exponent)))

    def backoff(
        self,
        failed_attempts: int,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> float:
        delay = rng.uniform(0.0, self.ceiling(failed_attempts))
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return max(0.0, min(self.cap_seconds, delay))

    def decide(
        self,
        outcome: DeliveryOutcome,
        *,
        attempts: int,
        max_retries: int,
        now: datetime,
        rng: random.Random,
    ) -> Decision:
        """Decide the event's next status after its ``attempts``-th attempt ended in ``outcome``.

        ``max_retries`` retries allow ``max_retries + 1`` attempts in all.
        """
        if outcome.kind is OutcomeKind.SUCCESS:
            return Decision(EventStatus.COMPLETED)
        if outcome.kind is OutcomeKind.PERMANENT:
            return Decision(EventStatus.FAILED)
        if attempts >= max_retries + 1:
            return Decision(EventStatus.DEAD_LETTER)
        delay = self.backoff(attempts, rng, outcome.retry_after)
        return Decision(EventStatus.PENDING, now + timedelta(seconds=delay), delay)
