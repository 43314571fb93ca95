"""Retention: forgetting finished events."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from timefuse.domain.status import EventStatus


class Retention(Protocol):
    async def delete_finished_before(
        self,
        cutoff: datetime,
        statuses: frozenset[EventStatus],
        batch_size: int,
        *,
        wait: bool = False,
    ) -> int:
        """Delete events in ``statuses`` last updated before ``cutoff``, with their history,
        in bounded batches; returns how many went. When another process is at it: 0 at once
        (the scheduled pass), or with ``wait`` (an operator's request) once that pass has
        ended, after a pass of its own."""
        ...
