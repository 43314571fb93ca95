"""Retention: forgetting finished events."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from timefuse.domain.status import EventStatus


class Retention(Protocol):
    async def delete_finished_before(
        self, cutoff: datetime, statuses: frozenset[EventStatus], batch_size: int
    ) -> int:
        """Delete events in ``statuses`` last updated before ``cutoff``, with their history,
        in bounded batches; returns how many went (0 when another process is at it)."""
        ...
