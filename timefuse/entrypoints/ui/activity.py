"""The last hour of this process's activity, per minute, read from its Prometheus metrics.

The process already counts submissions, deliveries and failures (and the lateness of each
delivery) for ``/metrics``; the console reads those same counters every few seconds and keeps
what each minute added in a ring of 60 minutes: no Prometheus server, no store query, a few
kilobytes of memory. The figures are this process's: in a scale-out deployment an API process
counts submissions and the dispatch processes count deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from timefuse.service.metrics import LATENCY_BUCKETS, Metrics

MINUTES = 60
SAMPLE_SECONDS = 5.0


@dataclass(slots=True)
class Tally:
    """Counts over some span: events submitted, delivered, failed attempts, lateness buckets.

    ``lateness`` holds cumulative bucket counts (as Prometheus keeps them), one per bound of
    ``bounds`` with +Inf last.
    """

    submitted: float = 0.0
    delivered: float = 0.0
    failed: float = 0.0
    lateness: list[float] = field(default_factory=list)

    def minus(self, earlier: Tally) -> Tally:
        return Tally(
            self.submitted - earlier.submitted,
            self.delivered - earlier.delivered,
            self.failed - earlier.failed,
            _zip_sub(self.lateness, earlier.lateness),
        )

    def add(self, other: Tally) -> None:
        self.submitted += other.submitted
        self.delivered += other.delivered
        self.failed += other.failed
        self.lateness = _zip_add(self.lateness, other.lateness)


def _zip_sub(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)] if b else list(a)


def _zip_add(a: list[float], b: list[float]) -> list[float]:
    if not a:
        return list(b)
    if not b:
        return a
    return [x + y for x, y in zip(a, b, strict=True)]


def counter_total(counter: Counter) -> float:
    """A counter's value summed over its labels."""
    return sum(
        sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def histogram_buckets(histogram: Histogram, bounds: list[float]) -> list[float]:
    """A histogram's cumulative counts at ``bounds`` (+Inf last), summed over its labels.

    Zero everywhere until a labelled series has observed (none is listed before that).
    """
    counts = dict.fromkeys(bounds, 0.0)
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                if bound in counts:
                    counts[bound] += sample.value
    return [counts[bound] for bound in bounds]


@dataclass(frozen=True, slots=True)
class Percentile:
    """``seconds`` is an upper estimate; ``beyond`` when it lies past the last finite bound."""

    quantile: float
    seconds: float
    beyond: bool = False


def percentiles(
    bounds: list[float], cumulative: list[float], quantiles: Iterable[float]
) -> list[Percentile] | None:
    """Quantiles of a bucketed distribution, as Prometheus' ``histogram_quantile`` reads them.

    Within the bucket holding the wanted rank, values are taken as evenly spread (linear
    interpolation). ``None`` when nothing was counted.
    """
    if not cumulative or cumulative[-1] <= 0:
        return None
    total = cumulative[-1]
    found = []
    for q in quantiles:
        rank = q * total
        index = next(i for i, count in enumerate(cumulative) if count >= rank)
        upper = bounds[index]
        if math.isinf(upper):
            found.append(Percentile(q, bounds[index - 1] if index else 0.0, beyond=True))
            continue
        lower = bounds[index - 1] if index else 0.0
        below = cumulative[index - 1] if index else 0.0
        inside = cumulative[index] - below
        share = (rank - below) / inside if inside > 0 else 1.0
        found.append(Percentile(q, lower + (upper - lower) * share))
    return found


class Activity:
    """Per-minute figures of the last :data:`MINUTES` minutes, from ``metrics``.

    :param clock: seconds since the epoch (a test passes its own).
    """

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock
        self._bounds = [*LATENCY_BUCKETS, math.inf]
        self.started = clock()
        # Counters start at zero with the process; what they hold before the first read
        # belongs to the minute of that read.
        self._last = Tally(lateness=[0.0] * len(self._bounds))
        self._minutes: deque[tuple[int, Tally]] = deque(maxlen=MINUTES)

    @property
    def bounds(self) -> list[float]:
        return self._bounds

    def read_metrics(self) -> Tally:
        metrics = self._metrics
        return Tally(
            counter_total(metrics.received),
            counter_total(metrics.delivered),
            counter_total(metrics.failed),
            histogram_buckets(metrics.lateness, self._bounds),
        )

    def sample(self) -> None:
        """Add what the counters gained since the last sample to the current minute."""
        self.record(self._clock(), self.read_metrics())

    def record(self, now: float, totals: Tally) -> None:
        gained = totals.minus(self._last)
        self._last = totals
        minute = int(now // 60)
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1].add(gained)
        else:
            self._minutes.append((minute, gained))

    def per_minute(self) -> list[tuple[int, Tally]]:
        """The last :data:`MINUTES` minutes (epoch minute, tally), oldest first, gaps as zero."""
        current = int(self._clock() // 60)
        kept = dict(self._minutes)
        empty = [0.0] * len(self._bounds)
        return [
            (minute, kept.get(minute) or Tally(lateness=list(empty)))
            for minute in range(current - MINUTES + 1, current + 1)
        ]

    def last_hour(self) -> Tally:
        total = Tally(lateness=[0.0] * len(self._bounds))
        for _, tally in self.per_minute():
            total.add(tally)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Sample every :data:`SAMPLE_SECONDS` until ``stop``."""
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
