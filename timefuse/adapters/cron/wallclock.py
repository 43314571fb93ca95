"""Local wall-clock times as instants, by timefuse's DST rules.

A cron library is asked only for the next matching *local wall-clock* time (a naive datetime),
where it needs no time zone and no library differs from another. This module turns those times
into instants:

- a local time that exists once is that instant;
- a local time that does not exist (the clocks skip it: spring forward) fires at the first
  valid instant after it, the instant the clocks jump. Every skipped time of one gap therefore
  shares that instant, with the first valid local time after the gap if it matches too;
- a local time that exists twice (the clocks repeat it: fall back) fires once, at its first
  occurrence. The repeated pass fires nothing.

So the instants of one expression strictly increase and never repeat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

# The next matching naive local time strictly after the one given (at microsecond precision;
# the match itself is a whole second), or None when there is none within the library's horizon.
NaiveNext = Callable[[datetime], datetime | None]

_ONE_MICROSECOND = timedelta(microseconds=1)
_NOTHING = timedelta(0)


def instant_of(local: datetime, zone: tzinfo) -> datetime:
    """The instant a naive local time ``local`` fires at in ``zone``, in UTC."""
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == local:
        return first  # it exists; fold=0 is its first occurrence when it exists twice
    # It falls in a gap. Read with the offset before the change (fold=0) it lands after the
    # change; read with the offset after it (fold=1), before. The change lies in between.
    before = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return _change_between(zone, before, first)


def next_instant(naive_next: NaiveNext, zone: tzinfo, after: datetime) -> datetime | None:
    """The first instant strictly after ``after`` (aware) whose local time matches, by the
    rules above; ``naive_next`` is the cron library's next-match function."""
    after = after.astimezone(UTC)
    local = after.astimezone(zone)
    cursor = local.replace(tzinfo=None, fold=0)
    repeated_by = _offset(local.replace(fold=0)) - _offset(local.replace(fold=1))
    if local.fold == 1 and repeated_by > _NOTHING:
        # ``after`` is in the repeated pass: every local time left in that pass fired in the
        # first one, so the search resumes where the repetition ends: the change instant read
        # with the offset before it.
        change = _change_between(zone, after - repeated_by, after)
        ends = (change + _offset(local.replace(fold=0))).replace(tzinfo=None)
        cursor = ends - _ONE_MICROSECOND
    while True:
        match = naive_next(cursor)
        if match is None:
            return None
        instant = instant_of(match, zone)
        if instant > after:
            return instant
        cursor = match


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"{moment.tzinfo!r} gives no UTC offset")
    return offset


def _change_between(zone: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first whole-second instant in ``(low, high]`` (UTC) whose offset in ``zone``
    differs from ``low``'s: the offset change that lies between them."""
    start = _offset(low.astimezone(zone))
    lo = math.floor(low.timestamp())  # offset == start at lo
    hi = math.ceil(high.timestamp())  # offset != start at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, zone)) == start:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)
