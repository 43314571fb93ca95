"""The event store port: where events live between acceptance and delivery."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from timefuse.domain.cursor import Cursor as Cursor
from timefuse.domain.event import Event
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus


class StoreError(Exception):
    """The store failed in a way callers may report but not retry blindly."""


class StoreUnavailable(StoreError):
    """The store can't be reached now; the same call may succeed later."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One delivery attempt, kept as the event's history.

    ``attempt`` is the attempt's number in its delivery round: the event's ``attempts`` when it
    was claimed, which starts again from 1 after a redelivery. ``sequence`` is the record's
    place in the event's whole history, from 1, never reused: the store assigns it when it
    keeps the record (callers building a record leave it 0), so attempts made after a
    redelivery continue the numbering instead of repeating it.
    """

    attempt: int
    started_at: datetime
    duration_ms: float
    outcome: OutcomeKind
    status_code: int | None
    error: str | None
    worker: str
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class OutcomeUpdate:
    """Where an attempt left an event, to be written back under the claimer's lease.

    ``status``, ``retry_count`` and ``last_error`` are written as given (``None`` clears the
    last error). ``next_attempt_at`` and ``executed_at`` are written when not ``None`` and
    otherwise leave the stored value unchanged: a retry (``status`` PENDING) brings its
    ``next_attempt_at``, a success its ``executed_at``; other outcomes pass ``None`` and keep
    the last due time and the time of any earlier successful delivery.
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


class RedeliverResult(enum.Enum):
    REDELIVERED = "REDELIVERED"
    NOT_FOUND = "NOT_FOUND"
    NOT_REDELIVERABLE = "NOT_REDELIVERABLE"


def source_set(sources: Collection[str] | None) -> frozenset[str] | None:
    """``sources`` as a set (``None`` stays ``None``: no filter); a bare string is refused.

    A string is a collection of one-character strings, so ``sources="billing"`` would
    otherwise filter on the sources ``"b"``, ``"i"``...
    """
    if sources is None:
        return None
    if isinstance(sources, str):
        raise TypeError("sources must be a collection of source names, not one string")
    return frozenset(sources)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events a listing returns; every criterion given must hold.

    :param status: only events in this status (default: any).
    :param sources: only events from these sources; an empty collection matches nothing
        (default ``None``: any source).
    :param scheduled_from: only events scheduled at or after this instant.
    :param scheduled_to: only events scheduled before this instant (half-open: an event
        scheduled exactly at ``scheduled_to`` is left out, so consecutive windows don't
        overlap).
    """

    status: EventStatus | None = None
    sources: Collection[str] | None = None
    scheduled_from: datetime | None = None
    scheduled_to: datetime | None = None

    def __post_init__(self) -> None:
        # Any collection is accepted (a list parsed from a query string); a frozenset is kept,
        # so queries stay hashable and a caller's later change to its list can't leak in.
        object.__setattr__(self, "sources", source_set(self.sources))
        for moment in (self.scheduled_from, self.scheduled_to):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"an event query needs timezone-aware datetimes, got {moment!r}")


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a listing, and where the next one starts (``None``: this is the last)."""

    events: list[Event]
    next_cursor: Cursor | None


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
        ``lock_expires_at`` = now + lease, ``attempts`` + 1; the claim's time is kept as the
        start of the attempt should its lease expire. Two callers never claim the same event.
        Earliest due first.
        """

    async def record_outcomes(self, worker_id: str, updates: Sequence[OutcomeUpdate]) -> int:
        """Write attempt outcomes back in one transaction and keep each attempt's record.

        An update applies only while the event is PROCESSING, locked by ``worker_id``, and
        still under the claim the update is about: its stored ``attempts`` equals the update's
        ``attempt.attempt`` (the number :meth:`claim_due` gave that claim). So a worker whose
        lease expired can't overwrite a newer claim, not even its own: should the same worker
        claim the event again after lease recovery, the first attempt's late outcome doesn't
        apply to the second claim. How each field is written:
        :class:`OutcomeUpdate`. The attempt record is kept exactly when its update applies,
        numbered by the store (:attr:`AttemptRecord.sequence`). Only the first update for an
        event in ``updates`` can apply. Returns how many applied.
        """

    async def release(self, worker_id: str, event_ids: Sequence[str]) -> int:
        """Hand claimed events back as PENDING, due now, their attempt not counted.

        The same as :meth:`reschedule` with ``due_at`` = the store's now.
        """

    async def reschedule(self, worker_id: str, event_ids: Sequence[str], due_at: datetime) -> int:
        """Hand events claimed by ``worker_id`` back as PENDING, due at ``due_at``, uncounted.

        For attempts never made (an open circuit breaker, a shutdown): ``attempts`` - 1 (not
        below 0), the lease cleared, no attempt record; ``retry_count`` and ``last_error``
        unchanged. Applies only to events PROCESSING and locked by ``worker_id``, in one
        transaction. Returns how many were handed back.
        """

    async def recover_expired_leases(self) -> int:
        """Apply :func:`timefuse.domain.lease.expire_lease` to every expired lease.

        A lease is held through its expiry instant: it has expired when ``lock_expires_at`` <
        now, on the store's clock. Each expiry also keeps an attempt record: outcome
        RETRIABLE, error :data:`timefuse.domain.lease.LEASE_EXPIRED_ERROR`, worker = the lease
        holder, ``started_at`` = the claim's time, duration = now - the claim's time, no status
        code. Returns how many leases expired.
        """

    async def cancel(self, event_id: str) -> CancelResult:
        """Cancel one event if, and only if, it is PENDING (atomic: never races a claim)."""

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: Collection[str] | None = None
    ) -> int:
        """Cancel every PENDING event with that external id; returns how many.

        With ``sources``, only events from those sources are cancelled (an empty collection
        cancels nothing); ``None`` cancels them whatever their source. One statement: an
        event claimed meanwhile stays claimed.
        """

    async def get(self, event_id: str) -> Event | None: ...

    async def find_by_external_id(
        self,
        external_job_id: str,
        limit: int = 100,
        *,
        sources: Collection[str] | None = None,
    ) -> list[Event]:
        """Up to ``limit`` events with that external id, the most recently created first.

        With ``sources``, only events from those sources (an empty collection finds nothing),
        filtered before ``limit`` applies: events of other sources never crowd them out.
        ``None`` finds them whatever their source.
        """

    async def count_by_status(
        self, sources: Collection[str] | None = None
    ) -> Mapping[EventStatus, int]:
        """How many events are in each status (every status present, zero when none).

        With ``sources``, only events from those sources count (an empty collection counts
        nothing); ``None`` counts every event.
        """

    async def list_events(
        self, query: EventQuery, limit: int, after: Cursor | None = None
    ) -> EventPage:
        """Up to ``limit`` events matching ``query``, ordered by ``(scheduled_at, id)``.

        The page starts strictly after ``after`` (the first page when ``None``); its
        ``next_cursor`` is the position of its last event when more events match, and
        ``None`` when this page reaches the end. Paging through with each page's
        ``next_cursor`` returns every matching event exactly once, events sharing a
        ``scheduled_at`` ordered by id, compared code point by code point (not by a locale's
        collation). Raises :class:`ValueError` when ``limit`` < 1.
        """

    async def redeliver(self, event_id: str, now: datetime) -> RedeliverResult:
        """Deliver a finished event again, if it is COMPLETED, FAILED or DEAD_LETTER.

        One conditional update, so it never races a claim: status PENDING, due at ``now``,
        ``attempts`` and ``retry_count`` back to 0 (its ``max_retries`` applies afresh), lease
        fields cleared, ``updated_at`` = ``now``. ``last_error``, ``executed_at`` and the
        attempt history are kept; later attempts continue the history's numbering.
        NOT_REDELIVERABLE for an event in any other status, NOT_FOUND for an unknown id.
        ``now`` is the caller's: no lease is involved, so the store's clock need not decide.
        """

    async def redeliver_dead_letters(
        self,
        *,
        sources: Collection[str] | None,
        scheduled_from: datetime | None,
        scheduled_to: datetime | None,
        now: datetime,
        limit: int = 10_000,
    ) -> int:
        """:meth:`redeliver` up to ``limit`` DEAD_LETTER events in one transaction.

        Only events from ``sources`` (``None``: any source; empty: none) scheduled in
        ``[scheduled_from, scheduled_to)`` (``None``: unbounded on that side), earliest
        ``(scheduled_at, id)`` first. Returns how many were redelivered; call again while it
        returns ``limit`` to redeliver more. Raises :class:`ValueError` when ``limit`` < 1.
        """

    async def next_due_at(self) -> datetime | None:
        """The earliest ``next_attempt_at`` of a PENDING event, or ``None``."""

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        """The attempt history of one event, oldest first (by :attr:`AttemptRecord.sequence`)."""

    async def delete_terminal_before(self, cutoff: datetime, batch_size: int = 10_000) -> int:
        """Delete terminal events last updated before ``cutoff``; returns how many.

        Never touches a PENDING or PROCESSING event. Works in bounded batches.
        """


@runtime_checkable
class WatchesDue(Protocol):
    """A store that can tell every process when events are inserted (PostgreSQL's NOTIFY)."""

    async def watch_due(
        self, notify: Callable[[datetime | None], None], stop: asyncio.Event
    ) -> None:
        """Call ``notify(due_at)`` for each batch inserted by any process, until ``stop``."""


@runtime_checkable
class PlansStorage(Protocol):
    """A store that prepares storage ahead of time (PostgreSQL's time partitions)."""

    async def create_partitions_ahead(self) -> list[str]:
        """Create what the coming periods need; returns the names of what it created."""
        ...
