"""What a store adapter can do beyond the role ports, declared by the adapter, read in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class WatchesDue(Protocol):
    async def watch_due(
        self, notify: Callable[[datetime | None], None], stop: asyncio.Event
    ) -> None:
        """Call ``notify(due_at)`` whenever any process makes events due (``None``: look
        now), until ``stop`` is set."""
        ...


class PlansStorage(Protocol):
    async def prepare_storage(self) -> list[str]:
        """Prepare what the coming periods need (time partitions); the names of what it made."""
        ...


class Migrates(Protocol):
    async def migrate(self) -> list[str]:
        """Apply the schema changes the store lacks; the names of what was applied."""
        ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """An adapter's optional abilities (``None``: it doesn't have that one).

    :param shared: several processes may use the store at once (each process's claims,
        leadership and heartbeats then matter); ``False`` for a store one process owns.
    """

    shared: bool = False
    due_watcher: WatchesDue | None = None
    storage_planner: PlansStorage | None = None
    migrator: Migrates | None = None
