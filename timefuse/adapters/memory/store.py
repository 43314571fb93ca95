"""The in-memory store: every role port on plain dicts, on the clock it is given.

It keeps nothing across processes or restarts, so it is for tests (and trying timefuse out),
where it makes the dispatcher, maintenance and the API testable in milliseconds with a fake
clock. It passes the same contract suite as the SQLite and PostgreSQL adapters, so it can't
drift from them. :class:`StoreFaults` makes calls fail or stall on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from timefuse.adapters.memory.schedules import MemorySchedules
from timefuse.domain.callback import lease_expiry_callback
from timefuse.domain.cursor import Cursor
from timefuse.domain.destination import destination_limit_keys
from timefuse.domain.event import AMENDED_COLUMN_NAMES, Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR, expire_lease
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.clock import Clock
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    AttemptRecord,
    CancelResult,
    Capabilities,
    ClaimBatch,
    ClaimRef,
    ClaimRequest,
    DestinationRule,
    DueFilter,
    EventPage,
    EventQuery,
    MoveDueResult,
    NextDue,
    OutcomeUpdate,
    RedeliverResult,
    ScheduleRecord,
    SharedBreaker,
    SharedLimits,
    StoreUnavailable,
    WorkerBeat,
    WorkerRecord,
)


class _SystemTime:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class StoreFaults:
    """Failures to inject: ``fail["claim"] = [StoreUnavailable("down")]`` makes the next
    ``claim`` raise that; ``stall["record_outcomes"] = event`` makes calls wait for it.
    ``lose_answer["record_outcomes"] = [StoreUnavailable("lost")]`` makes the next call
    write, then raise that: a commit whose answer never reached the caller (the operations
    that check it say so)."""

    fail: dict[str, list[BaseException]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    stall: dict[str, asyncio.Event] = field(default_factory=dict)
    lose_answer: dict[str, list[BaseException]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def answered(self, operation: str) -> None:
        """Called by an operation once it wrote: raises the next lost answer queued for it."""
        queued = self.lose_answer.get(operation)
        if queued:
            raise queued.pop(0)

    async def check(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        gate = self.stall.get(operation)
        if gate is not None:
            await gate.wait()
        if operation in self.down or "*" in self.down:
            raise StoreUnavailable(f"the store is down ({operation})")
        queued = self.fail.get(operation)
        if queued:
            raise queued.pop(0)


_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)

# A source's own breaker at a destination is kept under "<destination key>\x1f<source>" (see
# docs/store-adapters.md): such keys in a due filter leave that source's events to that
# destination out, and (with shared limits) an open row of one holds only them.
_SOURCE_SEPARATOR = "\x1f"


def _pair_key(event: Event) -> str:
    return f"{event.destination_key}{_SOURCE_SEPARATOR}{event.source}"


@dataclass
class _Breaker:
    opened_at: datetime
    probe_by: str | None = None
    probe_until: datetime = _LONG_AGO


@dataclass
class _Worker:
    beat: WorkerBeat
    last_seen: datetime


class MemoryStore(MemorySchedules):
    """:class:`timefuse.ports.store.StoreAdapter` in memory.

    :param clock: the store's own clock (leases, due times); the system clock by default.
    """

    def __init__(self, *, clock: Clock | None = None, shared_limits: bool = False) -> None:
        self._clock: Clock = clock or _SystemTime()
        self._shared_limits = shared_limits
        self._buckets: dict[str, tuple[float, datetime]] = {}
        self._breakers: dict[str, _Breaker] = {}
        self.faults = StoreFaults()
        self._events: dict[str, Event] = {}
        self._dedup: dict[tuple[str, str, datetime], str] = {}
        self._history: dict[str, list[AttemptRecord]] = {}
        self._claimed_at: dict[str, datetime] = {}
        self._leaders: dict[str, tuple[str, datetime]] = {}
        self._workers: dict[str, _Worker] = {}
        self._open = False
        self._watchers: list[Callable[[datetime | None], None]] = []
        self._schedules: dict[str, ScheduleRecord] = {}

    @property
    def capabilities(self) -> Capabilities:
        # With shared limits on, several dispatchers in one process share one store the way
        # several processes share a PostgreSQL one (for tests of that).
        return Capabilities(
            shared=self._shared_limits, limits_sharer=self if self._shared_limits else None
        )

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def ping(self) -> None:
        await self._enter("ping")

    async def _enter(self, operation: str) -> None:
        if not self._open:
            raise StoreUnavailable("the in-memory store is not open")
        await self.faults.check(operation)

    def _now(self) -> datetime:
        return self._clock.now()

    # -- submissions -------------------------------------------------------------------------

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        await self._enter("insert_many")
        return self._insert_now(events)

    def _insert_now(self, events: Sequence[Event]) -> dict[str, str]:
        stored: dict[str, str] = {}
        for event in events:
            if event.id in self._events:
                stored[event.id] = event.id
                continue
            key = _dedup_key(event)
            twin = self._dedup.get(key)
            if twin is not None:
                stored[event.id] = twin
                continue
            self._events[event.id] = replace(event, extra=dict(event.extra))
            self._dedup[key] = event.id
            stored[event.id] = event.id
        return stored

    # -- claims and outcomes -----------------------------------------------------------------

    def _admits(self, due: DueFilter, event: Event) -> bool:
        types = due.delivery_types
        excluded = due.excluded_destinations
        if types is not None and event.delivery_type not in types:
            return False
        if event.destination_key in excluded:
            return False
        # Sources held at a destination by their own breakers.
        return not (excluded and _pair_key(event) in excluded)

    def _due(self, due: DueFilter, now: datetime) -> list[Event]:
        found = [
            event
            for event in self._events.values()
            if event.status is EventStatus.PENDING
            and event.next_attempt_at <= now
            and self._admits(due, event)
        ]
        found.sort(key=lambda event: (event.next_attempt_at, event.id))
        return found

    async def claim(self, request: ClaimRequest) -> ClaimBatch:
        await self._enter("claim")
        now = self._now()
        taken: list[Event] = []
        per_key: dict[str, int] = {}
        allowed: dict[str, int] = {}
        probes: set[str] = set()
        pairs: dict[str, int] = {}
        for event in self._due(request.due, now):
            if len(taken) >= request.limit:
                break
            key = event.destination_key
            budget = request.budgets.get(key, request.default_budget)
            pair = ""
            if request.shared is not None:
                if key not in allowed:
                    allowed[key] = self._allowance(event, request, now)
                budget = allowed[key] if budget is None else min(budget, allowed[key])
                pair = _pair_key(event)
                if pair in self._breakers:
                    # A source held by its own breaker: its one probe, once cooled down.
                    if pair not in pairs:
                        pairs[pair] = self._probe_allowance(pair, request.shared, now)
                    if pairs[pair] <= 0:
                        continue
            count = per_key.get(key, 0)
            if budget is not None and count >= budget:
                continue
            per_key[key] = count + 1
            if pair in pairs:
                pairs[pair] -= 1
            claimed = replace(
                event,
                status=EventStatus.PROCESSING,
                locked_by=request.worker,
                lock_expires_at=now + timedelta(seconds=request.lease_seconds),
                attempts=event.attempts + 1,
                claim_count=event.claim_count + 1,
                updated_at=now,
            )
            self._events[event.id] = claimed
            self._claimed_at[event.id] = now
            taken.append(replace(claimed, extra=dict(claimed.extra)))
        if request.shared is not None:
            probes = self._spend(per_key, request, now, taken)
        return ClaimBatch(taken, now, frozenset(probes))

    def _allowance(self, event: Event, request: ClaimRequest, now: datetime) -> int:
        """How many of the destination's events this claim may take for every process."""
        shared = request.shared
        assert shared is not None
        key = event.destination_key
        if key in self._breakers:
            return self._probe_allowance(key, shared, now)
        rule = _rule_for(event, shared)
        allowed = 1 << 30
        if rule.concurrency:
            others = sum(
                1
                for e in self._events.values()
                if e.status is EventStatus.PROCESSING
                and e.destination_key == key
                and e.locked_by != request.worker
            )
            allowed = max(0, rule.concurrency - others - shared.mine.get(key, 0))
        if rule.rate > 0:
            allowed = min(allowed, int(self._tokens(key, rule, now)))
        return allowed

    def _probe_allowance(self, key: str, shared: SharedLimits, now: datetime) -> int:
        """An open breaker lets one probe through once cooled down, if none is out."""
        breaker = self._breakers[key]
        cooled = now >= breaker.opened_at + timedelta(seconds=shared.breaker_cooldown_seconds)
        free = breaker.probe_by is None or breaker.probe_until < now
        return 1 if cooled and free else 0

    def _tokens(self, key: str, rule: DestinationRule, now: datetime) -> float:
        tokens, refilled = self._buckets.get(key, (float(rule.burst), now))
        return min(float(rule.burst), tokens + rule.rate * (now - refilled).total_seconds())

    def _spend(
        self, taken: dict[str, int], request: ClaimRequest, now: datetime, events: list[Event]
    ) -> set[str]:
        shared = request.shared
        assert shared is not None
        probes: set[str] = set()
        for event in events:
            key = event.destination_key
            # The allowance of an open breaker (the destination's, the source's there) is
            # its one probe: the event probes each breaker that held it.
            for breaker_key in (key, _pair_key(event)):
                breaker = self._breakers.get(breaker_key)
                if breaker is not None:
                    breaker.probe_by = request.worker
                    breaker.probe_until = now + timedelta(seconds=request.lease_seconds)
                    probes.add(event.id)
            if key in self._breakers:
                continue
            rule = _rule_for(event, shared)
            if rule.rate > 0 and key in taken:
                self._buckets[key] = (self._tokens(key, rule, now) - taken.pop(key), now)
        return probes

    async def next_due(self, due: DueFilter) -> NextDue:
        await self._enter("next_due")
        now = self._now()
        times = [
            event.next_attempt_at
            for event in self._events.values()
            if event.status is EventStatus.PENDING and self._admits(due, event)
        ]
        return NextDue(min(times) if times else None, now)

    def _held(self, ref: ClaimRef) -> Event | None:
        event = self._events.get(ref.event_id)
        if (
            event is None
            or event.status is not EventStatus.PROCESSING
            or event.claim_count != ref.claim
            or event.locked_by != ref.worker
        ):
            return None
        return event

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        await self._enter("record_outcomes")
        now = self._now()
        applied: set[str] = set()
        notices: list[Event] = []
        for update in updates:
            event = self._held(update.ref)
            if event is None:
                continue
            if update.callback is not None:
                notices.append(update.callback)
            next_at = event.next_attempt_at
            if update.retry_delay_seconds is not None:
                next_at = now + timedelta(seconds=update.retry_delay_seconds)
            self._events[event.id] = replace(
                event,
                status=update.status,
                retry_count=update.retry_count,
                last_error=update.last_error,
                next_attempt_at=next_at,
                executed_at=update.executed_at or event.executed_at,
                locked_by=None,
                lock_expires_at=None,
                updated_at=now,
            )
            self._keep_attempt(event.id, update.attempt)
            applied.add(event.id)
        # With the outcomes, as one write: nothing awaits in between.
        self._insert_now(notices)
        self.faults.answered("record_outcomes")
        return frozenset(applied)

    def _keep_attempt(self, event_id: str, record: AttemptRecord) -> None:
        history = self._history.setdefault(event_id, [])
        history.append(replace(record, sequence=len(history) + 1))

    async def hand_back(self, refs: Sequence[ClaimRef], delay_seconds: float) -> int:
        await self._enter("hand_back")
        now = self._now()
        count = 0
        for ref in refs:
            event = self._held(ref)
            if event is None:
                continue
            due = now + timedelta(seconds=delay_seconds)
            self._events[event.id] = replace(
                event,
                status=EventStatus.PENDING,
                # Handed back for now: it keeps its place among the due events.
                next_attempt_at=min(event.next_attempt_at, due) if not delay_seconds else due,
                attempts=max(event.attempts - 1, 0),
                locked_by=None,
                lock_expires_at=None,
                updated_at=now,
            )
            count += 1
        self._notify(now)
        return count

    async def extend_leases(self, refs: Sequence[ClaimRef], lease_seconds: float) -> int:
        await self._enter("extend_leases")
        now = self._now()
        count = 0
        for ref in refs:
            event = self._held(ref)
            if event is not None:
                expires = now + timedelta(seconds=lease_seconds)
                self._events[event.id] = replace(event, lock_expires_at=expires)
                count += 1
        return count

    # -- coordination ------------------------------------------------------------------------

    async def acquire_leadership(self, role: str, holder: str, ttl_seconds: float) -> bool:
        await self._enter("acquire_leadership")
        now = self._now()
        current = self._leaders.get(role)
        if current is None or current[0] == holder or current[1] < now:
            self._leaders[role] = (holder, now + timedelta(seconds=ttl_seconds))
            return True
        return False

    async def release_leadership(self, role: str, holder: str) -> None:
        await self._enter("release_leadership")
        current = self._leaders.get(role)
        if current is not None and current[0] == holder:
            del self._leaders[role]

    async def heartbeat(self, beat: WorkerBeat) -> None:
        await self._enter("heartbeat")
        self._workers[beat.worker] = _Worker(beat, self._now())

    async def workers(self) -> list[WorkerRecord]:
        await self._enter("workers")
        now = self._now()
        found = [
            WorkerRecord(
                worker=w.beat.worker,
                roles=w.beat.roles,
                started_at=w.beat.started_at,
                last_seen=w.last_seen,
                silent_seconds=(now - w.last_seen).total_seconds(),
                in_flight=w.beat.in_flight,
            )
            for w in self._workers.values()
        ]
        found.sort(key=lambda record: record.last_seen, reverse=True)
        return found

    async def forget_workers(self, silent_seconds: float) -> int:
        await self._enter("forget_workers")
        limit = self._now() - timedelta(seconds=silent_seconds)
        gone = [name for name, w in self._workers.items() if w.last_seen < limit]
        for name in gone:
            del self._workers[name]
        return len(gone)

    async def publish_breaker(self, key: str, *, open: bool) -> None:
        await self._enter("publish_breaker")
        if open:
            self._breakers[key] = _Breaker(self._now())
        else:
            self._breakers.pop(key, None)

    async def open_breakers(self) -> list[SharedBreaker]:
        await self._enter("open_breakers")
        now = self._now()
        return [
            SharedBreaker(key, (now - b.opened_at).total_seconds(), b.probe_by)
            for key, b in sorted(self._breakers.items())
        ]

    async def recover_expired_leases(
        self, dead_workers: Collection[str] = (), *, silent_seconds: float | None = None
    ) -> int:
        await self._enter("recover_expired_leases")
        now = self._now()
        dead = set(dead_workers)
        if silent_seconds is not None:
            # Judged now, with the claims (no await in between): one heard of since is alive.
            silent_before = now - timedelta(seconds=silent_seconds)
            dead = {
                name
                for name in dead
                if (worker := self._workers.get(name)) is not None
                and worker.last_seen < silent_before
            }
        count = 0
        for event in list(self._events.values()):
            if event.status is not EventStatus.PROCESSING:
                continue
            expired = event.lock_expires_at is not None and event.lock_expires_at < now
            if not expired and event.locked_by not in dead:
                continue
            expiry = expire_lease(
                attempts=event.attempts,
                retry_count=event.retry_count,
                max_retries=event.max_retries,
                due_at=event.next_attempt_at,
                now=now,
            )
            started = self._claimed_at.get(event.id, event.updated_at)
            self._keep_attempt(
                event.id,
                AttemptRecord(
                    attempt=event.attempts,
                    started_at=started,
                    duration_ms=(now - started).total_seconds() * 1000.0,
                    outcome=OutcomeKind.RETRIABLE,
                    status_code=None,
                    error=LEASE_EXPIRED_ERROR,
                    worker=event.locked_by or "",
                ),
            )
            recovered = replace(
                event,
                status=expiry.status,
                retry_count=expiry.retry_count,
                next_attempt_at=expiry.next_attempt_at or event.next_attempt_at,
                last_error=LEASE_EXPIRED_ERROR,
                locked_by=None,
                lock_expires_at=None,
                updated_at=now,
            )
            self._events[event.id] = recovered
            notice = lease_expiry_callback(recovered, now=now)
            if notice is not None:
                self._insert_now([notice])
            count += 1
        if count:
            self._notify(None)
        return count

    # -- queries -----------------------------------------------------------------------------

    def _visible(self, event_id: str, sources: frozenset[str] | None) -> Event | None:
        event = self._events.get(event_id)
        if event is None or (sources is not None and event.source not in sources):
            return None
        return event

    async def get(self, event_id: str, *, sources: frozenset[str] | None) -> Event | None:
        await self._enter("get")
        event = self._visible(event_id, sources)
        return None if event is None else replace(event, extra=dict(event.extra))

    async def get_many(self, event_ids: Sequence[str]) -> list[Event]:
        await self._enter("get_many")
        found = (self._events.get(event_id) for event_id in event_ids)
        return [replace(event, extra=dict(event.extra)) for event in found if event is not None]

    async def find_by_external_id(
        self, external_job_id: str, limit: int, *, sources: frozenset[str] | None
    ) -> list[Event]:
        await self._enter("find_by_external_id")
        found = [
            event
            for event in self._events.values()
            if event.external_job_id == external_job_id
            and (sources is None or event.source in sources)
        ]
        found.sort(key=lambda event: (event.created_at, event.id), reverse=True)
        return found[:limit]

    async def list_events(self, query: EventQuery, limit: int, after: Cursor | None) -> EventPage:
        await self._enter("list_events")
        candidates = sorted(
            (event for event in self._events.values() if _is_candidate(event, query, after)),
            key=_position,
            reverse=query.descending,
        )
        window = query.examine_at_most
        examined = candidates if window is None else candidates[:window]
        found = [event for event in examined if _matches(event, query)]
        page = [replace(event, extra=dict(event.extra)) for event in found[:limit]]
        if len(found) > limit:
            return EventPage(page, Cursor(page[-1].scheduled_at, page[-1].id))
        if window is not None and len(examined) == window:
            last = examined[-1]
            return EventPage(page, Cursor(last.scheduled_at, last.id))
        return EventPage(page, None)

    async def count_by_status(self, sources: frozenset[str] | None) -> Mapping[EventStatus, int]:
        await self._enter("count_by_status")
        counts = dict.fromkeys(EventStatus, 0)
        for event in self._events.values():
            if sources is None or event.source in sources:
                counts[event.status] += 1
        return counts

    async def pending_by_source(self, sources: frozenset[str]) -> Mapping[str, int]:
        await self._enter("pending_by_source")
        counts: dict[str, int] = {}
        for event in self._events.values():
            if event.source in sources and event.status is EventStatus.PENDING:
                counts[event.source] = counts.get(event.source, 0) + 1
        return counts

    async def count_due_by_type(self) -> Mapping[str, int]:
        await self._enter("count_due_by_type")
        now = self._now()
        counts: dict[str, int] = {}
        for event in self._events.values():
            if event.status is EventStatus.PENDING and event.next_attempt_at <= now:
                counts[event.delivery_type] = counts.get(event.delivery_type, 0) + 1
        return counts

    async def attempts(self, event_id: str) -> list[AttemptRecord]:
        await self._enter("attempts")
        return list(self._history.get(event_id, []))

    # -- operator actions --------------------------------------------------------------------

    async def amend(
        self, event: Event, *, basis: AmendBasis, when: frozenset[EventStatus]
    ) -> AmendResult:
        await self._enter("amend")
        stored = self._events.get(event.id)
        if stored is None or stored.status not in when or AmendBasis.of(stored) != basis:
            return AmendResult.NOT_AMENDABLE
        key = _dedup_key(event)
        twin = self._dedup.get(key)
        if twin is not None and twin != event.id:
            return AmendResult.DUPLICATE
        changes = {name: getattr(event, name) for name in AMENDED_COLUMN_NAMES}
        self._dedup.pop(_dedup_key(stored), None)
        self._dedup[key] = event.id
        self._events[event.id] = replace(stored, **changes)
        self._notify(event.next_attempt_at)
        return AmendResult.AMENDED

    async def cancel(
        self, event_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> CancelResult:
        await self._enter("cancel")
        event = self._visible(event_id, sources)
        if event is None:
            return CancelResult.NOT_FOUND
        if event.status not in when:
            return CancelResult.NOT_PENDING
        self._set_status(event, EventStatus.CANCELLED)
        return CancelResult.CANCELLED

    def _set_status(self, event: Event, status: EventStatus) -> None:
        self._events[event.id] = replace(event, status=status, updated_at=self._now())

    async def cancel_by_external_id(
        self, external_job_id: str, *, sources: frozenset[str] | None, when: frozenset[EventStatus]
    ) -> int:
        await self._enter("cancel_by_external_id")
        count = 0
        for event in list(self._events.values()):
            if (
                event.external_job_id == external_job_id
                and event.status in when
                and (sources is None or event.source in sources)
            ):
                self._set_status(event, EventStatus.CANCELLED)
                count += 1
        return count

    async def move_due(
        self,
        event_id: str,
        due_at: datetime,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> MoveDueResult:
        await self._enter("move_due")
        event = self._visible(event_id, sources)
        if event is None:
            return MoveDueResult.NOT_FOUND
        if event.status not in when:
            return MoveDueResult.NOT_PENDING
        self._events[event.id] = replace(event, next_attempt_at=due_at, updated_at=now)
        self._notify(due_at)
        return MoveDueResult.MOVED

    def _redeliver(self, event: Event, now: datetime) -> None:
        self._events[event.id] = replace(
            event,
            status=EventStatus.PENDING,
            next_attempt_at=now,
            attempts=0,
            retry_count=0,
            locked_by=None,
            lock_expires_at=None,
            updated_at=now,
        )

    async def redeliver(
        self,
        event_id: str,
        now: datetime,
        *,
        sources: frozenset[str] | None,
        when: frozenset[EventStatus],
    ) -> RedeliverResult:
        await self._enter("redeliver")
        event = self._visible(event_id, sources)
        if event is None:
            return RedeliverResult.NOT_FOUND
        if event.status not in when:
            return RedeliverResult.NOT_REDELIVERABLE
        self._redeliver(event, now)
        self._notify(now)
        return RedeliverResult.REDELIVERED

    async def redeliver_matching(
        self,
        *,
        status: EventStatus,
        sources: frozenset[str] | None,
        scheduled: tuple[datetime | None, datetime | None],
        now: datetime,
        limit: int,
    ) -> int:
        await self._enter("redeliver_matching")
        query = EventQuery(status, sources, scheduled[0], scheduled[1])
        chosen = sorted(
            (
                event
                for event in self._events.values()
                if _is_candidate(event, query, None) and _matches(event, query)
            ),
            key=_position,
        )[:limit]
        for event in chosen:
            self._redeliver(event, now)
        if chosen:
            self._notify(now)
        return len(chosen)

    # -- retention ---------------------------------------------------------------------------

    async def delete_finished_before(
        self,
        cutoff: datetime,
        statuses: frozenset[EventStatus],
        batch_size: int,
        *,
        wait: bool = False,  # one writer: no other pass to wait for
    ) -> int:
        await self._enter("delete_finished_before")
        gone = [
            event
            for event in self._events.values()
            if event.status in statuses and event.updated_at < cutoff
        ]
        for event in gone:
            del self._events[event.id]
            self._dedup.pop(_dedup_key(event), None)
            self._history.pop(event.id, None)
            self._claimed_at.pop(event.id, None)
        return len(gone)

    # -- for tests ---------------------------------------------------------------------------

    def watch(self, notify: Callable[[datetime | None], None]) -> None:
        """Have ``notify`` called when events become due by a hand-back or a redelivery."""
        self._watchers.append(notify)

    def _notify(self, due_at: datetime | None) -> None:
        for notify in self._watchers:
            notify(due_at)

    def snapshot(self) -> dict[str, Event]:
        """Every stored event by id (copies), for assertions."""
        return {event_id: replace(event) for event_id, event in self._events.items()}


def _rule_for(event: Event, shared: SharedLimits) -> DestinationRule:
    for key in destination_limit_keys(event.delivery_type, event.destination):
        rule = shared.overrides.get(key)
        if rule is not None:
            return rule
    return shared.type_defaults.get(event.delivery_type, shared.default)


def _dedup_key(event: Event) -> tuple[str, str, datetime]:
    return (event.external_job_id, event.source, event.scheduled_at.astimezone(UTC))


def _position(event: Event) -> tuple[datetime, Any]:
    # Code point order of the id, as the SQL stores compare it (COLLATE "C", BINARY).
    return (event.scheduled_at, event.id.encode("utf-32-be"))


def _is_candidate(event: Event, query: EventQuery, after: Cursor | None) -> bool:
    # What the SQL stores find through an index: status, the scheduled window, the cursor.
    if query.status is not None and event.status is not query.status:
        return False
    if query.scheduled_from is not None and event.scheduled_at < query.scheduled_from:
        return False
    if query.scheduled_to is not None and event.scheduled_at >= query.scheduled_to:
        return False
    if after is None:
        return True
    position = (after.scheduled_at, after.event_id.encode("utf-32-be"))
    return _position(event) < position if query.descending else _position(event) > position


def _matches(event: Event, query: EventQuery) -> bool:
    # What they check on each candidate.
    key = event.destination_key
    return (
        (query.sources is None or event.source in query.sources)
        and (query.delivery_type is None or event.delivery_type == query.delivery_type)
        and (query.destination_key is None or key == query.destination_key)
        and (query.destination_host is None or _on_host(key, query.destination_host))
        and (
            query.destination_prefix is None
            or event.destination.startswith(query.destination_prefix)
        )
    )


def _on_host(key: str, host: str) -> bool:
    # "host:port": the host, a colon, then the port's digits.
    return key.startswith(host + ":") and key[len(host) + 1 : len(host) + 2] in _DIGITS


_DIGITS = frozenset("0123456789")
