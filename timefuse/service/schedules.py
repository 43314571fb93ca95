"""Use cases the API offers for schedules: declare, change, pause, resume, trigger, list, delete.

A schedule's event template is checked exactly as a submitted event is (the same rules and the
delivery type's own check of its destination), as if it were submitted now; its errors are
named ``event.<field>``. Every bad field of a request is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event, new_event_id
from timefuse.domain.schedule import (
    Schedule,
    ScheduleLimits,
    build_schedule,
    next_instant,
    occurrence_external_job_id,
    pause,
    resume,
    upcoming,
    update_schedule,
)
from timefuse.domain.schedule_fields import parse_schedule_fields
from timefuse.domain.validation import FieldError, SubmissionLimits, ValidationFailed
from timefuse.ports.clock import Clock
from timefuse.ports.recurrence import Recurrence
from timefuse.ports.store import (
    EventPage,
    SchedulePage,
    SchedulePosition,
    ScheduleQuery,
    ScheduleRecord,
)
from timefuse.service.planner import ScheduleMetrics, occurrence_event
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal

# The caller's sources (None: every source).
Sources = Collection[str] | None
# Checks one submission and builds its event (EventService.build).
BuildEvent = Callable[[Mapping[str, object]], Event]

# Set for each occurrence by the schedule: a template can't hold them.
SET_BY_SCHEDULE = ("external_job_id", "scheduled_at", "source")
# The fields a declaration (POST) states; one it leaves out takes its default.
DECLARED = (
    "key", "source", "cron", "every_seconds", "timezone", "start_at", "end_at", "max_runs",
    "missed_runs",
)  # fmt: skip
CHANGEABLE = (*DECLARED, "paused")
# Writes that lose a race with the planner (it writes every due schedule) are tried again.
_WRITE_ATTEMPTS = 8


class ForbiddenSource(Exception):
    """The caller may not act for the schedule's source."""

    def __init__(self, source: str) -> None:
        super().__init__(f"this key may not manage schedules of source {source[:100]!r}")
        self.source = source


class ScheduleBusy(Exception):
    """The schedule kept changing under the request; nothing was written."""


class NotAnObject:
    """Stands for an ``event`` that is not a JSON object."""


NOT_AN_OBJECT = NotAnObject()


@dataclass(frozen=True, slots=True)
class Declared:
    record: ScheduleRecord
    created: bool
    changed: bool


def _visible(source: str, sources: Sources) -> bool:
    return sources is None or source in sources


class ScheduleService:
    def __init__(
        self,
        *,
        store: Store,
        recurrence: Recurrence,
        clock: Clock,
        build_event: BuildEvent,
        submission_limits: SubmissionLimits,
        metrics: ScheduleMetrics,
        limits: ScheduleLimits | None = None,
        wakeup: DueSignal | None = None,
    ) -> None:
        self._store = store
        self._recurrence = recurrence
        self._clock = clock
        self._build_event = build_event
        self._submission_limits = submission_limits
        self._metrics = metrics
        self._limits = limits or ScheduleLimits()
        self._wakeup = wakeup

    # -- checks ------------------------------------------------------------------------------

    def check_template(
        self, event: object, *, key: str, source: str
    ) -> tuple[dict[str, object], list[FieldError]]:
        """The template ``event`` gives (its fields, those without a value left out), and the
        errors of each bad field, named ``event.<field>``."""
        if event is None:
            return {}, [FieldError("event", "is required: the event each occurrence delivers")]
        if not isinstance(event, Mapping):
            return {}, [FieldError("event", "must be a JSON object")]
        errors = [
            FieldError(f"event.{name}", "is set by the schedule for each occurrence")
            for name in SET_BY_SCHEDULE
            if event.get(name) is not None
        ]
        template = {
            name: value
            for name, value in event.items()
            if value is not None and name not in SET_BY_SCHEDULE
        }
        now = self._clock.now()
        trial = {
            **template,
            "external_job_id": occurrence_external_job_id(key or "key", now),
            "source": source or "source",
            "scheduled_at": now.isoformat(),
        }
        try:
            self._build_event(trial)
        except ValidationFailed as exc:
            errors += [
                FieldError(f"event.{error.field}", error.message)
                for error in exc.errors
                if error.field not in SET_BY_SCHEDULE
            ]
        return template, errors

    def _checked(
        self, fields: Mapping[str, object], event: object
    ) -> tuple[dict[str, object], str, str]:
        """The template, key and source of a declaration; :class:`ValidationFailed` naming
        every bad field (the schedule's and the template's) otherwise."""
        errors: list[FieldError] = []
        try:
            parse_schedule_fields(fields, check_cron=self._recurrence.check, limits=self._limits)
        except ValidationFailed as exc:
            errors += exc.errors
        key, source = fields.get("key"), fields.get("source")
        # A bad key or source stands aside for the template's check: as the occurrence's
        # external_job_id and source it would fail that check and hide the template's errors.
        bad = {error.field for error in errors}
        key_text = key if isinstance(key, str) and "key" not in bad else ""
        source_text = source if isinstance(source, str) and "source" not in bad else ""
        template, template_errors = self.check_template(event, key=key_text, source=source_text)
        if errors or template_errors:
            raise ValidationFailed(errors + template_errors)
        return template, key_text, source_text

    # -- writes ------------------------------------------------------------------------------

    async def declare(
        self, fields: Mapping[str, object], event: object, *, sources: Sources = None
    ) -> Declared:
        """Create the schedule of ``(source, key)``, or replace the one declared before.

        A field left out takes its default, except ``paused``: a declaration that doesn't
        mention it leaves a paused schedule paused.
        """
        source = fields.get("source")
        if isinstance(source, str) and not _visible(source, sources):
            raise ForbiddenSource(source)
        template, key, source_text = self._checked(fields, event)
        for _ in range(_WRITE_ATTEMPTS):
            now = self._clock.now()
            existing = await self._store.find_schedule(source_text, key)
            if existing is None:
                schedule = build_schedule(
                    fields,
                    schedule_id=new_event_id(now),
                    template=template,
                    now=now,
                    check_cron=self._recurrence.check,
                    limits=self._limits,
                )
                record = self._record(schedule, 1, now)
                if await self._store.save_schedule(record, expected_version=None):
                    return Declared(record, created=True, changed=True)
                continue  # declared by someone else meanwhile: replace theirs
            changes: dict[str, object] = {name: fields.get(name) for name in DECLARED}
            if fields.get("paused") is not None:
                changes["paused"] = fields["paused"]
            updated = update_schedule(
                existing.schedule,
                changes,
                now=now,
                check_cron=self._recurrence.check,
                limits=self._limits,
                template=template,
            )
            if updated == existing.schedule:
                return Declared(existing, created=False, changed=False)
            record = self._record(updated, existing.version + 1, now)
            if await self._store.save_schedule(record, expected_version=existing.version):
                return Declared(record, created=False, changed=True)
        raise ScheduleBusy("the schedule kept changing; try again")

    async def update(
        self,
        schedule_id: str,
        changes: Mapping[str, object],
        event: object = None,
        *,
        sources: Sources = None,
    ) -> ScheduleRecord | None:
        """Apply ``changes`` (a field given as ``None`` is cleared) and, when given, a new
        event template; ``None`` if there is no such schedule among ``sources``."""
        template: dict[str, object] | None = None
        template_errors: list[FieldError] = []
        for _ in range(_WRITE_ATTEMPTS):
            existing = await self._store.get_schedule(schedule_id, sources=sources)
            if existing is None:
                return None
            schedule = existing.schedule
            if event is not None and template is None:
                template, template_errors = self.check_template(
                    event, key=schedule.key, source=schedule.source
                )
            now = self._clock.now()
            try:
                updated = update_schedule(
                    schedule,
                    changes,
                    now=now,
                    check_cron=self._recurrence.check,
                    limits=self._limits,
                    template=template,
                )
            except ValidationFailed as exc:
                raise ValidationFailed(exc.errors + template_errors) from None
            if template_errors:
                raise ValidationFailed(template_errors)
            if updated == schedule:
                return existing
            record = self._record(updated, existing.version + 1, now)
            if await self._store.save_schedule(record, expected_version=existing.version):
                return record
        raise ScheduleBusy("the schedule kept changing; try again")

    async def pause(self, schedule_id: str, *, sources: Sources = None) -> ScheduleRecord | None:
        return await self._change(schedule_id, pause, sources)

    async def resume(self, schedule_id: str, *, sources: Sources = None) -> ScheduleRecord | None:
        """Running again; instants that passed while paused follow its missed-runs policy."""
        return await self._change(schedule_id, resume, sources)

    async def _change(
        self, schedule_id: str, change: Callable[[Schedule], Schedule], sources: Sources
    ) -> ScheduleRecord | None:
        for _ in range(_WRITE_ATTEMPTS):
            existing = await self._store.get_schedule(schedule_id, sources=sources)
            if existing is None:
                return None
            updated = change(existing.schedule)
            if updated == existing.schedule:
                return existing
            record = self._record(updated, existing.version + 1, self._clock.now())
            if await self._store.save_schedule(record, expected_version=existing.version):
                return record
        raise ScheduleBusy("the schedule kept changing; try again")

    async def delete(self, schedule_id: str, *, sources: Sources = None) -> bool:
        return await self._store.delete_schedule(schedule_id, sources=sources)

    async def trigger(self, schedule_id: str, *, sources: Sources = None) -> Event | None:
        """One extra occurrence, due now. It is not counted against the schedule (its runs,
        ``max_runs``) and moves none of its instants; a paused or ended schedule may be
        triggered too. ``None`` if there is no such schedule among ``sources``."""
        record = await self._store.get_schedule(schedule_id, sources=sources)
        if record is None:
            return None
        now = self._clock.now()
        event = occurrence_event(record.schedule, now, now, self._submission_limits, triggered=True)
        stored = await self._store.insert_many([event])
        self._metrics.created.labels("trigger").inc()
        if self._wakeup is not None:
            self._wakeup.notify(event.next_attempt_at)
        found = await self._store.get(stored[event.id])
        return found if found is not None else event

    def _record(self, schedule: Schedule, version: int, now: datetime) -> ScheduleRecord:
        return ScheduleRecord(
            schedule, next_instant(schedule, self._recurrence.next_after), version, now
        )

    # -- reads -------------------------------------------------------------------------------

    async def get(self, schedule_id: str, *, sources: Sources = None) -> ScheduleRecord | None:
        return await self._store.get_schedule(schedule_id, sources=sources)

    async def find(
        self, source: str, key: str, *, sources: Sources = None
    ) -> ScheduleRecord | None:
        if not _visible(source, sources):
            return None
        return await self._store.find_schedule(source, key)

    def next_runs(self, record: ScheduleRecord, count: int) -> list[datetime]:
        """The next ``count`` instants from now (``end_at`` and ``max_runs`` apply, a pause
        does not: a preview); none once it is over."""
        if record.next_run_at is None:
            return []
        now = self._clock.now()
        return upcoming(record.schedule, now, self._recurrence.next_after, count)

    async def list(
        self,
        query: ScheduleQuery,
        limit: int,
        after: SchedulePosition | None = None,
        *,
        sources: Sources = None,
    ) -> SchedulePage:
        if sources is not None:
            allowed = frozenset(sources)
            wanted = allowed if query.sources is None else allowed & query.sources
            query = ScheduleQuery(sources=wanted, state=query.state)
        return await self._store.list_schedules(query, limit, after)

    async def occurrences(
        self,
        schedule_id: str,
        limit: int,
        before: Cursor | None = None,
        *,
        sources: Sources = None,
    ) -> EventPage | None:
        """The schedule's occurrences, newest first; ``None`` if it isn't visible."""
        if await self._store.get_schedule(schedule_id, sources=sources) is None:
            return None
        return await self._store.schedule_occurrences(schedule_id, limit, before)
