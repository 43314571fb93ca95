"""Cron instants across DST changes, in three zones.

The expected UTC instants are written out by hand from the zones' rules (tzdata), for 2025
unless said otherwise:

- Europe/Berlin, CET +01:00 / CEST +02:00. Spring forward on Sunday 30 March at 01:00Z (02:00
  CET becomes 03:00 CEST: 02:00-02:59 don't exist). Fall back on Sunday 26 October at 01:00Z
  (03:00 CEST becomes 02:00 CET: 02:00-02:59 happen twice). In 2024, spring forward on Sunday
  31 March at 01:00Z.
- America/New_York, EST -05:00 / EDT -04:00. Spring forward on Sunday 9 March at 07:00Z (02:00
  EST becomes 03:00 EDT). Fall back on Sunday 2 November at 06:00Z (02:00 EDT becomes 01:00
  EST: 01:00-01:59 happen twice).
- Australia/Lord_Howe, LHST +10:30 / LHDT +11:00, a 30-minute shift. Fall back on Sunday 6
  April at 02:00 LHDT = 5 April 15:00Z (clocks go to 01:30: 01:30-01:59 happen twice). Spring
  forward on Sunday 5 October at 02:00 LHST = 4 October 15:30Z (clocks go to 02:30: 02:00-02:29
  don't exist).

The rules: a local time that doesn't exist fires at the first valid instant after it (the
instant of the change); one that happens twice fires once, at its first occurrence.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from timefuse.adapters.cron import CronRecurrence
from timefuse.adapters.cron.wallclock import next_instant

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"

recurrence = CronRecurrence()


def z(text: str) -> datetime:
    """A UTC instant written as 'YYYY-MM-DD HH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def following(expression: str, zone: str, after: datetime, count: int) -> list[datetime]:
    instants: list[datetime] = []
    for _ in range(count):
        nxt = recurrence.next_after(expression, zone, after)
        assert nxt is not None
        instants.append(nxt)
        after = nxt
    return instants


# (case, expression, zone, after, the instants that follow)
TABLE = [
    # -- Europe/Berlin, spring forward (02:00-02:59 CET don't exist on 30 March)
    (
        "berlin spring daily: 02:30 doesn't exist, fires at 03:00 CEST",
        "30 2 * * *",
        BERLIN,
        "2025-03-28 12:00",
        ["2025-03-29 01:30", "2025-03-30 01:00", "2025-03-31 00:30"],
    ),
    (
        "berlin spring hourly: 02:00 and 03:00 share 03:00 CEST, once",
        "0 * * * *",
        BERLIN,
        "2025-03-29 23:30",
        ["2025-03-30 00:00", "2025-03-30 01:00", "2025-03-30 02:00"],
    ),
    (
        "berlin spring every 15 min: 02:00-02:45 all fire at 03:00 CEST, once",
        "*/15 * * * *",
        BERLIN,
        "2025-03-30 00:30",
        ["2025-03-30 00:45", "2025-03-30 01:00", "2025-03-30 01:15", "2025-03-30 01:30"],
    ),
    (
        "berlin spring with seconds: 02:30:00 fires at 03:00:00 CEST",
        "0 30 2 * * *",
        BERLIN,
        "2025-03-29 12:00",
        ["2025-03-30 01:00", "2025-03-31 00:30"],
    ),
    (
        "berlin 2024: the last day of March is the change day",
        "30 2 L * *",
        BERLIN,
        "2024-02-01 00:00",
        ["2024-02-29 01:30", "2024-03-31 01:00", "2024-04-30 00:30"],
    ),
    (
        "berlin last day of the month at midnight, across the change",
        "0 0 L * *",
        BERLIN,
        "2025-01-15 00:00",
        ["2025-01-30 23:00", "2025-02-27 23:00", "2025-03-30 22:00", "2025-04-29 22:00"],
    ),
    # -- Europe/Berlin, fall back (02:00-02:59 happen twice on 26 October)
    (
        "berlin fall daily: 02:30 happens twice, fires at the CEST one",
        "30 2 * * *",
        BERLIN,
        "2025-10-24 12:00",
        ["2025-10-25 00:30", "2025-10-26 00:30", "2025-10-27 01:30"],
    ),
    (
        "berlin fall hourly: 02:00 fires once (CEST), then 03:00 CET",
        "0 * * * *",
        BERLIN,
        "2025-10-25 23:30",
        ["2025-10-26 00:00", "2025-10-26 02:00", "2025-10-26 03:00"],
    ),
    (
        "berlin fall every 15 min: the repeated 02:00-02:45 CET fire nothing",
        "*/15 * * * *",
        BERLIN,
        "2025-10-26 00:30",
        ["2025-10-26 00:45", "2025-10-26 02:00", "2025-10-26 02:15"],
    ),
    (
        "berlin fall: from inside the repeated hour, today's 02:30 has fired",
        "30 2 * * *",
        BERLIN,
        "2025-10-26 01:10",
        ["2025-10-27 01:30"],
    ),
    (
        "berlin: an alias is its five fields",
        "@daily",
        BERLIN,
        "2025-03-29 12:00",
        ["2025-03-29 23:00", "2025-03-30 22:00"],
    ),
    # -- America/New_York, spring forward (02:00-02:59 EST don't exist on 9 March)
    (
        "new york spring daily: 02:30 doesn't exist, fires at 03:00 EDT",
        "30 2 * * *",
        NEW_YORK,
        "2025-03-07 12:00",
        ["2025-03-08 07:30", "2025-03-09 07:00", "2025-03-10 06:30"],
    ),
    (
        "new york spring hourly",
        "0 * * * *",
        NEW_YORK,
        "2025-03-09 05:30",
        ["2025-03-09 06:00", "2025-03-09 07:00", "2025-03-09 08:00"],
    ),
    (
        "new york spring every 15 min",
        "*/15 * * * *",
        NEW_YORK,
        "2025-03-09 06:40",
        ["2025-03-09 06:45", "2025-03-09 07:00", "2025-03-09 07:15"],
    ),
    (
        "new york weekdays at 09:00 across the change",
        "0 9 * * 1-5",
        NEW_YORK,
        "2025-03-06 15:00",
        ["2025-03-07 14:00", "2025-03-10 13:00", "2025-03-11 13:00"],
    ),
    # -- America/New_York, fall back (01:00-01:59 happen twice on 2 November)
    (
        "new york fall daily: 01:30 happens twice, fires at the EDT one",
        "30 1 * * *",
        NEW_YORK,
        "2025-10-31 12:00",
        ["2025-11-01 05:30", "2025-11-02 05:30", "2025-11-03 06:30"],
    ),
    (
        "new york fall hourly: 01:00 fires once (EDT)",
        "0 * * * *",
        NEW_YORK,
        "2025-11-02 03:30",
        ["2025-11-02 04:00", "2025-11-02 05:00", "2025-11-02 07:00"],
    ),
    (
        "new york fall every 15 min: the repeated 01:00-01:45 EST fire nothing",
        "*/15 * * * *",
        NEW_YORK,
        "2025-11-02 05:20",
        ["2025-11-02 05:30", "2025-11-02 05:45", "2025-11-02 07:00", "2025-11-02 07:15"],
    ),
    (
        "new york fall: from inside the repeated hour, the next is 02:00 EST",
        "*/15 * * * *",
        NEW_YORK,
        "2025-11-02 06:20",
        ["2025-11-02 07:00", "2025-11-02 07:15"],
    ),
    (
        "new york fall every 20 s: from 01:59:40 EDT straight to 02:00:00 EST",
        "*/20 * * * * *",
        NEW_YORK,
        "2025-11-02 05:59:30",
        ["2025-11-02 05:59:40", "2025-11-02 07:00:00", "2025-11-02 07:00:20"],
    ),
    # -- Australia/Lord_Howe, fall back by 30 minutes (01:30-01:59 happen twice on 6 April)
    (
        "lord howe fall daily: 01:45 happens twice, fires at the LHDT one",
        "45 1 * * *",
        LORD_HOWE,
        "2025-04-04 00:00",
        ["2025-04-04 14:45", "2025-04-05 14:45", "2025-04-06 15:15"],
    ),
    (
        "lord howe fall hourly: 01:00 and 02:00 are each once, 90 minutes apart",
        "0 * * * *",
        LORD_HOWE,
        "2025-04-05 13:00",
        ["2025-04-05 14:00", "2025-04-05 15:30", "2025-04-05 16:30"],
    ),
    (
        "lord howe fall every 15 min: the repeated 01:30 and 01:45 LHST fire nothing",
        "*/15 * * * *",
        LORD_HOWE,
        "2025-04-05 14:20",
        ["2025-04-05 14:30", "2025-04-05 14:45", "2025-04-05 15:30", "2025-04-05 15:45"],
    ),
    # -- Australia/Lord_Howe, spring forward by 30 minutes (02:00-02:29 don't exist on 5 Oct)
    (
        "lord howe spring daily: 02:15 doesn't exist, fires at 02:30 LHDT",
        "15 2 * * *",
        LORD_HOWE,
        "2025-10-03 00:00",
        ["2025-10-03 15:45", "2025-10-04 15:30", "2025-10-05 15:15"],
    ),
    (
        "lord howe spring hourly: 02:00 doesn't exist, fires at 02:30 LHDT",
        "0 * * * *",
        LORD_HOWE,
        "2025-10-04 14:00",
        ["2025-10-04 14:30", "2025-10-04 15:30", "2025-10-04 16:00"],
    ),
    (
        "lord howe spring every 15 min: 02:00, 02:15 and 02:30 share 02:30 LHDT",
        "*/15 * * * *",
        LORD_HOWE,
        "2025-10-04 15:05",
        ["2025-10-04 15:15", "2025-10-04 15:30", "2025-10-04 15:45"],
    ),
]


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in TABLE],
)
def test_instants_follow_the_dst_rules(
    expression: str, zone: str, after: str, expected: list[str]
) -> None:
    assert following(expression, zone, z(after), len(expected)) == [z(e) for e in expected]


def test_from_inside_a_repeated_hour_the_search_skips_to_its_end() -> None:
    # Every second of New York's repeated 01:00-01:59 fired in the first pass; from 01:00:05
    # EST the next is 02:00:00 EST, found without walking through the hour second by second.
    calls = 0

    def every_second(local: datetime) -> datetime:
        nonlocal calls
        calls += 1
        return local.replace(microsecond=0) + timedelta(seconds=1)

    after = z("2025-11-02 06:00:05")

    assert next_instant(every_second, ZoneInfo(NEW_YORK), after) == z("2025-11-02 07:00:00")
    assert calls == 1


def test_utc_has_no_changes_to_follow() -> None:
    assert following("30 2 * * *", "UTC", z("2025-03-29 12:00"), 2) == [
        z("2025-03-30 02:30"),
        z("2025-03-31 02:30"),
    ]


def test_an_expression_that_stops_matching_has_no_next_instant() -> None:
    # 29 February that is also the fifth Monday of February: 2044, then 2072.
    assert recurrence.next_after("0 0 * 2 MON#5", "UTC", z("2044-03-01 00:00")) == z(
        "2072-02-29 00:00"
    )
    assert recurrence.next_after("0 0 29 2 *", "UTC", z("9996-03-01 00:00")) is None
    assert recurrence.next_after("0 0 29 2 *", BERLIN, z("9996-03-01 00:00")) is None


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "bad minute field"),
        ("* 24 * * *", "bad hour field"),
        ("0 0 0 * *", "bad day-of-month field"),
        ("0 0 * 13 *", "bad month field"),
        ("0 0 * * 8", "bad day-of-week field"),
        ("99 * * * * *", "bad second field"),
        ("* * *", "has 3 fields"),
        ("* * * * * * *", "has 7 fields"),
        ("@reboot", "unknown alias '@reboot'"),
        ("0 0 31 2 *", "bad day-of-month field"),
        ("* * */20 * 1L", "never fires"),
    ],
)
def test_a_bad_expression_is_refused_with_its_reason(expression: str, reason: str) -> None:
    problem = recurrence.check(expression)

    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    "expression",
    [
        "*/15 * * * *",
        "0 9 * * MON-FRI",
        "0 0 L * *",
        "0 0 LW * *",
        "0 0 * * 5L",
        "0 0 * * MON#2",
        "*/10 * * * * *",
        "@hourly",
        "@YEARLY",
        "  0  9 * * 1-5 ",
    ],
)
def test_supported_expressions_pass_the_check(expression: str) -> None:
    assert recurrence.check(expression) is None


# -- properties -------------------------------------------------------------------------------

EXPRESSIONS = [
    "30 2 * * *",
    "45 1 * * *",
    "15 2 * * *",
    "0 * * * *",
    "*/15 * * * *",
    "*/7 * * * *",
    "0,30 1-3 * * *",
    "0 9 * * 1-5",
    "*/20 * * * * *",
    "30 */5 2 * * *",
]
ZONES = [BERLIN, NEW_YORK, LORD_HOWE, "Europe/Dublin", "America/Santiago", "UTC"]


@functools.cache
def _changes(zone: str) -> list[datetime]:
    """The instants the zone's offset changes in 2024-2026 (test input: where to look)."""
    tz = ZoneInfo(zone)

    def offset(moment: datetime) -> timedelta | None:
        return moment.astimezone(tz).utcoffset()

    found = []
    day = z("2024-01-01 00:00")
    while day < z("2027-01-01 00:00"):
        low, high = day, day + timedelta(days=1)
        if offset(low) != offset(high):
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(high.replace(microsecond=0))
        day += timedelta(days=1)
    return found or [z("2025-06-01 00:00")]


@st.composite
def zone_and_start(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant, most often within a day or so before one of its changes."""
    zone = draw(st.sampled_from(ZONES))
    if draw(st.integers(0, 4)) == 0:
        moment = draw(st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)))
        return zone, moment.replace(tzinfo=UTC)
    change = draw(st.sampled_from(_changes(zone)))
    return zone, change + timedelta(seconds=draw(st.integers(-26 * 3600, 2 * 3600)))


def _matches(expression: str, local: datetime) -> bool:
    """The library's own naive match: ``local`` is the next match after the second before."""
    return next(CronSim(expression, local - timedelta(seconds=1)), None) == local


def _oracle(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """The rules applied by brute force: every matching local time in the window, shifted
    minute by minute out of a gap, read as its first occurrence; duplicates dropped."""
    tz = ZoneInfo(zone)
    local = (start.astimezone(tz) - timedelta(hours=3)).replace(tzinfo=None)
    last = (end.astimezone(tz) + timedelta(hours=3)).replace(tzinfo=None)
    found: set[datetime] = set()
    it = CronSim(expression, local)
    for match in it:
        if match > last:
            break
        moved = match
        while moved.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != moved:
            moved += timedelta(minutes=1)
        instant = moved.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if start < instant <= end:
            found.add(instant)
    return sorted(found)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXPRESSIONS), zone_and_start())
def test_instants_increase_and_each_matches_or_ends_a_gap(
    expression: str, where: tuple[str, datetime]
) -> None:
    zone, start = where
    tz = ZoneInfo(zone)
    instants = following(expression, zone, start, 12)

    assert all(a < b for a, b in zip([start, *instants], instants, strict=False))
    for instant in instants:
        local = instant.astimezone(tz).replace(tzinfo=None)
        if _matches(expression, local):
            continue
        # Not a match itself: it must be the instant a gap ends, and a match must lie in it.
        before = (instant - timedelta(seconds=1)).astimezone(tz)
        assert before.utcoffset() != instant.astimezone(tz).utcoffset(), instant
        gap_start = before.replace(tzinfo=None) + timedelta(seconds=1)
        first = next(CronSim(expression, gap_start - timedelta(seconds=1)))
        assert gap_start <= first < local, instant


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(EXPRESSIONS[:8]), zone_and_start())
def test_instants_are_exactly_those_the_rules_give(
    expression: str, where: tuple[str, datetime]
) -> None:
    zone, start = where
    end = start + timedelta(hours=30)
    produced: list[datetime] = []
    after = start
    while (nxt := recurrence.next_after(expression, zone, after)) is not None and nxt <= end:
        produced.append(nxt)
        after = nxt

    assert produced == _oracle(expression, zone, start, end)
