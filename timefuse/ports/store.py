"""The event store port: where events live between acceptance and delivery."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from timefuse.domain.event import Event
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus


class StoreError(Exception):
    """The store failed in a way callers may report but not retry blindly."""


class StoreUnavailable(StoreError):
    """The store can't be reached now; the same call may succeed later."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One delivery attempt, kept as the event's history."""

    attempt: int
    started_at: datetime
    duration_ms: float
    outcome: OutcomeKind
    status_code: int | None
    error: str | None
    worker: str


@dataclass(frozen=True, slots=True)
class OutcomeUpdate:
    """Where an attempt left an event, to be written back under the claimer's lease.

    ``next_attempt_at`` is set when ``status`` is PENDING (a retry); ``executed_at`` when it is
    COMPLETED.
    """

    event_id: str
    status: EventStatus
    retry_count: int
    last_error: str | None
    next_attempt_at: datetime | None
    executed_at: datetime | None
    attempt: AttemptRecord


class CancelResult(enum.Enum):
    CANCELLED = "CANCELLED"
    NOT_FOUND = "NOT_FOUND"
    NOT_PENDING = "NOT_PENDING"


class EventStore(Protocol):
    """Durable storage of events, safe for many dispatchers at once.

    Times that guard claims and leases come from the store's own clock, so dispatchers with
    skewed clocks still agree on who holds what.
    """

    async def open(self) -> None:
        """Connect and prepare (create the schema where the adapter owns it)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the store answers; raise :class:`StoreUnavailable` otherwise."""

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        """Insert events, skipping duplicates, in one transaction.

        A duplicate has the id of a stored event or its ``(source, external_job_id,
        scheduled_at)``. Returns, for every submitted id, the id that is stored: the same id
        when inserted, the earlier event's id when deduplicated. Durable on return.
        """

    async def claim_due(self, worker_id: str, limit: int, lease_seconds: float) -> list[Event]:
        """Claim up to ``limit`` PENDING events whose ``next_attempt_at`` has come.

        In one transaction: status PROCESSING, ``locked_by`` = ``worker_id``,
        ``lock_expires_at`` = now + lease, ``attempts`` + 1. Two callers never claim the same
        event. Earliest due first.
        """

    async def record_outcomes(self, worker_id: str, updates: Sequence[OutcomeUpdate]) -> int:
        """Write attempt outcomes back in one transaction and keep each attempt's record.

        An update applies only while the event is PROCESSING and locked by ``worker_id``: a
        worker whose lease expired can't overwrite a newer claim. Returns how many applied.
        """

    async def release(self, worker_id: str, event_ids: Sequence[str]) -> int:
        """Hand claimed events back as PENDING, due now, their attempt not counted."""

    async def recover_expired_leases(self) -> int:
        """Apply :func:`timefuse.domain.lease.expire_lease` to every expired lease."""

    async def cancel(self, event_id: str) -> CancelResult:
        """Cancel one event if, and only if, it is PENDING (atomic: never races a claim)."""

    async def cancel_by_external_id(self, external_job_id: str) -> int:
        """Cancel every PENDING event with that external id; returns how many."""

    async def get(self, event_id: str) -> Event | None: ...

    async def find_by_external_id(self, external_job_id: str, limit: int = 100) -> list[Event]:
        """Events with that external id, the most recently created first."""

    async def count_by_status(self) -> Mapping[EventStatus, int]:
        """How many events are in each status (every status present, zero when none)."""

    async def next_due_at(self) -> datetime | None:
        """The earliest ``next_attempt_at`` of a PENDING event, or ``None``."""

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        """The attempt history of one event, oldest first."""

    async def delete_terminal_before(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        """Delete terminal events last updated before ``cutoff``; returns how many.

        Never touches a PENDING or PROCESSING event. Works in bounded batches.
        """
