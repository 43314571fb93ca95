"""What a store adapter can do beyond the role ports, declared by the adapter, read in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from timefuse.ports.store.records import SharedBreaker


class WatchesDue(Protocol):
    async def watch_due(
        self, notify: Callable[[datetime | None], None], stop: asyncio.Event
    ) -> None:
        """Call ``notify(due_at)`` whenever any process makes events due (``None``: look
        now), until ``stop`` is set."""
        ...


class SharesLimits(Protocol):
    """Per-destination limits and breakers kept for every process together: a claim given
    :class:`~timefuse.ports.store.records.SharedLimits` respects them across processes, and
    breakers are published here.

    A breaker key is a destination key (the destination's own breaker: it holds every
    source's events there) or ``"<destination key>\x1f<source>"`` (a source's own breaker at
    the destination: it holds only that source's events there). An open breaker of either kind
    lets one probe through per cool-down, the same way; the same pair keys in
    ``DueFilter.excluded_destinations`` leave that source's events there out."""

    async def publish_breaker(self, key: str, *, open: bool) -> None:
        """Open a breaker for every process (from the store's now, its probe cleared), or
        close it."""
        ...

    async def open_breakers(self) -> list[SharedBreaker]:
        """The breakers open for every process (destinations' and sources' at them)."""
        ...


class PlansStorage(Protocol):
    async def prepare_storage(self) -> list[str]:
        """Prepare what the coming periods need (time partitions); the names of what it made."""
        ...


class Migrates(Protocol):
    async def migrate(self) -> list[str]:
        """Apply the schema changes the store lacks; the names of what was applied."""
        ...


class ReadsFromReplica(Protocol):
    """Queries and statistics are read from a replica of the store, which may lag behind."""

    async def replica_lag(self) -> float:
        """Seconds the replica is behind the primary (0 when it has replayed everything it
        received); raises :class:`~timefuse.ports.store.StoreUnavailable` when unreachable."""
        ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """An adapter's optional abilities (``None``: it doesn't have that one).

    :param shared: several processes may use the store at once (each process's claims,
        leadership and heartbeats then matter); ``False`` for a store one process owns.
    :param limits_sharer: claims can enforce per-destination limits and breakers for every
        process together, and this keeps the shared breakers.
    :param replica: queries and statistics are read from a replica, whose lag this reports.
    """

    shared: bool = False
    limits_sharer: SharesLimits | None = None
    due_watcher: WatchesDue | None = None
    storage_planner: PlansStorage | None = None
    migrator: Migrates | None = None
    replica: ReadsFromReplica | None = None
