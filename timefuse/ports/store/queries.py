"""Queries: reading events and their history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store.records import AttemptRecord, EventPage, EventQuery


class Queries(Protocol):
    async def get(self, event_id: str, *, sources: frozenset[str] | None) -> Event | None:
        """The event, if it exists and (with ``sources``) belongs to one of them."""
        ...

    async def get_many(self, event_ids: Sequence[str]) -> list[Event]:
        """The stored events among ``event_ids`` (any source, in no order): one read for a
        batch's items, however many."""
        ...

    async def find_by_external_id(
        self, external_job_id: str, limit: int, *, sources: frozenset[str] | None
    ) -> list[Event]:
        """Up to ``limit`` events with that external id, the most recently created first.

        With ``sources``, only events from those sources (filtered before the limit applies,
        so other sources can't crowd them out).
        """
        ...

    async def list_events(self, query: EventQuery, limit: int, after: Cursor | None) -> EventPage:
        """Up to ``limit`` events matching ``query``, ordered by ``(scheduled_at, id)``
        (descending with ``query.descending``).

        The page starts strictly after ``after`` in that order; its ``next_cursor`` is the
        position of its last event when more events match, ``None`` when it reaches the end.
        Ids compare code point by code point. With ``query.examine_at_most`` a page may hold
        fewer than ``limit`` events and still a cursor: the position of the last candidate it
        looked at (see :class:`EventQuery`).
        """
        ...

    async def count_by_status(self, sources: frozenset[str] | None) -> Mapping[EventStatus, int]:
        """How many events are in each status (with ``sources``: of those sources only)."""
        ...

    async def pending_by_source(self, sources: frozenset[str]) -> Mapping[str, int]:
        """How many PENDING events each of ``sources`` holds, in one read (a source holding
        none may be left out): what a submission's quotas are checked against."""
        ...

    async def count_due_by_type(self) -> Mapping[str, int]:
        """How many PENDING events are due now (``next_attempt_at`` <= the store's now), per
        delivery type: the backlog, and events whose type no running process delivers."""
        ...

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        """The attempt history of one event, oldest first (by its sequence)."""
        ...
