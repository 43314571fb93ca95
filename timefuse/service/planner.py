"""The planner: turns the instants of due schedules into occurrence events, a batch at a time.

It runs every second in the maintenance leader. Each tick asks the store for the running
schedules due by ``now + lookahead`` (an index on the next instant: never a scan of every
schedule), plans each with :func:`timefuse.domain.schedule.plan_occurrences`, and writes each
plan with its occurrences in one transaction, under the version the schedule was read at.
Every occurrence's id is derived from (schedule, instant): should two planners run at once (a
leader that lost its lease and doesn't know it yet), or one crash after its commit and plan
again, the store keeps each occurrence once.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from timefuse.domain.event import Event
from timefuse.domain.schedule import (
    Schedule,
    ScheduleState,
    occurrence,
    plan_occurrences,
)
from timefuse.domain.validation import SubmissionLimits, ValidationFailed, build_event
from timefuse.ports.clock import Clock
from timefuse.ports.recurrence import Recurrence
from timefuse.ports.store import Materialisation, ScheduleRecord
from timefuse.ports.store.schedules import SCHEDULE_ID_EXTRA, TRIGGERED_EXTRA
from timefuse.service.metrics import LATENCY_BUCKETS
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal

log = structlog.get_logger("timefuse.schedules")


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """How the planner works; the defaults suit every deployment measured so far.

    :param lookahead_seconds: occurrences are created this long before their instant, so the
        dispatcher has them (and is woken for them) before they are due. It also bounds how
        many schedules firing at one instant are created on time: one planner creates some
        3,000 to 5,000 occurrences per second (see docs/schedules.md).
    :param grace_seconds: an instant due longer ago than this was missed (the planner was down
        or the schedule paused) and follows the schedule's ``missed_runs`` policy.
    :param catch_up_cap: the most occurrences the ``all`` policy creates for missed instants.
    :param batch_size: schedules read, planned and written per transaction.
    :param plan_limit: the most occurrences one plan of one schedule creates; the rest come
        at the next tick.
    """

    lookahead_seconds: float = 10.0
    grace_seconds: float = 60.0
    catch_up_cap: int = 100
    batch_size: int = 500
    plan_limit: int = 1000
    gauges_every_seconds: float = 15.0


class ScheduleMetrics:
    """The schedules' series, on the process's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.by_state = Gauge(
            "timefuse_schedules",
            "Schedules per state (refreshed periodically by the maintenance leader).",
            ["state"],
            registry=registry,
        )
        self.created = Counter(
            "timefuse_schedule_occurrences_created",
            "Occurrence events created, by kind (on_time, catch_up: a missed instant kept by "
            "the schedule's policy, trigger).",
            ["kind"],
            registry=registry,
        )
        self.lag = Histogram(
            "timefuse_schedule_materialisation_lag_seconds",
            "How late a due schedule was planned: now minus (its next instant minus the "
            "lookahead); 0 when on time.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.conflicts = Counter(
            "timefuse_schedule_plan_conflicts",
            "Plans not written because the schedule changed since it was read (an update, "
            "or another planner); it is planned again at the next tick.",
            registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, ScheduleMetrics] = (
    weakref.WeakKeyDictionary()
)


def schedule_metrics(registry: CollectorRegistry) -> ScheduleMetrics:
    """The schedules' series on ``registry``, made once per registry (a registry refuses a
    series registered twice, and a process may wire several services onto one)."""
    found = _METRICS.get(registry)
    if found is None:
        found = _METRICS[registry] = ScheduleMetrics(registry)
    return found


def occurrence_event(
    schedule: Schedule,
    instant: datetime,
    now: datetime,
    limits: SubmissionLimits,
    *,
    triggered: bool = False,
) -> Event:
    """The event of ``schedule``'s occurrence at ``instant``, built by the submission rules.

    The template was checked as a submission when the schedule was declared; it is built
    here as if submitted at its own instant, so that every field the rules derive (the due
    time within a delivery window, the destination key, ...) is derived the same way.
    """
    found = occurrence(schedule, instant)
    fields = {
        **schedule.template,
        "external_job_id": found.external_job_id,
        "source": found.source,
        "scheduled_at": found.scheduled_at.isoformat(),
    }
    event = build_event(fields, event_id=found.event_id, now=found.scheduled_at, limits=limits)
    extra: dict[str, object] = {SCHEDULE_ID_EXTRA: schedule.id}
    if triggered:
        extra[TRIGGERED_EXTRA] = True
    return replace(event, created_at=now, updated_at=now, extra=extra)


class SchedulePlanner:
    def __init__(
        self,
        *,
        store: Store,
        recurrence: Recurrence,
        clock: Clock,
        limits: SubmissionLimits,
        metrics: ScheduleMetrics,
        settings: SchedulerSettings | None = None,
        wakeup: DueSignal | None = None,
    ) -> None:
        self._store = store
        self._recurrence = recurrence
        self._clock = clock
        self._limits = limits
        self._metrics = metrics
        self._settings = settings or SchedulerSettings()
        self._wakeup = wakeup
        self._gauges_at: datetime | None = None

    @property
    def settings(self) -> SchedulerSettings:
        return self._settings

    async def run_once(self) -> int:
        """One tick: plan every schedule due now (a batch at a time); occurrences created."""
        now = self._clock.now()
        until = now + timedelta(seconds=self._settings.lookahead_seconds)
        size = self._settings.batch_size
        created = 0
        seen: set[str] = set()
        while True:
            due = await self._store.due_schedules(until, size)
            # A schedule still due after its plan (it reached plan_limit, or its plan went
            # stale) waits for the next tick, so the tick ends.
            fresh = [record for record in due if record.id not in seen]
            if not fresh:
                break
            seen.update(record.id for record in fresh)
            created += await self._materialise(fresh, now)
            if len(due) < size:
                break
        await self._refresh_gauges(now)
        return created

    async def _materialise(self, records: list[ScheduleRecord], now: datetime) -> int:
        plans: list[Materialisation] = []
        kinds: dict[str, tuple[int, int]] = {}
        # Planned as of the tick's start (one instant for every schedule of the tick); the
        # events are stamped with the time this batch was built, a tick of many batches
        # creating its later ones later.
        built = self._clock.now()
        for record in records:
            planned = self._plan(record, now, built)
            plans.append(planned[0])
            kinds[record.id] = planned[1]
            if record.next_run_at is not None:
                due_at = record.next_run_at - timedelta(seconds=self._settings.lookahead_seconds)
                self._metrics.lag.observe(max(0.0, (now - due_at).total_seconds()))
        applied = set(await self._store.materialise(plans))
        if len(applied) < len(plans):
            self._metrics.conflicts.inc(len(plans) - len(applied))
        events = [event for plan in plans if plan.record.id in applied for event in plan.events]
        for schedule_id in applied:
            catch_up, on_time = kinds[schedule_id]
            self._metrics.created.labels("catch_up").inc(catch_up)
            self._metrics.created.labels("on_time").inc(on_time)
        if events and self._wakeup is not None:
            self._wakeup.notify(min(event.next_attempt_at for event in events))
        return len(events)

    def _plan(
        self, record: ScheduleRecord, now: datetime, built: datetime
    ) -> tuple[Materialisation, tuple[int, int]]:
        settings = self._settings
        plan = plan_occurrences(
            record.schedule,
            now,
            self._recurrence.next_after,
            lookahead=timedelta(seconds=settings.lookahead_seconds),
            grace=timedelta(seconds=settings.grace_seconds),
            catch_up_cap=settings.catch_up_cap,
            limit=settings.plan_limit,
        )
        try:
            events = [
                occurrence_event(plan.schedule, instant, built, self._limits)
                for instant in plan.instants
            ]
        except ValidationFailed as exc:
            # Only if the submission rules became stricter since the schedule was declared
            # (a smaller payload limit, say): its instants pass, and say why.
            log.error(
                "a schedule's event template no longer passes the submission rules; its "
                "occurrences are skipped until it is updated",
                schedule=record.id,
                key=record.schedule.key,
                source=record.schedule.source,
                error=str(exc),
                skipped=len(plan.instants),
            )
            events = []
        after = ScheduleRecord(plan.schedule, plan.next_instant, record.version + 1, built)
        counts = (len(plan.catch_up), len(plan.on_time)) if events else (0, 0)
        return Materialisation(after, record.version, events), counts

    async def _refresh_gauges(self, now: datetime) -> None:
        every = timedelta(seconds=self._settings.gauges_every_seconds)
        if self._gauges_at is not None and now - self._gauges_at < every:
            return
        self._gauges_at = now
        counts: Mapping[ScheduleState, int] = await self._store.count_schedules()
        for state in ScheduleState:
            self._metrics.by_state.labels(state.value).set(counts.get(state, 0))
