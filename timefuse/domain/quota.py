"""Quotas per submitting source: how fast it may submit, how many PENDING events it may hold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# The entry that holds for every source without one of its own.
ANY_SOURCE = "*"


@dataclass(frozen=True, slots=True)
class SourceQuota:
    """One source's limits; ``None`` is no limit.

    :param rate: events accepted per second on average (a token bucket).
    :param burst: events accepted at once after a quiet spell (the bucket's size); by default
        one second's worth of ``rate``, at least 1.
    :param max_pending: PENDING events the source may have stored at once.
    """

    rate: float | None = None
    burst: int | None = None
    max_pending: int | None = None

    def __post_init__(self) -> None:
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be positive, got {self.rate!r}")
        if self.burst is not None:
            if self.rate is None:
                raise ValueError("burst needs a rate")
            if self.burst < 1:
                raise ValueError(f"burst must be at least 1, got {self.burst!r}")
        if self.max_pending is not None and self.max_pending < 0:
            raise ValueError(f"max_pending must not be negative, got {self.max_pending!r}")

    @property
    def bucket_size(self) -> int:
        """The burst in effect (0 without a rate)."""
        if self.rate is None:
            return 0
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))

    @property
    def limits_anything(self) -> bool:
        return self.rate is not None or self.max_pending is not None


@dataclass(frozen=True, slots=True)
class QuotaTable:
    """The quotas per source, with :data:`ANY_SOURCE` for every source not named.

    A source's own entry replaces the ``*`` one whole: ``{"*": {"rate": 10}, "ops": {}}``
    leaves ``ops`` unlimited. Each source has limits of its own even when they come from
    ``*``: ten sources under ``"*": {"rate": 10}`` may submit 10 events/s each.
    """

    entries: Mapping[str, SourceQuota]

    def __bool__(self) -> bool:
        return any(quota.limits_anything for quota in self.entries.values())

    def entry_of(self, source: str) -> tuple[str, SourceQuota] | None:
        """The entry that holds for ``source``: its name (the source, or ``*``) and its
        quota; ``None`` when nothing limits the source."""
        name = source if source in self.entries else ANY_SOURCE
        quota = self.entries.get(name)
        if quota is None or not quota.limits_anything:
            return None
        return name, quota
