"""A token bucket: at most ``rate`` deliveries a second on average, bursts up to ``burst``."""

from __future__ import annotations

from dataclasses import dataclass, field

# Refills are float arithmetic: 0.1 s at 10/s can come to 0.9999999; a token that is due
# must not be refused over rounding.
_EPSILON = 1e-9


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def try_take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0 - _EPSILON:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def available(self, now: float) -> float:
        """Tokens there now (fractions included)."""
        self._refill(now)
        return self.tokens

    def wait_seconds(self, now: float) -> float:
        """How long until one token is there (0 when one is there now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 - _EPSILON else (1.0 - self.tokens) / self.rate
