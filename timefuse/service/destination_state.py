"""What a dispatcher remembers of one destination, and the breaker rule across sources.

A destination has two kinds of circuit breaker:

* one per source that failed there: it counts that source's consecutive retriable failures
  and, once open, holds that source's events to the destination and no one else's;
* one for the destination: it counts every source's consecutive failures (a success there
  from anyone starts the count again) and opens for every source only when those failures
  came from ``sources_needed`` distinct sources or more.

So one tenant's failing events (a path that answers 503, a receiver that refuses only its
credentials) can't pause another tenant's deliveries to the same host, while a receiver that
fails for everyone is still left alone by everyone after a handful of failures.

Breaker keys: a destination's breaker is kept under the destination's key; a source's own
breaker under :func:`source_breaker_key` (the destination key, ``\\x1f``, the source). Neither a
source nor a destination may hold a control character, so the two never collide; stores that
share breakers keep both kinds of row under these keys.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from timefuse.domain.breaker import BreakerState, CircuitBreaker
from timefuse.domain.ratelimit import TokenBucket

if TYPE_CHECKING:
    from timefuse.service.gate import Claimed, DestinationLimits

SOURCE_SEPARATOR = "\x1f"

# Sources with a breaker of their own kept at one destination, at most: past it, those whose
# breaker is closed (a partial count of failures) are forgotten first.
MAX_SOURCE_BREAKERS = 256


def source_breaker_key(destination_key: str, source: str) -> str:
    """The key of ``source``'s own breaker at a destination (a shared row, an exclusion)."""
    return f"{destination_key}{SOURCE_SEPARATOR}{source}"


def split_breaker_key(key: str) -> tuple[str, str | None]:
    """A breaker key as (destination key, source); the source is ``None`` for a destination's
    own breaker."""
    destination, separator, source = key.partition(SOURCE_SEPARATOR)
    return (destination, source) if separator else (key, None)


@dataclass(slots=True, eq=False)
class SourceBreaker:
    """One source's own breaker at one destination."""

    breaker: CircuitBreaker
    probe_id: str | None = None  # the event of this source probing the destination
    opened_here: float = -math.inf  # when this process last opened it


@dataclass(frozen=True, slots=True)
class Change:
    """A breaker that opened (``True``) or closed (``False``) here: ``key`` is its breaker key."""

    key: str
    opened: bool


@dataclass(slots=True, eq=False)
class DestinationState:
    key: str
    limits: DestinationLimits
    breaker: CircuitBreaker  # for every source
    bucket: TokenBucket | None
    in_flight: int = 0
    waiting: deque[Claimed] | None = None  # made when an event first waits
    flying: dict[str, int] | None = None  # events in flight per source
    sources: dict[str, SourceBreaker] | None = None  # sources with a breaker of their own
    run_sources: set[str] | None = None  # sources of the current run of failures
    source_trips: int = 0  # times a source's own breaker opened here
    typical_seconds: float | None = None  # moving average of recent delivery durations
    probe_id: str | None = None  # the event probing the destination's breaker
    timer: asyncio.TimerHandle | None = None
    excluded: bool = False  # left out of the last claim
    opened_here: float = -math.inf  # when this process last opened the destination's breaker

    # -- load ---------------------------------------------------------------------------------

    @property
    def waiting_count(self) -> int:
        return len(self.waiting) if self.waiting else 0

    @property
    def busy(self) -> bool:
        return bool(self.in_flight or self.waiting)

    def fly(self, source: str, delta: int) -> None:
        flying = self.flying
        if flying is None:
            flying = self.flying = {}
        count = flying.get(source, 0) + delta
        if count > 0:
            flying[source] = count
        else:
            flying.pop(source, None)
            if not flying:
                self.flying = None

    def present_sources(self) -> set[str]:
        """Sources with an event in flight or waiting here, or a breaker of their own."""
        found = set(self.flying or ())
        found.update(claimed.event.source for claimed in self.waiting or ())
        found.update(self.sources or ())
        return found

    # -- breakers -----------------------------------------------------------------------------

    def hold_of(self, source: str) -> SourceBreaker | None:
        return self.sources.get(source) if self.sources else None

    def new_hold(self, source: str) -> SourceBreaker:
        if self.sources is None:
            self.sources = {}
        elif len(self.sources) >= MAX_SOURCE_BREAKERS:
            self._forget_closed_holds()
        found = self.sources[source] = SourceBreaker(
            CircuitBreaker(self.breaker.failure_threshold, self.breaker.cooldown_seconds)
        )
        return found

    def _forget_closed_holds(self) -> None:
        assert self.sources is not None
        for source, hold in list(self.sources.items()):
            if hold.breaker.state is BreakerState.CLOSED and hold.probe_id is None:
                del self.sources[source]

    def drop_hold(self, source: str) -> None:
        if self.sources is not None:
            self.sources.pop(source, None)
            if not self.sources:
                self.sources = None

    def held_sources(self) -> list[str]:
        """Sources whose own breaker is open or half-open here."""
        return sorted(
            source
            for source, hold in (self.sources or {}).items()
            if hold.breaker.state is not BreakerState.CLOSED
        )

    @property
    def tripped(self) -> bool:
        """Whether any breaker here, the destination's or a source's, is not closed."""
        if self.breaker.state is not BreakerState.CLOSED:
            return True
        holds = (self.sources or {}).values()
        return any(hold.breaker.state is not BreakerState.CLOSED for hold in holds)

    def breakers(self) -> list[CircuitBreaker]:
        return [self.breaker, *(hold.breaker for hold in (self.sources or {}).values())]

    def judge(
        self,
        source: str,
        *,
        succeeded: bool,
        retriable: bool,
        now: float,
        sources_needed: int,
        probed: bool,
        source_probed: bool,
    ) -> list[Change]:
        """Count one attempt's result on the source's breaker and the destination's.

        ``probed``: the attempt was the destination breaker's probe; ``source_probed``: the
        source's breaker's. Returns the breakers that opened or closed.
        """
        changes: list[Change] = []
        failed = retriable and not succeeded
        hold = self.hold_of(source)
        if hold is None and failed:
            hold = self.new_hold(source)
        if hold is not None:
            changes += self._judge_source(source, hold, succeeded, retriable, now, source_probed)
        changes += self._judge_destination(
            source, succeeded, retriable, now, sources_needed, probed
        )
        return changes

    def _judge_source(
        self,
        source: str,
        hold: SourceBreaker,
        succeeded: bool,
        retriable: bool,
        now: float,
        probed: bool,
    ) -> list[Change]:
        breaker = hold.breaker
        before, trips = breaker.state, breaker.trips
        current = probed or breaker.state is BreakerState.CLOSED
        breaker.record(succeeded=succeeded, retriable=retriable, now=now, current=current)
        self.source_trips += breaker.trips - trips
        if breaker.state is BreakerState.CLOSED and not breaker.failures and hold.probe_id is None:
            self.drop_hold(source)
        return _change(source_breaker_key(self.key, source), before, breaker.state, hold, now)

    def _judge_destination(
        self,
        source: str,
        succeeded: bool,
        retriable: bool,
        now: float,
        sources_needed: int,
        probed: bool,
    ) -> list[Change]:
        breaker = self.breaker
        before = breaker.state
        current = probed or breaker.state is BreakerState.CLOSED
        if retriable and not succeeded and current and not probed:
            run = self.run_sources
            if run is None:
                run = self.run_sources = set()
            if len(run) < sources_needed:
                run.add(source)
            if breaker.failures + 1 >= breaker.failure_threshold and len(run) < sources_needed:
                # Enough failures, but all from fewer sources than it takes: the sources'
                # own breakers hold them; the destination stays open to the others.
                breaker.failures += 1
                return []
        breaker.record(succeeded=succeeded, retriable=retriable, now=now, current=current)
        if breaker.state is not BreakerState.CLOSED or not breaker.failures:
            self.run_sources = None
        if before is not BreakerState.CLOSED and breaker.state is BreakerState.CLOSED:
            # The receiver is back: what sources counted towards their own breakers is stale.
            self._forget_closed_holds_if_any()
        return _change(self.key, before, breaker.state, self, now)

    def _forget_closed_holds_if_any(self) -> None:
        if self.sources:
            self._forget_closed_holds()
            if not self.sources:
                self.sources = None

    def reset(self) -> list[Change]:
        """Close every breaker here (an operator's reset); the ones that were not closed."""
        changes: list[Change] = []
        if self.breaker.state is not BreakerState.CLOSED:
            changes.append(Change(self.key, False))
        self.breaker.reset()
        self.probe_id = None
        self.run_sources = None
        for source, hold in (self.sources or {}).items():
            if hold.breaker.state is not BreakerState.CLOSED:
                changes.append(Change(source_breaker_key(self.key, source), False))
        self.sources = None
        return changes

    def forgettable(self, now: float, idle_seconds: float) -> bool:
        """Whether forgetting it now loses nothing worth keeping: every breaker closed or its
        cool-down over ``idle_seconds`` ago, and its token bucket full again."""
        cutoff = now - idle_seconds
        for breaker in self.breakers():
            if breaker.state is not BreakerState.CLOSED and breaker.reopens_at() > cutoff:
                return False
        bucket = self.bucket
        return bucket is None or bucket.available(now) >= bucket.burst

    # -- what operators see ------------------------------------------------------------------

    def row(self, now: float) -> dict[str, object]:
        """The destination's state as the admin API, the console and metrics show it.

        ``breaker`` is the destination's own breaker when it is not closed, else the most
        restrictive of the sources' (``held_sources`` names those sources).
        """
        breaker = self.breaker
        held = self.held_sources()
        shown = breaker
        if breaker.state is BreakerState.CLOSED and held:
            assert self.sources is not None
            holds = [self.sources[source].breaker for source in held]
            shown = min(holds, key=lambda b: (b.state is not BreakerState.OPEN, b.reopens_at()))
        reopens = shown.reopens_at() - now if shown.state is BreakerState.OPEN else None
        return {
            "breaker": shown.state.value,
            "breaker_for_all": breaker.state is not BreakerState.CLOSED,
            "held_sources": held,
            "consecutive_failures": breaker.failures,
            "trips": breaker.trips + self.source_trips,
            "in_flight": self.in_flight,
            "waiting": self.waiting_count,
            "concurrency": self.limits.concurrency,
            "rate": self.limits.rate,
            "probe_in_seconds": None if reopens is None else max(0.0, reopens),
            "sources": sorted(self.present_sources()),
        }


def _change(
    key: str,
    before: BreakerState,
    after: BreakerState,
    owner: SourceBreaker | DestinationState,
    now: float,
) -> list[Change]:
    if after is BreakerState.OPEN and before is not BreakerState.OPEN:
        owner.opened_here = now
        return [Change(key, True)]
    if after is BreakerState.CLOSED and before is not BreakerState.CLOSED:
        return [Change(key, False)]
    return []
