"""The rule layer every store call passes through, whatever the adapter behind it.

Arguments are checked, status transitions come from the domain's status machine, lease-bound
writes quote their claim, and text bound for the store is made storable: once, here, for
every adapter. Adapters only apply what they are given (the store contract suite holds each of
them to the port's wording).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from timefuse.domain.cursor import Cursor
from timefuse.domain.destination import destination_key
from timefuse.domain.event import Event
from timefuse.domain.status import (
    REDELIVERABLE_STATUSES,
    TERMINAL_STATUSES,
    EventStatus,
    check_transition,
    statuses_that_may_become,
)
from timefuse.domain.text import storable
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    AttemptRecord,
    CancelResult,
    Capabilities,
    ClaimBatch,
    ClaimRef,
    ClaimRequest,
    DueFilter,
    EventPage,
    EventQuery,
    MoveDueResult,
    NextDue,
    OutcomeUpdate,
    RedeliverResult,
    SharedBreaker,
    StoreAdapter,
    WorkerBeat,
    WorkerRecord,
    source_set,
)
from timefuse.service.store_schedules import ScheduleRules

# Ids one get_many may ask for: a batch of submissions.
MAX_GET_MANY = 1000

T = TypeVar("T")

CANCELLABLE = statuses_that_may_become(EventStatus.CANCELLED)
# Only an event no dispatcher holds may change: a claimed one is being delivered as it was.
AMENDABLE = frozenset({EventStatus.PENDING})

# Only an event waiting for its (next) attempt may have it moved: a claimed one is being
# delivered, a finished one is redelivered instead.
MOVABLE = frozenset({EventStatus.PENDING})


def _aware(name: str, moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {moment!r}")
    return moment


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def _not_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return value


class Store(ScheduleRules):
    """The event store as services use it: an adapter behind the rules.

    :param adapter: any :class:`~timefuse.ports.store.StoreAdapter`.
    """

    def __init__(self, adapter: StoreAdapter) -> None:
        self._adapter = adapter

    @property
    def adapter(self) -> StoreAdapter:
        return self._adapter

    @property
    def capabilities(self) -> Capabilities:
        return self._adapter.capabilities

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self._adapter.open()

    async def close(self) -> None:
        await self._adapter.close()

    async def ping(self) -> None:
        await self._adapter.ping()

    # -- submissions -------------------------------------------------------------------------

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        if not events:
            return {}
        return await self._adapter.insert_many([_insertable(event) for event in events])

    # -- claims and outcomes -----------------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> ClaimBatch | None:
        """The claim, or ``None`` when it asks for nothing (no call reaches the store)."""
        _not_negative("limit", request.limit)
        _positive("lease_seconds", request.lease_seconds)
        if not request.worker:
            raise ValueError("a claim needs a worker")
        if any(budget < 0 for budget in request.budgets.values()):
            raise ValueError("destination budgets must not be negative")
        if request.default_budget is not None:
            _not_negative("default_budget", request.default_budget)
        if request.limit == 0 or (
            request.default_budget == 0 and not any(request.budgets.values())
        ):
            return None
        types = request.due.delivery_types
        if types is not None and not types:
            return None
        if request.shared is not None and self.capabilities.limits_sharer is None:
            raise ValueError("this store can't keep limits shared by every process")
        return await self._adapter.claim(request)

    async def next_due(self, due: DueFilter) -> NextDue:
        return await self._adapter.next_due(due)

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        """Write outcomes; the ids of the events whose update applied. For an event given
        several, only the latest claim's can apply (of one claim's, the last given). An
        update's callback is stored with it, when and only when the update applies."""
        latest: dict[str, OutcomeUpdate] = {}
        for update in updates:
            checked = _recordable(update)
            kept = latest.get(checked.event_id)
            if kept is None or checked.ref.claim >= kept.ref.claim:
                latest[checked.event_id] = checked
        if not latest:
            return frozenset()
        return await self._adapter.record_outcomes(list(latest.values()))

    async def hand_back(self, refs: Sequence[ClaimRef], delay_seconds: float = 0.0) -> int:
        _not_negative("delay_seconds", delay_seconds)
        unique = list(dict.fromkeys(refs))
        if not unique:
            return 0
        return await self._adapter.hand_back(unique, delay_seconds)

    async def extend_leases(self, refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        _positive("lease_seconds", lease_seconds)
        unique = list(dict.fromkeys(refs))
        if not unique:
            return 0
        return await self._adapter.extend_leases(unique, lease_seconds)

    # -- coordination ------------------------------------------------------------------------

    async def acquire_leadership(self, role: str, holder: str, ttl_seconds: float) -> bool:
        _positive("ttl_seconds", ttl_seconds)
        if not role or not holder:
            raise ValueError("leadership needs a role and a holder")
        return await self._adapter.acquire_leadership(role, holder, ttl_seconds)

    async def release_leadership(self, role: str, holder: str) -> None:
        await self._adapter.release_leadership(role, holder)

    async def heartbeat(self, beat: WorkerBeat) -> None:
        if not beat.worker:
            raise ValueError("a heartbeat needs a worker")
        _aware("started_at", beat.started_at)
        await self._adapter.heartbeat(beat)

    async def publish_breaker(self, key: str, *, open: bool) -> None:
        sharer = self.capabilities.limits_sharer
        if sharer is not None:
            await sharer.publish_breaker(key, open=open)

    async def open_breakers(self) -> list[SharedBreaker]:
        sharer = self.capabilities.limits_sharer
        return [] if sharer is None else await sharer.open_breakers()

    async def workers(self) -> list[WorkerRecord]:
        return await self._adapter.workers()

    async def forget_workers(self, silent_seconds: float) -> int:
        return await self._adapter.forget_workers(_positive("silent_seconds", silent_seconds))

    async def recover_expired_leases(
        self, dead_workers: Collection[str] = (), *, silent_seconds: float | None = None
    ) -> int:
        if silent_seconds is not None:
            _positive("silent_seconds", silent_seconds)
        return await self._adapter.recover_expired_leases(
            frozenset(dead_workers), silent_seconds=silent_seconds
        )

    # -- queries -----------------------------------------------------------------------------

    async def get(self, event_id: str, *, sources: Collection[str] | None = None) -> Event | None:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return None
        return await self._adapter.get(event_id, sources=wanted)

    async def get_many(self, event_ids: Collection[str]) -> list[Event]:
        """The stored events among ``event_ids`` (at most :data:`MAX_GET_MANY` at once)."""
        ids = list(dict.fromkeys(event_ids))
        if len(ids) > MAX_GET_MANY:
            raise ValueError(f"at most {MAX_GET_MANY} ids at once, got {len(ids)}")
        return await self._adapter.get_many(ids) if ids else []

    async def find_by_external_id(
        self, external_job_id: str, limit: int = 100, *, sources: Collection[str] | None = None
    ) -> list[Event]:
        _positive("limit", limit)
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return []
        return await self._adapter.find_by_external_id(external_job_id, limit, sources=wanted)

    async def list_events(
        self, query: EventQuery, limit: int, after: Cursor | None = None
    ) -> EventPage:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if query.examine_at_most is not None and query.examine_at_most < limit:
            raise ValueError(
                f"examine_at_most ({query.examine_at_most}) must be at least the limit ({limit})"
            )
        if query.sources is not None and not query.sources:
            return EventPage([], None)
        return await self._adapter.list_events(query, limit, after)

    async def count_by_status(
        self, sources: Collection[str] | None = None
    ) -> Mapping[EventStatus, int]:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return dict.fromkeys(EventStatus, 0)
        counts = await self._adapter.count_by_status(wanted)
        return {status: counts.get(status, 0) for status in EventStatus}

    async def pending_by_source(self, sources: Collection[str]) -> dict[str, int]:
        wanted = source_set(sources)
        if not wanted:
            return {}
        counts = await self._adapter.pending_by_source(wanted)
        return {source: counts.get(source, 0) for source in wanted}

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        return await self._adapter.attempts(event_id)

    async def count_due_by_type(self) -> Mapping[str, int]:
        return await self._adapter.count_due_by_type()

    # -- operator actions --------------------------------------------------------------------

    async def cancel(
        self, event_id: str, *, sources: Collection[str] | None = None
    ) -> CancelResult:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return CancelResult.NOT_FOUND
        return await self._adapter.cancel(event_id, sources=wanted, when=CANCELLABLE)

    async def amend(self, event: Event, *, basis: AmendBasis) -> AmendResult:
        """Replace the changeable fields of a PENDING event still in the state ``basis``
        describes, the one the change was computed from (``event.version`` must be the next
        one); see the port's ``amend``."""
        for name in ("scheduled_at", "next_attempt_at", "updated_at"):
            _aware(name, getattr(event, name))
        _aware("basis.next_attempt_at", basis.next_attempt_at)
        if event.version != basis.version + 1:
            raise ValueError("a change makes the event's version exactly one more")
        if event.destination_key != destination_key(event.delivery_type, event.destination):
            event = replace(
                event, destination_key=destination_key(event.delivery_type, event.destination)
            )
        return await self._adapter.amend(event, basis=basis, when=AMENDABLE)

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: Collection[str] | None = None
    ) -> int:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return 0
        return await self._adapter.cancel_by_external_id(
            external_job_id, sources=wanted, when=CANCELLABLE
        )

    async def move_due(
        self,
        event_id: str,
        due_at: datetime,
        now: datetime,
        *,
        sources: Collection[str] | None = None,
    ) -> MoveDueResult:
        """Deliver a PENDING event at ``due_at`` instead (its next attempt, if it is retrying);
        its ``scheduled_at`` stays."""
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return MoveDueResult.NOT_FOUND
        return await self._adapter.move_due(
            event_id,
            _aware("due_at", due_at),
            _aware("now", now),
            sources=wanted,
            when=MOVABLE,
        )

    async def redeliver(
        self, event_id: str, now: datetime, *, sources: Collection[str] | None = None
    ) -> RedeliverResult:
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return RedeliverResult.NOT_FOUND
        return await self._adapter.redeliver(
            event_id, _aware("now", now), sources=wanted, when=REDELIVERABLE_STATUSES
        )

    async def redeliver_dead_letters(
        self,
        *,
        sources: Collection[str] | None,
        scheduled_from: datetime | None,
        scheduled_to: datetime | None,
        now: datetime,
        limit: int = 10_000,
    ) -> int:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        wanted = source_set(sources)
        if wanted is not None and not wanted:
            return 0
        for name, moment in (("scheduled_from", scheduled_from), ("scheduled_to", scheduled_to)):
            if moment is not None:
                _aware(name, moment)
        return await self._adapter.redeliver_matching(
            status=EventStatus.DEAD_LETTER,
            sources=wanted,
            scheduled=(scheduled_from, scheduled_to),
            now=_aware("now", now),
            limit=limit,
        )

    # -- retention ---------------------------------------------------------------------------

    async def delete_terminal_before(
        self, cutoff: datetime, batch_size: int = 10_000, *, wait: bool = False
    ) -> int:
        """Delete finished events last updated before ``cutoff``; never a live one. With
        ``wait``, a pass another process is running is waited for rather than skipped."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        cutoff = _aware("cutoff", cutoff)
        if not wait:
            return await self._adapter.delete_finished_before(cutoff, TERMINAL_STATUSES, batch_size)
        return await self._adapter.delete_finished_before(
            cutoff, TERMINAL_STATUSES, batch_size, wait=True
        )


def _insertable(event: Event) -> Event:
    """``event`` as the store may take it: a new, unclaimed PENDING event with its key."""
    for name in ("scheduled_at", "next_attempt_at", "created_at", "updated_at"):
        _aware(name, getattr(event, name))
    if event.status is not EventStatus.PENDING:
        raise ValueError(f"only PENDING events are inserted, not {event.status.value}")
    if event.locked_by is not None or event.lock_expires_at is not None or event.claim_count:
        raise ValueError("a new event can't be under a claim")
    if event.destination_key:
        return event
    return replace(event, destination_key=destination_key(event.delivery_type, event.destination))


def _recordable(update: OutcomeUpdate) -> OutcomeUpdate:
    """``update`` checked against the status machine, its text made storable."""
    check_transition(EventStatus.PROCESSING, update.status)
    if update.status is EventStatus.PENDING:
        if update.retry_delay_seconds is None:
            raise ValueError("a retry (PENDING) needs its retry_delay_seconds")
        _not_negative("retry_delay_seconds", update.retry_delay_seconds)
    elif update.retry_delay_seconds is not None:
        raise ValueError(f"only a retry has a retry delay, not {update.status.value}")
    if update.executed_at is not None:
        _aware("executed_at", update.executed_at)
    if update.ref.worker != update.attempt.worker:
        raise ValueError("an outcome is recorded by the worker that holds the claim")
    _aware("started_at", update.attempt.started_at)
    callback = update.callback
    if callback is not None:
        if update.status not in TERMINAL_STATUSES:
            raise ValueError(f"a callback reports an event's end, not {update.status.value}")
        if callback.parent_id != update.event_id:
            raise ValueError("an outcome's callback names the event of the outcome as its parent")
        callback = _insertable(callback)
    last_error = storable(update.last_error)
    error = storable(update.attempt.error)
    if (
        last_error == update.last_error
        and error == update.attempt.error
        and callback is update.callback
    ):
        return update
    return replace(
        update,
        last_error=last_error,
        attempt=replace(update.attempt, error=error),
        callback=callback,
    )
