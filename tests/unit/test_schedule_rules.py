"""Recurring schedules: validation, planning with a fake clock, missed runs, identity."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timefuse.adapters.cron import CronRecurrence
from timefuse.domain.schedule import (
    MissedRuns,
    Plan,
    Schedule,
    build_schedule,
    instant_text,
    latest_before,
    next_instant,
    occurrence,
    occurrence_id,
    pause,
    plan_occurrences,
    resume,
    rule_of,
    upcoming,
    update_schedule,
)
from timefuse.domain.schedule_fields import ScheduleLimits
from timefuse.domain.validation import ValidationFailed

recurrence = CronRecurrence()
cron_next = recurrence.next_after
TEMPLATE = {"delivery_type": "http", "destination": "https://example.com/hook", "payload": {}}


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make(now: datetime, **fields: object) -> Schedule:
    body: dict[str, object] = {"key": "nightly", "source": "billing", **fields}
    return build_schedule(
        body,
        schedule_id="sched-1",
        template=TEMPLATE,
        now=now,
        check_cron=recurrence.check,
    )


def errors_of(fields: Mapping[str, object]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        build_schedule(
            fields,
            schedule_id="s",
            template=TEMPLATE,
            now=z("2025-01-01 00:00"),
            check_cron=recurrence.check,
        )
    return {e.field: e.message for e in caught.value.errors}


def run_clock(
    schedule: Schedule,
    start: datetime,
    end: datetime,
    step: timedelta,
    **options: object,
) -> tuple[Schedule, list[datetime]]:
    """A planner woken every ``step`` from ``start`` to ``end`` (a fake clock, no sleeping)."""
    created: list[datetime] = []
    now = start
    while now <= end:
        plan = plan_occurrences(schedule, now, cron_next, **options)  # type: ignore[arg-type]
        created.extend(plan.instants)
        schedule = plan.schedule
        now += step
    return schedule, created


# -- validation -------------------------------------------------------------------------------

VALID = {"key": "k", "source": "s", "cron": "0 * * * *"}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({**VALID, "cron": "61 * * * *"}, "cron", "bad minute field"),
        ({**VALID, "cron": "* * *"}, "cron", "has 3 fields"),
        ({**VALID, "cron": 5}, "cron", "must be a string"),
        ({**VALID, "cron": "0 " * 101}, "cron", "at most 200 characters"),
        ({**VALID, "timezone": "Mars/Olympus_Mons"}, "timezone", "unknown time zone"),
        ({**VALID, "timezone": "../../etc/passwd"}, "timezone", "unknown time zone"),
        ({**VALID, "timezone": 1}, "timezone", "IANA"),
        (
            {**VALID, "start_at": "2025-02-01T00:00:00Z", "end_at": "2025-01-31T23:59:59Z"},
            "end_at",
            "must not be before start_at",
        ),
        ({**VALID, "start_at": "2025-02-01T00:00:00"}, "start_at", "offset"),
        ({**VALID, "end_at": "tomorrow"}, "end_at", "ISO-8601"),
        ({"key": "k", "source": "s", "every_seconds": 0}, "every_seconds", "at least 1"),
        ({"key": "k", "source": "s", "every_seconds": 0.5}, "every_seconds", "at least 1"),
        ({"key": "k", "source": "s", "every_seconds": 1.5}, "every_seconds", "whole number"),
        ({"key": "k", "source": "s", "every_seconds": True}, "every_seconds", "whole number"),
        ({"key": "k", "source": "s", "every_seconds": "60"}, "every_seconds", "whole number"),
        ({**VALID, "every_seconds": 60}, "every_seconds", "not both"),
        ({"key": "k", "source": "s"}, "cron", "either cron or every_seconds"),
        ({**VALID, "key": "a/b"}, "key", "letters, digits"),
        ({**VALID, "key": "-a"}, "key", "letters, digits"),
        ({**VALID, "key": "k" * 201}, "key", "at most 200"),
        ({**VALID, "key": None}, "key", "is required"),
        ({**VALID, "source": ""}, "source", "blank"),
        ({**VALID, "max_runs": 0}, "max_runs", "at least 1"),
        ({**VALID, "missed_runs": "twice"}, "missed_runs", "skip, once, all"),
        ({**VALID, "paused": "yes"}, "paused", "true or false"),
    ],
)
def test_bad_input_names_the_field(fields: dict[str, object], field: str, message: str) -> None:
    errors = errors_of(fields)

    assert field in errors
    assert message in errors[field]


def test_every_bad_field_is_reported_at_once() -> None:
    errors = errors_of(
        {"key": "k", "source": "s", "cron": "nope", "timezone": "Nowhere/City", "max_runs": -1}
    )

    assert set(errors) == {"cron", "timezone", "max_runs"}


def test_defaults_are_utc_once_and_running_from_creation() -> None:
    now = z("2025-05-05 10:00")
    schedule = make(now, cron="0 * * * *")

    assert schedule.timezone == "UTC"
    assert schedule.missed_runs is MissedRuns.ONCE
    assert not schedule.paused
    assert schedule.not_before == now
    assert schedule.runs == 0


def test_a_start_in_the_future_is_where_it_begins() -> None:
    schedule = make(z("2025-05-05 10:00"), cron="0 * * * *", start_at="2025-05-06T00:30:00+02:00")

    assert next_instant(schedule, cron_next) == z("2025-05-05 23:00")


def test_start_at_in_the_past_does_not_create_runs_before_creation() -> None:
    now = z("2025-05-05 10:10")
    schedule = make(now, cron="0 * * * *", start_at="2025-01-01T00:00:00Z")

    plan = plan_occurrences(schedule, now, cron_next)

    assert plan.instants == ()
    assert plan.next_instant == z("2025-05-05 11:00")


# -- a fake clock across DST changes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "cron", "start", "end", "expected"),
    [
        pytest.param(
            "Europe/Berlin",
            "30 2 * * *",
            "2025-03-28 12:00",
            "2025-03-31 12:00",
            ["2025-03-29 01:30", "2025-03-30 01:00", "2025-03-31 00:30"],
            id="berlin spring forward: 02:30 runs at 03:00 CEST",
        ),
        pytest.param(
            "America/New_York",
            "30 1 * * *",
            "2025-10-31 12:00",
            "2025-11-03 12:00",
            ["2025-11-01 05:30", "2025-11-02 05:30", "2025-11-03 06:30"],
            id="new york fall back: the repeated 01:30 runs once",
        ),
        pytest.param(
            "Australia/Lord_Howe",
            "*/30 * * * *",
            "2025-04-05 12:50",
            "2025-04-05 17:00",
            [
                *("2025-04-05 13:00", "2025-04-05 13:30", "2025-04-05 14:00"),
                *("2025-04-05 14:30", "2025-04-05 15:30", "2025-04-05 16:00"),
                *("2025-04-05 16:30", "2025-04-05 17:00"),
            ],
            id="lord howe fall back by 30 minutes: the repeated 01:30 runs once",
        ),
    ],
)
def test_a_cron_schedule_on_a_fake_clock_runs_the_dst_instants(
    zone: str, cron: str, start: str, end: str, expected: list[str]
) -> None:
    schedule = make(z(start), cron=cron, timezone=zone)

    done, created = run_clock(schedule, z(start), z(end), timedelta(minutes=5))

    assert created == [z(e) for e in expected]
    assert done.runs == len(expected)
    assert done.last_instant == z(expected[-1])


def test_lookahead_creates_occurrences_before_they_are_due() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *")

    plan = plan_occurrences(
        schedule, z("2025-06-01 00:05"), cron_next, lookahead=timedelta(hours=1)
    )

    assert plan.on_time == tuple(
        z(t)
        for t in ("2025-06-01 00:15", "2025-06-01 00:30", "2025-06-01 00:45", "2025-06-01 01:00")
    )
    assert plan.next_instant == z("2025-06-01 01:15")


def test_a_plan_stops_at_its_limit_and_the_next_plan_goes_on() -> None:
    schedule = make(z("2025-06-01 00:00"), every_seconds=1)
    now = z("2025-06-01 00:00:30")

    first = plan_occurrences(schedule, now, cron_next, limit=20)
    second = plan_occurrences(first.schedule, now, cron_next, limit=20)

    assert len(first.on_time) == 20
    assert second.on_time[0] == first.on_time[-1] + timedelta(seconds=1)
    assert second.on_time[-1] == now
    assert len(first.on_time) + len(second.on_time) == 30


# -- max_runs, end_at, pause ------------------------------------------------------------------


def test_max_runs_stops_the_schedule_after_that_many() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *", max_runs=3)

    done, created = run_clock(
        schedule, z("2025-06-01 00:00"), z("2025-06-01 10:00"), timedelta(minutes=30)
    )

    assert created == [z("2025-06-01 00:00"), z("2025-06-01 01:00"), z("2025-06-01 02:00")]
    assert next_instant(done, cron_next) is None
    assert upcoming(done, z("2025-06-01 10:00"), cron_next, 5) == []


def test_max_runs_bounds_a_catch_up_too() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *", max_runs=4, missed_runs="all")

    plan = plan_occurrences(schedule, z("2025-06-01 05:00"), cron_next)

    assert len(plan.instants) == 4
    assert plan.next_instant is None


def test_end_at_is_the_last_instant_that_may_run() -> None:
    schedule = make(
        z("2025-06-01 00:00"), cron="0 * * * *", end_at="2025-06-01T03:00:00Z", max_runs=100
    )

    done, created = run_clock(
        schedule, z("2025-06-01 00:00"), z("2025-06-01 08:00"), timedelta(minutes=10)
    )

    assert created == [z(f"2025-06-01 0{h}:00") for h in range(4)]
    assert next_instant(done, cron_next) is None


def test_a_paused_schedule_creates_nothing_and_keeps_its_place() -> None:
    schedule = pause(make(z("2025-06-01 00:00"), cron="0 * * * *"))

    plan = plan_occurrences(schedule, z("2025-06-01 00:30"), cron_next)

    assert plan.instants == ()
    assert plan.schedule == schedule


def test_runs_missed_during_a_pause_follow_the_policy_on_resume() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *", missed_runs="once")
    schedule = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next).schedule
    paused, created = run_clock(
        pause(schedule), z("2025-06-01 00:30"), z("2025-06-01 05:30"), timedelta(minutes=30)
    )

    plan = plan_occurrences(resume(paused), z("2025-06-01 05:40"), cron_next)

    assert created == []
    assert plan.catch_up == (z("2025-06-01 05:00"),)


# -- missed runs after an outage --------------------------------------------------------------

OUTAGE_MISSED = [z("2025-06-01 00:15") + timedelta(minutes=15 * i) for i in range(12)]


def _after_outage(policy: str, **options: object) -> tuple[Plan, Plan]:
    """Every 15 minutes from 00:00; the planner runs at 00:00, then not until 03:05."""
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *", missed_runs=policy)
    before = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next)
    assert before.instants == (z("2025-06-01 00:00"),)
    back = plan_occurrences(before.schedule, z("2025-06-01 03:05"), cron_next, **options)  # type: ignore[arg-type]
    later = plan_occurrences(back.schedule, z("2025-06-01 03:15"), cron_next)
    return back, later


@pytest.mark.parametrize(
    ("policy", "options", "expected"),
    [
        ("skip", {}, []),
        ("once", {}, OUTAGE_MISSED[-1:]),
        ("all", {}, OUTAGE_MISSED),
        ("all", {"catch_up_cap": 5}, OUTAGE_MISSED[-5:]),
    ],
    ids=["skip: none", "once: the latest", "all: every one", "all: capped at the latest 5"],
)
def test_a_three_hour_outage_is_caught_up_by_policy(
    policy: str, options: dict[str, object], expected: list[datetime]
) -> None:
    back, later = _after_outage(policy, **options)

    assert back.missed
    assert list(back.catch_up) == expected
    assert back.on_time == ()
    assert back.schedule.runs == 1 + len(expected)
    # Back on time: the next instant runs as usual and nothing missed comes again.
    assert later.instants == (z("2025-06-01 03:15"),)
    assert not later.missed


def test_an_instant_late_by_less_than_the_grace_is_on_time_whatever_the_policy() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *", missed_runs="skip")
    now = z("2025-06-01 00:15:40")

    lenient = plan_occurrences(schedule, now, cron_next, grace=timedelta(minutes=1))
    strict = plan_occurrences(schedule, now, cron_next, grace=timedelta(seconds=30))

    # 00:00 is 15 minutes late: missed, and skipped. 00:15 is 40 s late.
    assert (lenient.catch_up, lenient.on_time) == ((), (z("2025-06-01 00:15"),))
    assert (strict.catch_up, strict.on_time) == ((), ())
    assert strict.next_instant == z("2025-06-01 00:30")


def test_a_long_pause_of_a_per_second_schedule_catches_up_without_walking_it() -> None:
    schedule = make(z("2025-01-01 00:00"), cron="* * * * * *", missed_runs="all")
    calls = 0

    def counting(expression: str, zone: str, after: datetime) -> datetime | None:
        nonlocal calls
        calls += 1
        return cron_next(expression, zone, after)

    plan = plan_occurrences(schedule, z("2025-12-31 00:00"), counting, catch_up_cap=3)

    end = z("2025-12-30 23:59")  # now - the 60 s grace
    assert plan.catch_up == tuple(end - timedelta(seconds=s) for s in (3, 2, 1))
    assert calls < 1000


# -- changes ------------------------------------------------------------------------------------


def test_a_new_cron_takes_effect_from_the_next_instant() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *", missed_runs="all")
    schedule = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next).schedule

    changed = update_schedule(
        schedule, {"cron": "30 * * * *"}, now=z("2025-06-01 05:10"), check_cron=recurrence.check
    )
    plan = plan_occurrences(changed, z("2025-06-01 05:10"), cron_next)

    # The new rule's 00:30 .. 04:30 were never due: nothing to catch up.
    assert plan.instants == ()
    assert not plan.missed
    assert plan.next_instant == z("2025-06-01 05:30")
    assert changed.runs == 1


def test_a_new_time_zone_takes_effect_from_the_next_instant() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 9 * * *")

    changed = update_schedule(
        schedule,
        {"timezone": "America/New_York"},
        now=z("2025-06-01 10:00"),
        check_cron=recurrence.check,
    )

    assert next_instant(changed, cron_next) == z("2025-06-01 13:00")


def test_other_changes_keep_the_schedule_in_place() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")
    schedule = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next).schedule

    changed = update_schedule(
        schedule,
        {"max_runs": 10, "end_at": None},
        now=z("2025-06-01 05:10"),
        check_cron=recurrence.check,
    )
    plan = plan_occurrences(changed, z("2025-06-01 05:10"), cron_next)

    assert changed.not_before == schedule.not_before
    assert plan.catch_up == (z("2025-06-01 05:00"),)


def test_switching_from_cron_to_an_interval_drops_the_cron() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")

    changed = update_schedule(
        schedule, {"every_seconds": 600}, now=z("2025-06-01 00:05"), check_cron=recurrence.check
    )

    assert changed.cron is None
    assert changed.every_seconds == 600


def test_an_update_is_checked_and_key_and_source_stay() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *", start_at="2025-06-02T00:00:00Z")

    with pytest.raises(ValidationFailed) as caught:
        update_schedule(
            schedule,
            {"key": "other", "end_at": "2025-06-01T12:00:00Z", "timezone": "Nope/Nope"},
            now=z("2025-06-01 00:05"),
            check_cron=recurrence.check,
        )

    fields = {e.field for e in caught.value.errors}
    assert fields == {"key", "end_at", "timezone"}


# -- intervals ----------------------------------------------------------------------------------


def test_an_interval_runs_in_absolute_time_across_a_dst_change() -> None:
    # Berlin springs forward at 01:00Z on 30 March 2025; an interval doesn't notice.
    schedule = make(
        z("2025-03-29 22:00"),
        every_seconds=3600,
        start_at="2025-03-29T23:00:00+01:00",
        timezone="Europe/Berlin",
    )

    assert upcoming(schedule, z("2025-03-29 22:00"), cron_next, 4) == [
        z("2025-03-29 22:00"),
        z("2025-03-29 23:00"),
        z("2025-03-30 00:00"),
        z("2025-03-30 01:00"),
    ]


def test_an_interval_without_a_start_first_runs_one_interval_after_creation() -> None:
    schedule = make(z("2025-06-01 00:00:00.250"), every_seconds=90)

    assert upcoming(schedule, z("2025-06-01 00:00"), cron_next, 3) == [
        z("2025-06-01 00:01:30.250"),
        z("2025-06-01 00:03:00.250"),
        z("2025-06-01 00:04:30.250"),
    ]


def test_an_interval_started_in_the_past_keeps_its_phase() -> None:
    schedule = make(z("2025-06-01 00:00:10"), every_seconds=60, start_at="2025-05-31T23:57:30Z")

    assert next_instant(schedule, cron_next) == z("2025-06-01 00:00:30")


# -- occurrences --------------------------------------------------------------------------------


def test_an_occurrence_is_named_by_its_schedule_and_instant() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")
    instant = z("2025-06-01 01:00")

    found = occurrence(schedule, instant)

    assert found.external_job_id == "schedule:nightly:2025-06-01T01:00:00Z"
    assert found.source == "billing"
    assert found.scheduled_at == instant
    assert found.dedup_key == ("billing", "schedule:nightly:2025-06-01T01:00:00Z", instant)
    assert found.event_id == occurrence_id("sched-1", instant)


def test_two_planners_with_the_same_schedule_create_the_same_events() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/5 * * * *")
    now, hour = z("2025-06-01 00:00"), timedelta(hours=1)

    one = [
        occurrence(schedule, i)
        for i in plan_occurrences(schedule, now, cron_next, lookahead=hour).instants
    ]
    two = [
        occurrence(schedule, i)
        for i in plan_occurrences(schedule, now, cron_next, lookahead=hour).instants
    ]
    store = {o.event_id: o for o in one + two}

    assert one == two
    assert len(store) == len(one) == 13


def test_the_longest_key_with_a_fractional_instant_fits_an_external_job_id() -> None:
    schedule = replace(make(z("2025-06-01 00:00"), cron="0 * * * *"), key="k" * 200)

    found = occurrence(schedule, z("2025-06-01 01:00:00.123456"))

    assert len(found.external_job_id) <= 255
    assert found.external_job_id.endswith(":2025-06-01T01:00:00.123456Z")


def test_instant_text_is_utc_with_z() -> None:
    berlin = datetime.fromisoformat("2025-06-01T03:00:00+02:00")

    assert instant_text(berlin) == "2025-06-01T01:00:00Z"


instants = st.datetimes(datetime(1990, 1, 1), datetime(2200, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@given(st.text(min_size=1, max_size=40), instants)
def test_an_occurrence_id_is_a_version_7_uuid_of_its_instant(
    schedule_id: str, instant: datetime
) -> None:
    text = occurrence_id(schedule_id, instant)
    value = uuid.UUID(text)
    millis = (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)

    assert str(value) == text
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == millis
    assert occurrence_id(schedule_id, instant) == text


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20), instants, instants)
def test_occurrence_ids_sort_by_time_and_differ_by_schedule(
    one: str, other: str, early: datetime, late: datetime
) -> None:
    if early > late:
        early, late = late, early
    if late - early >= timedelta(milliseconds=1):
        assert occurrence_id(one, early) < occurrence_id(other, late)
    if one != other:
        assert occurrence_id(one, early) != occurrence_id(other, early)


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    every=st.integers(1, 5000),
    offset=st.integers(-20_000, 20_000),
    span=st.integers(0, 200_000),
    count=st.integers(1, 30),
)
def test_latest_before_finds_the_latest_instants(
    every: int, offset: int, span: int, count: int
) -> None:
    anchor = z("2025-06-01 00:00")
    schedule = make(anchor, every_seconds=every, start_at=instant_text(anchor))
    rule = rule_of(schedule, cron_next)
    after = anchor + timedelta(seconds=offset)
    until = after + timedelta(seconds=span)
    everything = []
    instant = rule(after)
    while instant is not None and instant < until:
        everything.append(instant)
        instant = rule(instant)

    assert latest_before(rule, after, until, count) == everything[-count:]


@settings(max_examples=100, deadline=None)
@given(
    cron=st.sampled_from(["*/15 * * * *", "0 * * * *", "30 2 * * *", "*/20 * * * * *"]),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    steps=st.lists(st.integers(1, 3 * 3600), min_size=1, max_size=30),
    policy=st.sampled_from(list(MissedRuns)),
)
def test_a_planner_never_creates_an_instant_twice(
    cron: str, zone: str, steps: list[int], policy: MissedRuns
) -> None:
    now = z("2025-10-25 20:00")
    schedule = make(now, cron=cron, timezone=zone, missed_runs=policy.value)
    created: list[datetime] = []
    for step in steps:
        now += timedelta(seconds=step)
        plan = plan_occurrences(schedule, now, cron_next, lookahead=timedelta(seconds=30))
        created.extend(plan.instants)
        schedule = plan.schedule
        # On-time instants are exactly the rule's, from where the plan resumed.
        for a, b in zip(plan.on_time, plan.on_time[1:], strict=False):
            assert cron_next(cron, zone, a) == b

    assert created == sorted(set(created))
    assert schedule.runs == len(created)
    if policy is MissedRuns.SKIP:
        assert all(i >= z("2025-10-25 20:00") for i in created)


# -- updates, previews and ids, case by case ----------------------------------------------------


def test_a_fixed_field_changed_alone_is_refused_by_name() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")
    with pytest.raises(ValidationFailed) as caught:
        update_schedule(
            schedule, {"source": "other"}, now=z("2025-06-01 00:05"), check_cron=recurrence.check
        )
    assert [(e.field, e.message) for e in caught.value.errors] == [("source", "cannot be changed")]
    same = update_schedule(
        schedule, {"source": "billing"}, now=z("2025-06-01 00:05"), check_cron=recurrence.check
    )
    assert same.source == "billing"  # the same value is no change


def test_switching_from_an_interval_to_a_cron_drops_the_interval() -> None:
    schedule = make(z("2025-06-01 00:00"), every_seconds=600)
    changed = update_schedule(
        schedule, {"cron": "0 * * * *"}, now=z("2025-06-01 00:05"), check_cron=recurrence.check
    )
    assert (changed.cron, changed.every_seconds) == ("0 * * * *", None)


def test_giving_both_kinds_of_rule_at_once_is_refused() -> None:
    schedule = make(z("2025-06-01 00:00"), every_seconds=600)
    with pytest.raises(ValidationFailed):
        update_schedule(
            schedule,
            {"cron": "0 * * * *", "every_seconds": 60},
            now=z("2025-06-01 00:05"),
            check_cron=recurrence.check,
        )


def test_an_update_replaces_the_template_only_when_given_one() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")
    new_template = {**TEMPLATE, "destination": "https://example.com/other"}
    now = z("2025-06-01 00:05")
    kept = update_schedule(schedule, {"max_runs": 5}, now=now, check_cron=recurrence.check)
    assert kept.template == schedule.template
    replaced = update_schedule(
        schedule, {}, now=now, check_cron=recurrence.check, template=new_template
    )
    assert replaced.template == new_template
    assert replaced.cron == schedule.cron


def test_an_update_is_held_to_the_limits_given() -> None:
    schedule = make(z("2025-06-01 00:00"), every_seconds=600)
    with pytest.raises(ValidationFailed) as caught:
        update_schedule(
            schedule,
            {"every_seconds": 7200},
            now=z("2025-06-01 00:05"),
            check_cron=recurrence.check,
            limits=ScheduleLimits(max_every_seconds=3600),
        )
    assert [e.field for e in caught.value.errors] == ["every_seconds"]


def test_a_resumed_schedule_is_not_paused() -> None:
    schedule = pause(make(z("2025-06-01 00:00"), cron="0 * * * *"))
    assert schedule.paused is True
    assert resume(schedule).paused is False


def test_the_preview_of_a_cron_schedule_follows_its_cron_and_stops_at_its_end() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 */6 * * *", end_at="2025-06-02T06:00:00Z")
    preview = upcoming(schedule, z("2025-06-01 07:00"), cron_next, count=10)
    assert preview == [
        z("2025-06-01 12:00"),
        z("2025-06-01 18:00"),
        z("2025-06-02 00:00"),
        z("2025-06-02 06:00"),
    ]


def test_an_occurrence_is_scheduled_in_utc_whatever_zone_its_instant_comes_in() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")
    paris = datetime.fromisoformat("2025-06-01T03:00:00+02:00")
    found = occurrence(schedule, paris)
    assert found.scheduled_at.utcoffset() == timedelta(0)
    assert found.scheduled_at.isoformat() == "2025-06-01T01:00:00+00:00"
    assert found.event_id == occurrence_id("sched-1", z("2025-06-01 01:00"))


@pytest.mark.parametrize(
    ("schedule_id", "instant", "expected"),
    [
        ("sched-1", datetime(2030, 1, 1, tzinfo=UTC), "01b8dac5-b400-73f5-a22d-f3f6b3648166"),
        (
            "sched-2",
            datetime(2030, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
            "01b8dac5-b5f4-7176-9f4a-f2c14804b7d7",
        ),
    ],
)
def test_an_occurrence_id_never_changes_between_versions(
    schedule_id: str, instant: datetime, expected: str
) -> None:
    # Pinned: processes of two versions running side by side during an upgrade must derive
    # the same id for the same occurrence, or it would be created twice.
    assert occurrence_id(schedule_id, instant) == expected


@pytest.fixture
def machine_zone_ahead_of_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone set to UTC+05:30 (a POSIX rule: no zone data needed)."""
    monkeypatch.setenv("TZ", "XST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("machine_zone_ahead_of_utc")
def test_an_occurrence_is_named_and_scheduled_in_utc_whatever_the_machine_zone() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")
    paris = datetime.fromisoformat("2025-06-01T03:00:00+02:00")

    found = occurrence(schedule, paris)

    assert instant_text(paris) == "2025-06-01T01:00:00Z"
    assert found.external_job_id == "schedule:nightly:2025-06-01T01:00:00Z"
    assert found.scheduled_at.isoformat() == "2025-06-01T01:00:00+00:00"


def test_a_schedule_declared_paused_is_paused_until_changed() -> None:
    now = z("2025-06-01 00:00")
    schedule = make(now, cron="0 * * * *", paused=True)
    assert schedule.paused is True

    running = update_schedule(schedule, {"paused": False}, now=now, check_cron=recurrence.check)
    assert running.paused is False
    again = update_schedule(running, {"paused": True}, now=now, check_cron=recurrence.check)
    assert again.paused is True
