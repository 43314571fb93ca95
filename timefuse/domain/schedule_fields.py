"""The fields of a schedule as a client sends them, checked: every bad field reported at once.

The event template is checked elsewhere (by the event rules and the delivery type). Values are
plain (as decoded from JSON); instants may also be aware datetimes, so that an update can merge
a stored schedule with a patch and check the result with the same rules.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from timefuse.domain.event import to_utc
from timefuse.domain.validation import FieldError, ValidationFailed, parse_instant

# The recurrence port's check: None for a valid cron expression, else the reason.
CheckCron = Callable[[str], str | None]

DEFAULT_TIMEZONE = "UTC"
# Letters, digits and . _ - : with a letter or digit first: safe in a URL path and in the
# occurrences' external_job_id.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


class MissedRuns(StrEnum):
    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class ScheduleLimits:
    # 9 ("schedule:") + 200 + 1 + 27 (an instant with microseconds) stays within the 255 of an
    # external_job_id.
    max_key: int = 200
    max_source: int = 100
    max_cron: int = 200
    max_every_seconds: int = 3650 * 86400
    max_runs_limit: int = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ScheduleFields:
    key: str
    source: str
    cron: str | None
    every_seconds: int | None
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    missed_runs: MissedRuns
    paused: bool


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_known_zone(name: str) -> bool:
    """An IANA zone name this machine has data for (tzdata supplies them where the system
    has none)."""
    return name == DEFAULT_TIMEZONE or name in _known_zones()


def parse_schedule_fields(
    fields: Mapping[str, object],
    *,
    check_cron: CheckCron,
    limits: ScheduleLimits | None = None,
) -> ScheduleFields:
    """The checked fields; :class:`ValidationFailed` naming every bad one otherwise."""
    limits = limits or ScheduleLimits()
    errors: list[FieldError] = []
    key = _text("key", fields.get("key"), limits.max_key, errors)
    if key and not errors and not _KEY.fullmatch(key):
        errors.append(FieldError("key", "may hold only letters, digits and . _ - :"))
    source = _text("source", fields.get("source"), limits.max_source, errors)
    cron, every = _rule(fields, check_cron, limits, errors)
    timezone = _timezone(fields.get("timezone"), errors)
    start_at = _instant("start_at", fields.get("start_at"), errors)
    end_at = _instant("end_at", fields.get("end_at"), errors)
    if start_at is not None and end_at is not None and end_at < start_at:
        errors.append(FieldError("end_at", "must not be before start_at"))
    max_runs = _whole("max_runs", fields.get("max_runs"), 1, limits.max_runs_limit, errors)
    missed = _missed_runs(fields.get("missed_runs"), errors)
    paused = fields.get("paused", False)
    if paused is None:
        paused = False
    if not isinstance(paused, bool):
        errors.append(FieldError("paused", "must be true or false"))
    if errors:
        raise ValidationFailed(errors)
    assert isinstance(paused, bool)
    return ScheduleFields(
        key, source, cron, every, timezone, start_at, end_at, max_runs, missed, paused
    )


def _text(name: str, value: object, limit: int, errors: list[FieldError]) -> str:
    if value is None:
        errors.append(FieldError(name, "is required"))
        return ""
    if not isinstance(value, str):
        errors.append(FieldError(name, "must be a string"))
        return ""
    if not value.strip():
        errors.append(FieldError(name, "must not be blank"))
    elif len(value) > limit:
        errors.append(FieldError(name, f"must be at most {limit} characters"))
    elif any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        errors.append(FieldError(name, "must not contain control characters"))
    return value


def _rule(
    fields: Mapping[str, object],
    check_cron: CheckCron,
    limits: ScheduleLimits,
    errors: list[FieldError],
) -> tuple[str | None, int | None]:
    cron, every = fields.get("cron"), fields.get("every_seconds")
    if cron is None and every is None:
        errors.append(FieldError("cron", "either cron or every_seconds is required"))
        return None, None
    if cron is not None and every is not None:
        errors.append(FieldError("every_seconds", "give either cron or every_seconds, not both"))
        return None, None
    if every is not None:
        return None, _whole("every_seconds", every, 1, limits.max_every_seconds, errors)
    if not isinstance(cron, str):
        errors.append(FieldError("cron", "must be a string"))
        return None, None
    if len(cron) > limits.max_cron:
        errors.append(FieldError("cron", f"must be at most {limits.max_cron} characters"))
        return None, None
    problem = check_cron(cron)
    if problem is not None:
        errors.append(FieldError("cron", problem))
    return cron.strip(), None


def _timezone(value: object, errors: list[FieldError]) -> str:
    if value is None:
        return DEFAULT_TIMEZONE
    if not isinstance(value, str):
        errors.append(FieldError("timezone", "must be an IANA time zone name"))
    elif not is_known_zone(value):
        errors.append(
            FieldError("timezone", f"unknown time zone {value[:64]!r} (an IANA name, e.g. UTC)")
        )
    else:
        return value
    return DEFAULT_TIMEZONE


def _instant(name: str, value: object, errors: list[FieldError]) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return to_utc(value)
    try:
        return parse_instant(value)
    except ValueError as exc:
        errors.append(FieldError(name, str(exc)))
        return None


def _whole(name: str, value: object, low: int, high: int, errors: list[FieldError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append(FieldError(name, "must be a whole number"))
        return None
    if value < low:
        errors.append(FieldError(name, f"must be at least {low}"))
        return None
    if value > high:
        errors.append(FieldError(name, f"must be at most {high}"))
        return None
    if isinstance(value, float):
        errors.append(FieldError(name, "must be a whole number"))
        return None
    return value


def _missed_runs(value: object, errors: list[FieldError]) -> MissedRuns:
    if value is None:
        return MissedRuns.ONCE
    try:
        return MissedRuns(str(value) if isinstance(value, str) else "")
    except ValueError:
        choices = ", ".join(m.value for m in MissedRuns)
        errors.append(FieldError("missed_runs", f"must be one of {choices}"))
        return MissedRuns.ONCE
