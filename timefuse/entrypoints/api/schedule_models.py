"""Request and response bodies of /api/v1/schedules, as msgspec structs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from timefuse.domain.schedule import ScheduleLimits, ScheduleState, instant_text
from timefuse.domain.schedule_fields import MissedRuns
from timefuse.entrypoints.api.envelope import FieldErrorOut
from timefuse.entrypoints.api.models import EventOut
from timefuse.ports.store import ScheduleRecord


def _doc(description: str, **schema: object) -> msgspec.Meta:
    return msgspec.Meta(description=description, extra_json_schema=schema)


_LIMITS = ScheduleLimits()
_RAW = msgspec.field(default_factory=msgspec.Raw)
_TEMPLATE = (
    "The event each occurrence delivers: every field of a submitted event (delivery_type, "
    "destination, payload, max_retries, delivery_window_seconds, ...) but external_job_id, "
    "scheduled_at and source, which the schedule sets; checked exactly as a submission is."
)


class ScheduleIn(msgspec.Struct, forbid_unknown_fields=True):
    """A schedule, declared by its ``key`` (unique per source): declaring it again replaces it.

    Exactly one of ``cron`` and ``every_seconds``. Unknown fields are refused (422), so a
    misspelt field can't be silently ignored.
    """

    key: Annotated[
        msgspec.Raw,
        _doc(
            "The client's name for the schedule, unique per source: letters, digits and "
            ". _ - : (a letter or digit first).",
            type="string",
            maxLength=_LIMITS.max_key,
        ),
    ] = _RAW
    source: Annotated[
        msgspec.Raw,
        _doc("The source of every occurrence.", type="string", maxLength=_LIMITS.max_source),
    ] = _RAW
    cron: Annotated[
        msgspec.Raw,
        _doc(
            "A cron expression: 5 fields, or 6 with seconds first; @hourly, @daily, @weekly, "
            "@monthly, @yearly; L, LW, 5L and MON#2 in the day fields.",
            type=["string", "null"],
            maxLength=_LIMITS.max_cron,
            examples=["0 9 * * 1-5"],
        ),
    ] = _RAW
    every_seconds: Annotated[
        msgspec.Raw,
        _doc(
            "An interval instead of cron, in absolute time.",
            type=["integer", "null"],
            minimum=1,
            maximum=_LIMITS.max_every_seconds,
        ),
    ] = _RAW
    timezone: Annotated[
        msgspec.Raw,
        _doc("The IANA zone cron times are read in.", type="string", default="UTC"),
    ] = _RAW
    start_at: Annotated[
        msgspec.Raw,
        _doc("No occurrence before this instant (inclusive).", type=["string", "null"]),
    ] = _RAW
    end_at: Annotated[
        msgspec.Raw,
        _doc("No occurrence after this instant (inclusive).", type=["string", "null"]),
    ] = _RAW
    max_runs: Annotated[
        msgspec.Raw,
        _doc("Stop after this many occurrences.", type=["integer", "null"], minimum=1),
    ] = _RAW
    missed_runs: Annotated[
        msgspec.Raw,
        _doc(
            "What to do with instants missed during an outage or a pause: none of them "
            "(skip), the latest (once), or every one up to a cap (all).",
            type="string",
            enum=[m.value for m in MissedRuns],
            default="once",
        ),
    ] = _RAW
    paused: Annotated[
        msgspec.Raw,
        _doc(
            "Create nothing until resumed. Left out, a declaration keeps the schedule's pause.",
            type="boolean",
        ),
    ] = _RAW
    event: Annotated[
        msgspec.Raw,
        _doc(_TEMPLATE, **{"$ref": "#/components/schemas/EventIn"}),
    ] = _RAW


SCHEDULE_REQUIRED = ["key", "source", "event"]
ScheduleBody = Annotated[
    ScheduleIn, msgspec.Meta(extra_json_schema={"required": SCHEDULE_REQUIRED})
]


class SchedulePatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """The fields to change; ``null`` clears one (``cron: null`` with ``every_seconds``
    switches to an interval). A change of cron, interval, zone or start takes effect from
    the next instant. ``key`` and ``source`` can't change; ``event`` replaces the template."""

    cron: Annotated[msgspec.Raw, _doc("As in a declaration.", type=["string", "null"])] = _RAW
    every_seconds: Annotated[
        msgspec.Raw, _doc("As in a declaration.", type=["integer", "null"], minimum=1)
    ] = _RAW
    timezone: Annotated[msgspec.Raw, _doc("As in a declaration.", type="string")] = _RAW
    start_at: Annotated[msgspec.Raw, _doc("As in a declaration.", type=["string", "null"])] = _RAW
    end_at: Annotated[msgspec.Raw, _doc("As in a declaration.", type=["string", "null"])] = _RAW
    max_runs: Annotated[
        msgspec.Raw, _doc("As in a declaration.", type=["integer", "null"], minimum=1)
    ] = _RAW
    missed_runs: Annotated[
        msgspec.Raw,
        _doc("As in a declaration.", type="string", enum=[m.value for m in MissedRuns]),
    ] = _RAW
    paused: Annotated[msgspec.Raw, _doc("As in a declaration.", type="boolean")] = _RAW
    event: Annotated[msgspec.Raw, _doc(_TEMPLATE, **{"$ref": "#/components/schemas/EventIn"})] = (
        _RAW
    )


class ScheduleOut(msgspec.Struct):
    """A schedule and where it stands. ``next_runs`` (the next instants, ISO-8601 UTC) is
    given when one schedule is read, null in listings."""

    id: str
    key: str
    source: str
    state: Annotated[str, _doc("Where it stands.", enum=[s.value for s in ScheduleState])]
    cron: str | None
    every_seconds: int | None
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    missed_runs: str
    paused: bool
    runs: Annotated[int, _doc("Occurrences created by the rule (triggers not counted).")]
    last_run_at: Annotated[datetime | None, _doc("The latest instant created by the rule.")]
    next_run_at: Annotated[
        datetime | None, _doc("The next instant to run (missed or not); null once over.")
    ]
    created_at: datetime
    updated_at: datetime
    version: int
    event: Annotated[dict[str, Any], _doc(_TEMPLATE)]
    next_runs: list[str] | None = None


def schedule_out(record: ScheduleRecord, next_runs: list[datetime] | None = None) -> ScheduleOut:
    s = record.schedule
    template = {
        name: msgspec.Raw(value) if isinstance(value, bytes) else value
        for name, value in s.template.items()
    }
    return ScheduleOut(
        id=s.id,
        key=s.key,
        source=s.source,
        state=record.state.value,
        cron=s.cron,
        every_seconds=s.every_seconds,
        timezone=s.timezone,
        start_at=s.start_at,
        end_at=s.end_at,
        max_runs=s.max_runs,
        missed_runs=s.missed_runs.value,
        paused=s.paused,
        runs=s.runs,
        last_run_at=s.last_instant,
        next_run_at=record.next_run_at,
        created_at=s.created_at,
        updated_at=record.updated_at,
        version=record.version,
        event=template,
        next_runs=None if next_runs is None else [instant_text(i) for i in next_runs],
    )


class ScheduleWrittenOut(ScheduleOut):
    """A schedule as a declaration or a change left it, and the fields of its ``event`` that
    were ignored (unknown fields, named ``event.<field>``)."""

    warnings: Annotated[
        list[FieldErrorOut],
        _doc(
            "Fields of the event template that were ignored (unknown fields), each named; "
            "refused instead with TIMEFUSE_UNKNOWN_FIELDS=reject (422)."
        ),
    ] = msgspec.field(default_factory=list)


def schedule_written_out(record: ScheduleRecord, warnings: list[FieldErrorOut]) -> ScheduleOut:
    out = schedule_out(record)
    fields = {name: getattr(out, name) for name in ScheduleOut.__struct_fields__}
    return ScheduleWrittenOut(**fields, warnings=warnings)


class SchedulePageOut(msgspec.Struct):
    """One page, in (source, key) order; pass ``next_cursor`` as ``cursor`` for the next."""

    schedules: list[ScheduleOut]
    next_cursor: str | None


class OccurrencePageOut(msgspec.Struct):
    """A schedule's occurrences (events), newest first; ``next_cursor`` as ``cursor`` for
    older ones."""

    events: list[EventOut]
    next_cursor: str | None


class ScheduleDeleted(msgspec.Struct):
    id: str
    deleted: bool
