"""Submissions: accepted events going into the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from timefuse.domain.event import Event


class Submissions(Protocol):
    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        """Insert events, skipping duplicates, in one transaction; durable on return.

        A duplicate has the id of a stored event or its ``(source, external_job_id,
        scheduled_at)``. Returns, for every submitted id, the id that is stored: the same id
        when inserted, the earlier event's id when deduplicated.
        """
        ...
