"""Percentiles and rates for reports."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0..100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def lateness_summary(latenesses: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of lateness values, in seconds."""
    ordered = sorted(latenesses)
    return {
        "lateness_p50_s": percentile(ordered, 50),
        "lateness_p99_s": percentile(ordered, 99),
        "lateness_max_s": ordered[-1] if ordered else math.nan,
    }


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.nan
