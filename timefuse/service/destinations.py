"""Per-destination limits: a concurrency cap, a token bucket and a circuit breaker per host.

A herd due at midnight must not flatten one receiver, and a slow receiver must not starve the
rest. Each destination gets its own cap and queue; events beyond what its queue holds are
handed back to the store for a little later (no attempt counted) so the dispatcher's capacity
stays free for destinations that can take work now.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from timefuse.domain.breaker import Admission, BreakerState, CircuitBreaker
from timefuse.domain.event import Event
from timefuse.domain.outcome import DeliveryOutcome, OutcomeKind
from timefuse.domain.ratelimit import TokenBucket


@dataclass(frozen=True, slots=True)
class DestinationLimits:
    """Limits for one destination. ``0`` means unlimited for ``concurrency`` and ``rate``."""

    concurrency: int = 100
    rate: float = 0.0
    burst: int = 0
    queue: int = 0  # events held waiting for this destination; 0: see GateSettings.min_queue


@dataclass(frozen=True, slots=True)
class GateSettings:
    default: DestinationLimits = DestinationLimits()
    overrides: Mapping[str, DestinationLimits] = field(default_factory=dict)
    # Per delivery type, the limits of a destination with no override (else ``default``).
    type_defaults: Mapping[str, DestinationLimits] = field(default_factory=dict)
    # How many claimed events a destination may hold waiting: as many as it works off in
    # ``max_queue_seconds`` at its recent pace (at least its cap, at most ``max_queue``), or
    # ``min_queue`` before its pace is known. A fast receiver's whole backlog waits in memory
    # instead of going back to the store and being claimed again; a slow one holds only a
    # small part of the dispatcher's capacity, so it can't starve the others.
    min_queue: int = 500
    max_queue: int = 10_000
    max_queue_seconds: float = 1.0
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    # An event its destination can't hold is handed back for about as long as the queue ahead
    # of it takes to drain (from the destination's recent delivery times), within these bounds:
    # a fast receiver's overflow is back within milliseconds, a slow one's doesn't churn.
    min_defer_seconds: float = 0.05
    max_defer_seconds: float = 5.0


class Verdict(enum.Enum):
    START = "START"
    WAIT = "WAIT"
    DEFER = "DEFER"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    delay_seconds: float = 0.0


def destination_key(event: Event) -> str:
    """The destination's host (and port) for URLs, else the destination itself (a topic)."""
    if "://" in event.destination:
        netloc = urlsplit(event.destination).netloc.rpartition("@")[2]
        return netloc.lower()
    return f"{event.delivery_type}:{event.destination}"


@dataclass
class _Destination:
    limits: DestinationLimits
    breaker: CircuitBreaker
    bucket: TokenBucket | None
    in_flight: int = 0
    waiting: deque[Event] = field(default_factory=deque)
    typical_seconds: float | None = None  # moving average of recent delivery durations
    probe_id: str | None = None  # the event probing a half-open breaker


class DestinationGate:
    def __init__(
        self, settings: GateSettings, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._now = monotonic
        self._destinations: dict[str, _Destination] = {}

    def _get(self, key: str, delivery_type: str) -> _Destination:
        found = self._destinations.get(key)
        if found is None:
            settings = self._settings
            fallback = settings.type_defaults.get(delivery_type, settings.default)
            limits = settings.overrides.get(key, fallback)
            bucket = None
            if limits.rate > 0:
                bucket = TokenBucket(limits.rate, max(1, limits.burst or int(limits.rate)))
            breaker = CircuitBreaker(
                self._settings.breaker_failures, self._settings.breaker_cooldown_seconds
            )
            found = self._destinations[key] = _Destination(limits, breaker, bucket)
        return found

    def offer(self, event: Event) -> Decision:
        """Start ``event`` now, hold it in its destination's queue, or defer it."""
        dest = self._get(destination_key(event), event.delivery_type)
        now = self._now()
        admission = dest.breaker.admit(now)
        if admission is Admission.REJECT:
            return self._deferral(dest, now)
        if admission is Admission.PROBE:
            dest.probe_id = event.id
        if admission is Admission.PROBE or (not dest.waiting and self._can_start(dest, now)):
            dest.in_flight += 1
            return Decision(Verdict.START)
        if len(dest.waiting) < self._queue_limit(dest):
            dest.waiting.append(event)
            return Decision(Verdict.WAIT, self._token_wait(dest, now))
        return self._deferral(dest, now)

    def finished(self, event: Event, outcome: DeliveryOutcome, seconds: float = 0.0) -> None:
        dest = self._get(destination_key(event), event.delivery_type)
        dest.in_flight = max(0, dest.in_flight - 1)
        typical = dest.typical_seconds
        dest.typical_seconds = seconds if typical is None else typical + 0.1 * (seconds - typical)
        is_probe = dest.probe_id == event.id
        if is_probe:
            dest.probe_id = None
        dest.breaker.record(
            succeeded=outcome.kind is OutcomeKind.SUCCESS,
            retriable=outcome.kind is OutcomeKind.RETRIABLE,
            now=self._now(),
            current=is_probe or dest.breaker.state is BreakerState.CLOSED,
        )

    def abandon(self, event: Event) -> None:
        """An event given START was not started after all: free its slot, judge nothing."""
        dest = self._get(destination_key(event), event.delivery_type)
        dest.in_flight = max(0, dest.in_flight - 1)
        if dest.probe_id == event.id:
            dest.probe_id = None
            dest.breaker.probing = False  # the next event may probe instead

    def pump(self, event: Event) -> tuple[list[Event], list[tuple[Event, float]], float]:
        """For ``event``'s destination: events to start now, events to defer (with delays),
        and seconds until waiting events may start (0 when nothing waits on tokens)."""
        dest = self._get(destination_key(event), event.delivery_type)
        now = self._now()
        start: list[Event] = []
        defer: list[tuple[Event, float]] = []
        while dest.waiting:
            if dest.breaker.state is BreakerState.OPEN:
                delay = self._deferral(dest, now).delay_seconds
                defer.extend((waiting, delay) for waiting in dest.waiting)
                dest.waiting.clear()
                break
            if not self._can_start(dest, now):
                break
            dest.in_flight += 1
            start.append(dest.waiting.popleft())
        wait = self._token_wait(dest, now) if dest.waiting else 0.0
        return start, defer, wait

    def drain_waiting(self) -> list[Event]:
        """Every held event (at shutdown, to hand back)."""
        held = [event for dest in self._destinations.values() for event in dest.waiting]
        for dest in self._destinations.values():
            dest.waiting.clear()
        return held

    def _queue_limit(self, dest: _Destination) -> int:
        limits, settings = dest.limits, self._settings
        if limits.queue:
            return limits.queue
        if dest.typical_seconds is None or not limits.concurrency:
            return max(limits.concurrency, settings.min_queue)
        pace = limits.concurrency / max(dest.typical_seconds, 1e-6)
        return int(
            min(settings.max_queue, max(limits.concurrency, pace * settings.max_queue_seconds))
        )

    def _can_start(self, dest: _Destination, now: float) -> bool:
        cap = dest.limits.concurrency
        if cap and dest.in_flight >= cap:
            return False
        return dest.bucket is None or dest.bucket.try_take(now)

    def _token_wait(self, dest: _Destination, now: float) -> float:
        return 0.0 if dest.bucket is None else dest.bucket.wait_seconds(now)

    def _deferral(self, dest: _Destination, now: float) -> Decision:
        settings = self._settings
        if dest.breaker.state is BreakerState.OPEN:
            return Decision(
                Verdict.DEFER, max(settings.min_defer_seconds, dest.breaker.reopens_at() - now)
            )
        rounds = len(dest.waiting) / max(1, dest.limits.concurrency) + 1
        typical = (
            settings.min_defer_seconds if dest.typical_seconds is None else dest.typical_seconds
        )
        delay = typical * rounds + self._token_wait(dest, now)
        delay = min(settings.max_defer_seconds, max(settings.min_defer_seconds, delay))
        return Decision(Verdict.DEFER, delay)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Each known destination's breaker state, in-flight and waiting counts."""
        return {
            key: {
                "breaker": dest.breaker.state.value,
                "consecutive_failures": dest.breaker.failures,
                "trips": dest.breaker.trips,
                "in_flight": dest.in_flight,
                "waiting": len(dest.waiting),
            }
            for key, dest in sorted(self._destinations.items())
        }

    def reset_breaker(self, key: str) -> bool:
        dest = self._destinations.get(key)
        if dest is None:
            return False
        dest.breaker.reset()
        return True
