"""Recurring schedules: which instants a schedule fires at, and the events they become.

A schedule fires by a cron expression in an IANA time zone, or every N seconds. Each instant it
fires at becomes one occurrence: an ordinary event whose id is derived from (schedule id,
instant), so however many processes plan the same schedule, the store keeps one event per
instant. Cron arithmetic comes in as a function (the recurrence port's ``next_after`` and
``check``); time comes in as an argument.

Planning (:func:`plan_occurrences`) splits the instants still to run into *missed* ones (due more
than ``grace`` before now: the planner was down, or the schedule paused) and *on time* ones (due
from then until ``now + lookahead``). On-time instants all run. Missed ones follow the
schedule's policy: ``skip`` runs none of them, ``once`` the latest, ``all`` every one, up to a
cap (the latest ones).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from timefuse.domain.schedule_fields import (
    CheckCron,
    MissedRuns,
    ScheduleFields,
    ScheduleLimits,
    parse_schedule_fields,
)
from timefuse.domain.validation import FieldError, ValidationFailed

__all__ = ["CheckCron", "MissedRuns", "ScheduleLimits", "ScheduleState"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
DEFAULT_GRACE = timedelta(seconds=60)
DEFAULT_CATCH_UP_CAP = 100
# Fields whose change is a change of rule: it takes effect from the next instant.
RULE_FIELDS = ("cron", "every_seconds", "timezone", "start_at")
FIXED_FIELDS = ("key", "source")

# The recurrence port's next_after: (expression, zone, after) -> the next instant or None.
CronNext = Callable[[str, str, datetime], datetime | None]
# A schedule's rule: the first instant strictly after the one given, or None.
Rule = Callable[[datetime], datetime | None]


@dataclass(frozen=True, slots=True)
class Schedule:
    """A recurring schedule and where it stands.

    Exactly one of ``cron`` and ``every_seconds`` is set. ``runs`` counts the occurrences
    created; ``last_instant`` is the latest of them. Instants before ``not_before`` never run:
    it is the creation time (or ``start_at`` when later), moved on when the rule changes and
    when missed instants have been dealt with.
    """

    id: str
    key: str
    source: str
    template: Mapping[str, object]
    created_at: datetime
    not_before: datetime
    cron: str | None = None
    every_seconds: int | None = None
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_runs: int | None = None
    missed_runs: MissedRuns = MissedRuns.ONCE
    paused: bool = False
    runs: int = 0
    last_instant: datetime | None = None

    @property
    def runs_left(self) -> int | None:
        return None if self.max_runs is None else max(0, self.max_runs - self.runs)


class ScheduleState(StrEnum):
    """Where a schedule stands, as listed: running, paused, or with no instant left."""

    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ENDED = "ENDED"


def state_of(schedule: Schedule, next_run: datetime | None) -> ScheduleState:
    """``ENDED`` once no instant is left (``next_run`` is ``None``), paused or not; else
    ``PAUSED`` or ``ACTIVE``."""
    if next_run is None:
        return ScheduleState.ENDED
    return ScheduleState.PAUSED if schedule.paused else ScheduleState.ACTIVE


def build_schedule(
    fields: Mapping[str, object],
    *,
    schedule_id: str,
    template: Mapping[str, object],
    now: datetime,
    check_cron: CheckCron,
    limits: ScheduleLimits | None = None,
) -> Schedule:
    """A new schedule from request fields; :class:`ValidationFailed` names every bad one."""
    checked = parse_schedule_fields(fields, check_cron=check_cron, limits=limits)
    blank = Schedule(
        id=schedule_id, key="", source="", template=template, created_at=now, not_before=now
    )
    return _with_fields(blank, checked, now, restart=True)


def _with_fields(
    schedule: Schedule, checked: ScheduleFields, now: datetime, *, restart: bool = False
) -> Schedule:
    """``schedule`` carrying ``checked``; a new rule runs from ``now`` (or a later start)."""
    updated = replace(
        schedule,
        key=checked.key,
        source=checked.source,
        cron=checked.cron,
        every_seconds=checked.every_seconds,
        timezone=checked.timezone,
        start_at=checked.start_at,
        end_at=checked.end_at,
        max_runs=checked.max_runs,
        missed_runs=checked.missed_runs,
        paused=checked.paused,
    )
    if not restart and not _rule_changed(schedule, updated):
        return updated
    start = updated.start_at
    return replace(updated, not_before=max(now, start) if start is not None else now)


def _rule_changed(old: Schedule, new: Schedule) -> bool:
    return any(getattr(old, name) != getattr(new, name) for name in RULE_FIELDS)


def update_schedule(
    schedule: Schedule,
    changes: Mapping[str, object],
    *,
    now: datetime,
    check_cron: CheckCron,
    limits: ScheduleLimits | None = None,
    template: Mapping[str, object] | None = None,
) -> Schedule:
    """``schedule`` with ``changes`` applied (a field given as ``None`` is cleared).

    The merged schedule is checked as a whole. A change of rule (cron, interval, time zone,
    start) takes effect from the next instant: instants already created stay, and the new rule
    runs from ``now`` (or its ``start_at``, when later), with nothing to catch up before it.
    """
    names = (*FIXED_FIELDS, *RULE_FIELDS, "end_at", "max_runs", "missed_runs", "paused")
    merged = {name: getattr(schedule, name) for name in names}
    merged.update(changes)
    errors = [
        FieldError(name, "cannot be changed")
        for name in FIXED_FIELDS
        if name in changes and changes[name] != getattr(schedule, name)
    ]
    # Giving one kind of rule replaces the other.
    for given, other in (("cron", "every_seconds"), ("every_seconds", "cron")):
        if changes.get(given) is not None and other not in changes:
            merged[other] = None
    try:
        checked = parse_schedule_fields(merged, check_cron=check_cron, limits=limits)
    except ValidationFailed as exc:
        raise ValidationFailed(errors + exc.errors) from None
    if errors:
        raise ValidationFailed(errors)
    if template is not None:
        schedule = replace(schedule, template=template)
    return _with_fields(schedule, checked, now)


def pause(schedule: Schedule) -> Schedule:
    return replace(schedule, paused=True)


def resume(schedule: Schedule) -> Schedule:
    """Running again; the instants that passed while paused are missed runs, dealt with by
    the schedule's policy at the next plan."""
    return replace(schedule, paused=False)


def rule_of(schedule: Schedule, cron_next: CronNext) -> Rule:
    """The schedule's instants as a function: the first one strictly after a given instant.

    An interval fires at ``start_at`` and every ``every_seconds`` after it, in absolute time
    (a DST change moves none of them); without ``start_at`` the first is ``every_seconds``
    after creation.
    """
    if schedule.cron is not None:
        cron, zone = schedule.cron, schedule.timezone
        return lambda after: cron_next(cron, zone, after)
    assert schedule.every_seconds is not None
    every = timedelta(seconds=schedule.every_seconds)
    anchor = schedule.start_at or schedule.created_at + every

    def interval(after: datetime) -> datetime | None:
        if after < anchor:
            return anchor
        try:
            return anchor + ((after - anchor) // every + 1) * every
        except OverflowError:
            return None

    return interval


def _cursor(schedule: Schedule) -> datetime:
    """Instants strictly after this one are still to run."""
    floor = schedule.not_before - _TICK
    last = schedule.last_instant
    return floor if last is None else max(floor, last)


def _within_end(schedule: Schedule, instant: datetime | None) -> bool:
    return instant is not None and (schedule.end_at is None or instant <= schedule.end_at)


def next_instant(schedule: Schedule, cron_next: CronNext) -> datetime | None:
    """The next instant still to run (missed or not), or ``None`` once the schedule is over:
    ``max_runs`` reached, past ``end_at``, or its rule fires no more."""
    return _next_by(schedule, rule_of(schedule, cron_next))


def _next_by(schedule: Schedule, rule: Rule) -> datetime | None:
    if schedule.runs_left == 0:
        return None
    instant = rule(_cursor(schedule))
    return instant if _within_end(schedule, instant) else None


def _remembered(rule: Rule) -> Rule:
    """``rule``, computing each answer once: a plan asks for the same instant more than once
    (the first instant, then again in the on-time loop; the instant past the horizon, then as
    the next one), and each answer of a cron rule costs a cron evaluation."""
    answers: dict[datetime, datetime | None] = {}

    def remembered(after: datetime) -> datetime | None:
        if after in answers:
            return answers[after]
        found = answers[after] = rule(after)
        return found

    return remembered


def upcoming(schedule: Schedule, now: datetime, cron_next: CronNext, count: int) -> list[datetime]:
    """The next ``count`` instants from ``now`` on that the schedule will run (a preview:
    ``end_at`` and ``max_runs`` apply, a pause does not)."""
    rule = rule_of(schedule, cron_next)
    left = schedule.runs_left
    found: list[datetime] = []
    after = max(_cursor(schedule), now - _TICK)
    while len(found) < min(count, count if left is None else left):
        instant = rule(after)
        if not _within_end(schedule, instant):
            break
        assert instant is not None
        found.append(instant)
        after = instant
    return found


@dataclass(frozen=True, slots=True)
class Plan:
    """What to create now: ``catch_up`` (missed instants the policy keeps) then ``on_time``.

    ``schedule`` is the schedule with those counted; store it together with the occurrences.
    ``next_instant`` is the one after them (``None``: the schedule is over).
    """

    catch_up: tuple[datetime, ...]
    on_time: tuple[datetime, ...]
    schedule: Schedule
    next_instant: datetime | None
    missed: bool = False

    @property
    def instants(self) -> tuple[datetime, ...]:
        return self.catch_up + self.on_time


def plan_occurrences(
    schedule: Schedule,
    now: datetime,
    cron_next: CronNext,
    *,
    lookahead: timedelta = timedelta(0),
    grace: timedelta = DEFAULT_GRACE,
    catch_up_cap: int = DEFAULT_CATCH_UP_CAP,
    limit: int = 1000,
) -> Plan:
    """The occurrences to create at ``now``.

    Instants due before ``now - grace`` are missed and follow ``schedule.missed_runs``; those
    from then to ``now + lookahead`` are on time, at most ``limit`` of them (the rest come with
    the next plan). A paused schedule plans nothing and keeps its place.
    """
    if schedule.paused:
        return Plan((), (), schedule, next_instant(schedule, cron_next))
    rule = _remembered(rule_of(schedule, cron_next))
    left = schedule.runs_left
    cursor = _cursor(schedule)
    late = now - grace
    catch_up: tuple[datetime, ...] = ()
    missed = False
    first = rule(cursor) if left != 0 else None
    if _within_end(schedule, first) and first is not None and first < late:
        missed = True
        until = late if schedule.end_at is None else min(late, schedule.end_at + _TICK)
        want = {MissedRuns.SKIP: 0, MissedRuns.ONCE: 1, MissedRuns.ALL: catch_up_cap}
        keep = want[schedule.missed_runs] if left is None else min(left, want[schedule.missed_runs])
        catch_up = tuple(latest_before(rule, cursor, until, keep))
        cursor = max(cursor, late - _TICK)
    budget = limit if left is None else min(limit, left - len(catch_up))
    on_time: list[datetime] = []
    while len(on_time) < budget:
        instant = rule(cursor)
        if not _within_end(schedule, instant) or instant is None or instant > now + lookahead:
            break
        on_time.append(instant)
        cursor = instant
    created = catch_up + tuple(on_time)
    planned = replace(
        schedule,
        runs=schedule.runs + len(created),
        last_instant=created[-1] if created else schedule.last_instant,
        not_before=max(schedule.not_before, late) if missed else schedule.not_before,
    )
    # The planned schedule has the same rule (only its place moved).
    return Plan(catch_up, tuple(on_time), planned, _next_by(planned, rule), missed)


def latest_before(rule: Rule, after: datetime, until: datetime, count: int) -> list[datetime]:
    """The latest ``count`` instants of ``rule`` strictly after ``after`` and before ``until``,
    oldest first, found by looking back from ``until`` over windows that grow fourfold, so a
    long outage is not walked instant by instant from its start."""
    if count <= 0:
        return []
    window = timedelta(minutes=1)
    while True:
        start = max(after, until - window)
        found: deque[datetime] = deque(maxlen=count)
        instant = rule(start)
        while instant is not None and instant < until:
            found.append(instant)
            instant = rule(instant)
        if len(found) == count or start == after:
            return list(found)
        window *= 4


# -- occurrences ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Occurrence:
    """The identity of the event a schedule's instant becomes; the event's other fields come
    from the schedule's template."""

    event_id: str
    external_job_id: str
    source: str
    scheduled_at: datetime

    @property
    def dedup_key(self) -> tuple[str, str, datetime]:
        """The store's dedup key of the event, as :attr:`Event.dedup_key`."""
        return (self.source, self.external_job_id, self.scheduled_at)


def occurrence(schedule: Schedule, instant: datetime) -> Occurrence:
    return Occurrence(
        event_id=occurrence_id(schedule.id, instant),
        external_job_id=occurrence_external_job_id(schedule.key, instant),
        source=schedule.source,
        scheduled_at=instant.astimezone(UTC),
    )


def instant_text(instant: datetime) -> str:
    """The instant in UTC as ISO-8601 with ``Z``: whole seconds unless it has a fraction."""
    text = instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="auto")
    return text + "Z"


def occurrence_external_job_id(key: str, instant: datetime) -> str:
    """``schedule:{key}:{instant}``: at most 9 + 200 + 1 + 27 = 237 characters."""
    return f"schedule:{key}:{instant_text(instant)}"


def occurrence_id(schedule_id: str, instant: datetime) -> str:
    """A UUID shaped as version 7, like :func:`timefuse.domain.event.new_event_id`: its 48
    time bits are the instant's milliseconds, so occurrence ids sort by time; its 74 other
    free bits come from a SHA-256 of (schedule id, instant), so every process derives the same
    id for the same occurrence."""
    millis = ((instant - _EPOCH) // timedelta(milliseconds=1)) & ((1 << 48) - 1)
    digest = hashlib.sha256(f"{schedule_id}\x00{instant_text(instant)}".encode()).digest()
    rand = int.from_bytes(digest[:10], "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))
