"""Operator actions: cancelling, changing and redelivering events.

Each is one conditional write, so it never races a claim. Which statuses an action applies to
is the caller's rule (the rule layer passes it in), not the adapter's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store.records import (
    AmendBasis,
    AmendResult,
    CancelResult,
    MoveDueResult,
    RedeliverResult,
)


class OperatorActions(Protocol):
    async def cancel(
        self, event_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> CancelResult:
        """CANCELLED, if the event (of ``sources``, when given) is in one of ``when``."""
        ...

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> int:
        """Cancel every event with that external id (of ``sources``) in one of ``when``."""
        ...

    async def amend(
        self, event: Event, *, basis: AmendBasis, when: frozenset[EventStatus]
    ) -> AmendResult:
        """Write ``event``'s changeable fields over the stored event of its id, if that one is
        in one of ``when`` and still as ``basis`` says (its ``version``, ``claim_count`` and
        ``next_attempt_at``), in one conditional write.

        The changeable fields are the accepted ones (:data:`EVENT_COLUMNS`, ``accepted``) but
        ``id``, ``external_job_id``, ``source``, ``delivery_type`` and ``created_at``, plus
        ``updated_at`` and ``extra``; ``version`` becomes ``basis.version + 1``. A new
        ``scheduled_at`` moves the event and its attempt history with it.
        """
        ...

    async def move_due(
        self,
        event_id: str,
        due_at: datetime,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> MoveDueResult:
        """Move the next attempt of an event in one of ``when`` to ``due_at`` (earlier or
        later): ``next_attempt_at`` = ``due_at``, ``updated_at`` = ``now``; ``scheduled_at``
        (the time the sender asked for, part of the event's identity) and the rest stay."""
        ...

    async def redeliver(
        self,
        event_id: str,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> RedeliverResult:
        """Start a new delivery round for an event in one of ``when``: PENDING, due ``now``,
        ``attempts`` and ``retry_count`` 0, lease fields cleared, ``updated_at`` = ``now``;
        ``last_error``, ``executed_at`` and the history stay."""
        ...

    async def redeliver_matching(
        self,
        *,
        status: EventStatus,
        sources: frozenset[str] | None,
        scheduled: tuple[datetime | None, datetime | None],
        now: datetime,
        limit: int,
    ) -> int:
        """:meth:`redeliver` up to ``limit`` events in ``status`` (of ``sources``, scheduled in
        the half-open range), earliest ``(scheduled_at, id)`` first, in one transaction."""
        ...
