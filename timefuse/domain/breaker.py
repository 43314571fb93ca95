"""Circuit breaker per destination: stop hammering a receiver that keeps failing."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BreakerState(enum.StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class Admission(enum.Enum):
    ALLOW = "ALLOW"
    PROBE = "PROBE"
    REJECT = "REJECT"


@dataclass
class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive retriable failures.

    While open, nothing is sent for ``cooldown_seconds``; then one delivery probes the receiver
    (half-open). The probe's success closes the breaker, its failure opens it again. Only
    retriable failures count: a 4xx means the receiver is up and has an opinion.
    Times are seconds on any monotonic clock, passed in.
    """

    failure_threshold: int = 5
    cooldown_seconds: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    trips: int = 0

    def admit(self, now: float) -> Admission:
        if self.state is BreakerState.CLOSED:
            return Admission.ALLOW
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown_seconds:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return Admission.PROBE
        return Admission.REJECT

    def reopens_at(self) -> float:
        """When an OPEN breaker will let a probe through."""
        return self.opened_at + self.cooldown_seconds

    def record(self, *, succeeded: bool, retriable: bool, now: float, current: bool = True) -> None:
        """Count one delivery's result.

        ``current`` is false for a delivery admitted before the breaker opened: once it is open,
        only the probe's failure may reopen it (a straggler's failure says nothing new), while
        anyone's success shows the receiver is back.
        """
        if not current and self.state is not BreakerState.CLOSED:
            if succeeded or not retriable:
                self.reset()  # the receiver answered: no need to wait for the probe
            return
        was_probe = self.probing
        self.probing = False
        if succeeded or not retriable:
            self.state = BreakerState.CLOSED
            self.failures = 0
            return
        self.failures += 1
        if was_probe or self.failures >= self.failure_threshold:
            if self.state is not BreakerState.OPEN:
                self.trips += 1
            self.state = BreakerState.OPEN
            self.opened_at = now

    def reset(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probing = False
