"""The recurrence port on cronsim.

cronsim evaluates the expression on naive local wall-clock time, where it follows Debian cron
exactly; :mod:`timefuse.adapters.cron.wallclock` turns those times into instants by timefuse's
DST rules. cronsim's own DST handling (Debian's: fixed-time jobs move out of a gap and don't
repeat, but ``*`` hour jobs and 6-field expressions run on absolute time, so they skip the
first valid time after a gap and fire twice in a repeated hour) is never used.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from timefuse.adapters.cron.wallclock import next_instant

# Aliases in the crontab(5) sense; cronsim reads only fields.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS_5 = "minute hour day-of-month month day-of-week"
FIELDS_6 = "second minute hour day-of-month month day-of-week"
# cronsim gives up when it finds no match this many years after the start (or the last match).
HORIZON_YEARS = 50
# Where check() looks for a first match: any fixed point does, as every cron expression repeats
# within the 400-year Gregorian cycle and cronsim rejects those that can never match.
_CHECK_FROM = datetime(2000, 1, 1)


def normalise(expression: str) -> str:
    """The field form of ``expression`` (an alias replaced), fields separated by one space."""
    text = expression.strip()
    if text.startswith("@"):
        return ALIASES.get(text.lower(), text)
    return " ".join(text.split())


@lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


class CronRecurrence:
    """:class:`timefuse.ports.recurrence.Recurrence` on cronsim.

    Five fields (minute hour day-of-month month day-of-week) or six with seconds first;
    ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``,
    ``@hourly``; ranges, lists, steps, month and day names; ``L`` and ``LW`` as the day of
    the month, ``5L`` (last Friday) and ``MON#2`` (second Monday) as the day of the week.
    """

    def check(self, expression: str) -> str | None:
        text = normalise(expression)
        if text.startswith("@"):
            names = ", ".join(ALIASES)
            return f"unknown alias {text!r} (known: {names})"
        fields = text.split()
        if len(fields) not in (5, 6):
            return (
                f"has {len(fields)} fields; a cron expression has 5 ({FIELDS_5}) or 6 ({FIELDS_6})"
            )
        try:
            it = CronSim(text, _CHECK_FROM)
        except CronSimError as exc:
            return f"is not a valid cron expression: {_reason(exc)}"
        if next(it, None) is None:
            return f"never fires (no matching date within {HORIZON_YEARS} years)"
        return None

    def next_after(self, expression: str, zone: str, after: datetime) -> datetime | None:
        text = normalise(expression)

        def naive_next(local: datetime) -> datetime | None:
            try:
                return next(CronSim(text, local), None)
            except OverflowError:  # the next match would be past year 9999
                return None

        tz = _zone(zone)
        if tz is UTC:
            match = naive_next(after.astimezone(UTC).replace(tzinfo=None))
            return None if match is None else match.replace(tzinfo=UTC)
        return next_instant(naive_next, tz, after)


def _reason(exc: CronSimError) -> str:
    # cronsim says "Bad minute", "Wrong number of fields".
    text = str(exc)
    if text.startswith("Bad "):
        return f"bad {text[4:]} field"
    return text[:1].lower() + text[1:]
