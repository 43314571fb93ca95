"""Use cases the API offers: submit, look up, list, cancel, redeliver, count."""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from timefuse.domain.amend import amend_event
from timefuse.domain.callback import CALLBACK_DELIVERY_TYPE
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import (
    CALLBACK_FIELDS,
    FieldError,
    SubmissionLimits,
    ValidationFailed,
    build_event,
)
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.clock import Clock
from timefuse.ports.ingest import IngestBuffer
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    AttemptRecord,
    CancelResult,
    Cursor,
    EventPage,
    EventQuery,
    MoveDueResult,
    RedeliverResult,
    StoreRefused,
)
from timefuse.service.grouping import GroupAnswers, SubmissionGroups
from timefuse.service.metrics import Metrics
from timefuse.service.quotas import Admission, QuotaRefusal, SourceQuotas
from timefuse.service.store import Store
from timefuse.service.submission import (
    Accepted,
    TwinLookup,
    accepted_new,
    distinct,
    duplicate_of,
    within,
)
from timefuse.service.wakeup import DueSignal

STATISTICS_TTL_SECONDS = 1.0

# The sources a caller may act for; None: every source.
Sources = Collection[str] | None


def _narrow(query: EventQuery, sources: Sources) -> EventQuery:
    """``query`` limited to ``sources`` as well as to its own sources."""
    if sources is None:
        return query
    allowed = frozenset(sources)
    wanted = allowed if query.sources is None else allowed & frozenset(query.sources)
    return dataclasses.replace(query, sources=wanted)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An item of a batch not accepted: invalid (``errors``), refused by its source's quota
    (``quota``), or holding a value the store refused (``store_refusal``)."""

    index: int
    external_job_id: str | None
    reason: str
    errors: list[FieldError]
    quota: QuotaRefusal | None = None
    store_refusal: StoreRefused | None = None


class AmendAnswer(enum.Enum):
    AMENDED = "AMENDED"
    NOT_FOUND = "NOT_FOUND"
    NOT_PENDING = "NOT_PENDING"
    VERSION_MISMATCH = "VERSION_MISMATCH"
    DUPLICATE = "DUPLICATE"


@dataclass(frozen=True, slots=True)
class Amended:
    """How a change went, and the event as it stands (``None`` when not found)."""

    answer: AmendAnswer
    event: Event | None


# Another change may land between the read and the conditional write: read again, this many
# times, before answering as if the last write had lost to a claim.
_AMEND_TRIES = 3


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The accepted items (by index: what became of each, as for one submission) and the
    rejected ones."""

    accepted: list[tuple[int, Accepted]]
    rejected: list[Rejection]


def _refused_by_store(index: int, event: Event, refusal: StoreRefused) -> Rejection:
    reason = "the store refused a value of this event"
    return Rejection(index, event.external_job_id, reason, [], store_refusal=refusal)


def _over_quota(index: int, event: Event, refusal: QuotaRefusal) -> Rejection:
    error = FieldError("source", refusal.message)
    return Rejection(index, event.external_job_id, refusal.message, [error], refusal)


class EventService:
    def __init__(
        self,
        *,
        buffer: IngestBuffer,
        store: Store,
        registry: DeliveryRegistry,
        clock: Clock,
        metrics: Metrics,
        limits: SubmissionLimits | None = None,
        wakeup: DueSignal | None = None,
        buffered: bool = False,
        submit_timeout: float | None = None,
        quotas: SourceQuotas | None = None,
    ) -> None:
        """:param buffered: the buffer stores accepted events later (Kafka), not before it
            returns; its submissions then don't depend on the store answering.
        :param submit_timeout: the longest a submission waits to be made durable (a 503
            after that); ``None``: the buffer's own bound.
        """
        self._buffer = buffer
        self._store = store
        self._registry = registry
        self._clock = clock
        self._metrics = metrics
        self._limits = limits or SubmissionLimits()
        self._wakeup = wakeup
        self._buffered = buffered
        self._submit_timeout = submit_timeout
        self._twins = TwinLookup(store, tolerant=buffered)
        # Submissions of one event that arrive together are stored in one transaction.
        self._groups = SubmissionGroups(self._store_group, deadline=submit_timeout)
        self._quotas = quotas
        # Per set of visible sources (None: all); callers are few (one per API key).
        self._statistics: dict[frozenset[str] | None, tuple[float, dict[str, int]]] = {}

    @property
    def limits(self) -> SubmissionLimits:
        return self._limits

    @property
    def buffered(self) -> bool:
        """Accepted events reach the store later (through Kafka), not before the answer."""
        return self._buffered

    @property
    def quotas(self) -> SourceQuotas | None:
        """The sources' quotas (``None``: every source unlimited)."""
        return self._quotas

    def build(self, fields: Mapping[str, object]) -> Event:
        """Validate one submission; :class:`ValidationFailed` names every bad field."""
        now = self._clock.now()
        # The id the dedup key gives, and the first due time that id spreads.
        event = build_event(fields, event_id=None, now=now, limits=self._limits)
        reason = self._registry.check_destination(event.delivery_type, event.destination)
        if reason is not None:
            known = self._registry.get(event.delivery_type) is not None
            raise ValidationFailed(
                [FieldError("destination" if known else "delivery_type", reason)]
            )
        self._check_callbacks(event)
        return event

    def _check_callbacks(self, event: Event) -> None:
        """Callbacks are http events: their URLs pass the http type's destination check."""
        errors = []
        for name in CALLBACK_FIELDS:
            url = getattr(event, name)
            if url is None:
                continue
            reason = self._registry.check_destination(CALLBACK_DELIVERY_TYPE, url)
            if reason is not None:
                errors.append(FieldError(name, reason))
        if errors:
            raise ValidationFailed(errors)

    async def submit(self, fields: Mapping[str, object]) -> Accepted:
        """Accept one event durably; what became of it (a stored twin's state if a duplicate)."""
        try:
            event = self.build(fields)
        except ValidationFailed:
            self._metrics.rejected.inc()
            raise
        return await within(self._submit_timeout, self._groups.submit(event))

    async def _store_group(self, events: list[Event]) -> GroupAnswers:
        """Single submissions that arrived together, accepted as one batch.

        Through Kafka, events of sources whose PENDING events are counted go apart from the
        others: while the store is down that count fails, and it must fail only them, as it
        would if each had come alone (the others go on into Kafka).
        """
        items = list(enumerate(events))
        quotas = self._quotas
        if not self._buffered or quotas is None:
            parts = [items]
        else:
            counted = [(n, e) for n, e in items if quotas.counts_pending(e.source)]
            others = [(n, e) for n, e in items if not quotas.counts_pending(e.source)]
            parts = [part for part in (others, counted) if part]
        accepted: list[tuple[int, Accepted]] = []
        refused: list[tuple[int, QuotaRefusal]] = []
        failed: list[tuple[int, Exception]] = []
        for part in parts:
            try:
                result = await self._accept_batch(part, [])
            except Exception as exc:
                if len(parts) == 1:
                    raise
                failed.extend((n, exc) for n, _ in part)
                continue
            accepted.extend(result.accepted)
            for rejection in result.rejected:
                if rejection.quota is not None:
                    refused.append((rejection.index, rejection.quota))
                elif rejection.store_refusal is not None:
                    failed.append((rejection.index, rejection.store_refusal))
        accepted.sort(key=lambda item: item[0])
        return GroupAnswers(self._repeats_in_group(accepted), refused, failed)

    def _repeats_in_group(self, accepted: list[tuple[int, Accepted]]) -> list[tuple[int, Accepted]]:
        """Identical submissions of one group are requests of their own: the first made the
        event, the others repeat a stored one, as they would one group later. (Through Kafka
        none is stored yet, so none is answered a duplicate.)"""
        if self._buffered:
            return accepted
        made: set[str] = set()
        answers = []
        for index, answer in accepted:
            if not answer.duplicate and answer.id in made:
                answer = dataclasses.replace(answer, duplicate=True)
            made.add(answer.id)
            answers.append((index, answer))
        return answers

    async def submit_batch(self, items: Sequence[Mapping[str, object]]) -> BatchResult:
        """Accept the valid events of a batch together; report the invalid ones by index."""
        events: list[tuple[int, Event]] = []
        rejected: list[Rejection] = []
        for index, fields in enumerate(items):
            try:
                events.append((index, self.build(fields)))
            except ValidationFailed as exc:
                external = fields.get("external_job_id")
                rejected.append(
                    Rejection(
                        index,
                        external if isinstance(external, str) else None,
                        str(exc),
                        exc.errors,
                    )
                )
        if rejected:
            self._metrics.rejected.inc(len(rejected))
        if not events:
            rejected.sort(key=lambda rejection: rejection.index)
            return BatchResult([], rejected)
        return await within(self._submit_timeout, self._accept_batch(events, rejected))

    async def _accept_batch(
        self, events: list[tuple[int, Event]], rejected: list[Rejection]
    ) -> BatchResult:
        async with self._admit(distinct(event for _, event in events)) as admission:
            refused = {event.id: refusal for event, refusal in admission.refused}
            kept: list[tuple[int, Event]] = []
            for index, event in events:
                if event.id in refused:
                    rejected.append(_over_quota(index, event, refused[event.id]))
                else:
                    kept.append((index, event))
            accepting = distinct(event for _, event in kept)
            # Looked up once the quotas admitted them (what they refuse costs the store
            # nothing), and before the insert, so an item is a duplicate only of what was there.
            twins = await self._twins.find_many(event.id for event in accepting)
            # What is stored already is not stored (nor buffered) again.
            fresh = [event for event in accepting if event.id not in twins]
            ids, refusals = await self._accept_apart(fresh) if fresh else ({}, {})
        for index, event in kept:
            if event.id in refusals:
                rejected.append(_refused_by_store(index, event, refusals[event.id]))
        kept = [(index, event) for index, event in kept if event.id not in refusals]
        rejected.sort(key=lambda rejection: rejection.index)
        stored_elsewhere = set(ids.values()) - set(twins) - set(ids)
        for stored_id in stored_elsewhere:
            # Deduplicated against an event stored under another id (before ids came from
            # the dedup key): answer with that one, as for one submission.
            found = await self._store.get(stored_id)
            if found is not None:
                twins[stored_id] = found
        accepted = []
        for index, event in kept:
            # A found twin was not stored again; every other event has the buffer's answer.
            stored_id = event.id if event.id in twins else ids[event.id]
            twin = twins.get(stored_id)
            answer = (
                duplicate_of(twin)
                if twin is not None
                else accepted_new(stored_id, stored=not self._buffered)
            )
            accepted.append((index, answer))
        return BatchResult(accepted, rejected)

    def _admit(self, events: list[Event]) -> AbstractAsyncContextManager[Admission]:
        """The quotas' admission of ``events`` (all of them without quotas): a step of its
        own, so the submission path stays readable with or without it."""
        if self._quotas is None:
            return nullcontext(Admission(admitted=events))
        return self._quotas.admit(events)

    async def _accept_apart(
        self, events: list[Event]
    ) -> tuple[dict[str, str], dict[str, StoreRefused]]:
        """:meth:`_accept`, and when the store refuses a value of one of the events (which
        fails the transaction of all), the halves apart, down to the events at fault: their
        refusals by id, and the others accepted. The quotas admitted them all once before."""
        try:
            return await self._accept(events), {}
        except StoreRefused as exc:
            if len(events) == 1:
                return {}, {events[0].id: exc}
        half = len(events) // 2
        first, first_refused = await self._accept_apart(events[:half])
        second, second_refused = await self._accept_apart(events[half:])
        return first | second, first_refused | second_refused

    async def _accept(self, events: list[Event]) -> dict[str, str]:
        ids = await self._buffer.submit(events)
        for event in events:
            self._metrics.received.labels(event.delivery_type).inc()
            if event.delivery_window_seconds:
                offset = event.next_attempt_at - event.scheduled_at
                self._metrics.spread_offset.observe(offset.total_seconds())
        if self._wakeup is not None:
            self._wakeup.notify(min(event.next_attempt_at for event in events))
        self._statistics.clear()
        return ids

    # ``sources`` below: the sources the caller may act for. An event of another source is
    # answered as if it did not exist, so a caller can't learn which ids other sources use.

    async def get(self, event_id: str, *, sources: Sources = None) -> Event | None:
        return await self._store.get(event_id, sources=sources)

    async def find_by_external_id(
        self, external_job_id: str, *, limit: int = 100, sources: Sources = None
    ) -> list[Event]:
        """The newest ``limit`` events with this external id, the most recently created first."""
        # The store filters by source before its limit: other sources can't crowd these out.
        return await self._store.find_by_external_id(external_job_id, limit, sources=sources)

    async def cancel(self, event_id: str, *, sources: Sources = None) -> CancelResult:
        result = await self._store.cancel(event_id, sources=sources)
        if result is CancelResult.CANCELLED:
            self._metrics.cancelled.inc()
            self._statistics.clear()
        return result

    async def amend(
        self,
        event_id: str,
        changes: Mapping[str, object],
        *,
        if_version: int | None = None,
        sources: Sources = None,
    ) -> Amended:
        """Change a PENDING event in place, atomically; :class:`ValidationFailed` names every
        bad field. ``if_version``: only if the event is still at that version."""
        for _ in range(_AMEND_TRIES):
            current = await self._store.get(event_id, sources=sources)
            if current is None:
                return Amended(AmendAnswer.NOT_FOUND, None)
            if current.status is not EventStatus.PENDING:
                return Amended(AmendAnswer.NOT_PENDING, current)
            if if_version is not None and current.version != if_version:
                return Amended(AmendAnswer.VERSION_MISMATCH, current)
            now = self._clock.now()
            changed = amend_event(current, changes, now=now, limits=self._limits)
            reason = self._registry.check_destination(changed.delivery_type, changed.destination)
            if reason is not None:
                raise ValidationFailed([FieldError("destination", reason)])
            self._check_callbacks(changed)
            result = await self._store.amend(changed, basis=AmendBasis.of(current))
            if result is AmendResult.AMENDED:
                if self._wakeup is not None:
                    self._wakeup.notify(changed.next_attempt_at)
                self._statistics.clear()
                return Amended(AmendAnswer.AMENDED, changed)
            if result is AmendResult.DUPLICATE:
                return Amended(AmendAnswer.DUPLICATE, current)
            # Claimed, attempted, changed or moved since it was read: look again.
        latest = await self._store.get(event_id, sources=sources)
        if latest is None:
            return Amended(AmendAnswer.NOT_FOUND, None)
        if latest.status is not EventStatus.PENDING:
            return Amended(AmendAnswer.NOT_PENDING, latest)
        return Amended(AmendAnswer.VERSION_MISMATCH, latest)

    async def cancel_by_external_id(self, external_job_id: str, *, sources: Sources = None) -> int:
        count = await self._store.cancel_by_external_id(external_job_id, sources=sources)
        if count:
            self._metrics.cancelled.inc(count)
            self._statistics.clear()
        return count

    async def list_events(
        self, query: EventQuery, limit: int, after: Cursor | None = None, *, sources: Sources = None
    ) -> EventPage:
        """A page of the events matching ``query`` among those of ``sources``."""
        narrowed = _narrow(query, sources)
        if narrowed.sources is not None and not narrowed.sources:
            return EventPage([], None)
        return await self._store.list_events(narrowed, limit, after)

    async def attempts(
        self, event_id: str, *, sources: Sources = None
    ) -> list[AttemptRecord] | None:
        """The event's attempt history, oldest first; ``None`` when the event isn't visible."""
        if await self.get(event_id, sources=sources) is None:
            return None
        return await self._store.attempts(event_id)

    async def move_due(
        self, event_id: str, due_at: datetime, *, sources: Sources = None
    ) -> MoveDueResult:
        """Deliver a PENDING event at ``due_at`` instead of its next due time.

        ``due_at`` is bounded as a submission's ``scheduled_at`` is (:class:`ValidationFailed`
        naming ``due_at`` otherwise); a moment within the grace for the past means now. The
        event's ``scheduled_at`` stays what its sender asked for.
        """
        now = self._clock.now()
        limits = self._limits
        if due_at.tzinfo is None:
            raise ValidationFailed([FieldError("due_at", "needs a time zone or offset")])
        if due_at < now - timedelta(seconds=limits.past_grace_seconds):
            raise ValidationFailed([FieldError("due_at", "is in the past")])
        if due_at > now + timedelta(days=limits.max_horizon_days):
            raise ValidationFailed(
                [FieldError("due_at", f"is more than {limits.max_horizon_days} days ahead")]
            )
        due_at = max(due_at, now)
        result = await self._store.move_due(event_id, due_at, now, sources=sources)
        if result is MoveDueResult.MOVED and self._wakeup is not None:
            self._wakeup.notify(due_at)
        return result

    async def redeliver(self, event_id: str, *, sources: Sources = None) -> RedeliverResult:
        """Deliver a COMPLETED, FAILED or DEAD_LETTER event again, due now."""
        now = self._clock.now()
        result = await self._store.redeliver(event_id, now, sources=sources)
        if result is RedeliverResult.REDELIVERED:
            self._redelivered(now)
        return result

    async def redeliver_dead_letters(
        self,
        *,
        source: str | None = None,
        scheduled_from: datetime | None = None,
        scheduled_to: datetime | None = None,
        limit: int = 10_000,
        sources: Sources = None,
    ) -> int:
        """Redeliver up to ``limit`` DEAD_LETTER events, due now; returns how many.

        Only events of ``source`` (default: any) scheduled in ``[scheduled_from,
        scheduled_to)``, among those of ``sources``.
        """
        query = EventQuery(sources=None if source is None else [source])
        wanted = _narrow(query, sources).sources
        if wanted is not None and not wanted:
            return 0
        now = self._clock.now()
        count = await self._store.redeliver_dead_letters(
            sources=wanted,
            scheduled_from=scheduled_from,
            scheduled_to=scheduled_to,
            now=now,
            limit=limit,
        )
        if count:
            self._redelivered(now)
        return count

    def _redelivered(self, now: datetime) -> None:
        if self._wakeup is not None:
            self._wakeup.notify(now)
        self._statistics.clear()

    async def statistics(self, *, sources: Sources = None) -> dict[str, int]:
        """Events per status, cached briefly so a busy dashboard can't turn into a scan loop."""
        key = None if sources is None else frozenset(sources)
        cached = self._statistics.get(key)
        if cached is not None and time.monotonic() - cached[0] < STATISTICS_TTL_SECONDS:
            return cached[1]
        counts = await self._store.count_by_status(sources=key)
        result = {status.value: counts.get(status, 0) for status in EventStatus}
        result["TOTAL"] = sum(counts.values())
        self._statistics[key] = (time.monotonic(), result)
        return result
