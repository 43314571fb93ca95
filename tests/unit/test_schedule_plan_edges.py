"""Planning a schedule at its edges: an instant exactly at the grace, runs running out during
an outage, an end inside an outage, a paused schedule's next instant, and plans that must
leave a schedule exactly where it was."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from timefuse.adapters.cron import CronRecurrence
from timefuse.domain.schedule import (
    Plan,
    Schedule,
    build_schedule,
    pause,
    plan_occurrences,
    update_schedule,
)

recurrence = CronRecurrence()
cron_next = recurrence.next_after
TEMPLATE = {"delivery_type": "http", "destination": "https://example.com/hook", "payload": {}}
GRACE = timedelta(seconds=60)


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make(now: datetime, **fields: object) -> Schedule:
    body: dict[str, object] = {"key": "nightly", "source": "billing", **fields}
    return build_schedule(
        body, schedule_id="sched-1", template=TEMPLATE, now=now, check_cron=recurrence.check
    )


def test_a_plan_before_the_first_instant_leaves_the_schedule_as_it_was() -> None:
    schedule = make(z("2025-06-01 00:05"), cron="*/15 * * * *")

    plan = plan_occurrences(schedule, z("2025-06-01 00:10"), cron_next, grace=GRACE)

    assert plan == Plan((), (), schedule, z("2025-06-01 00:15"), missed=False)


def test_an_instant_late_by_exactly_the_grace_is_on_time() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *", missed_runs="skip")

    plan = plan_occurrences(schedule, z("2025-06-01 00:01"), cron_next, grace=GRACE)

    moved = replace(schedule, runs=1, last_instant=z("2025-06-01 00:00"))
    assert plan == Plan((), (z("2025-06-01 00:00"),), moved, z("2025-06-01 00:15"), missed=False)


def test_after_an_outage_the_instant_exactly_at_the_grace_runs_on_time() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *", missed_runs="once")
    before = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next, grace=GRACE)

    # Back at 03:16: 03:15 is late by exactly the grace, 03:00 by more.
    back = plan_occurrences(before.schedule, z("2025-06-01 03:16"), cron_next, grace=GRACE)

    assert back.missed
    assert back.catch_up == (z("2025-06-01 03:00"),)
    assert back.on_time == (z("2025-06-01 03:15"),)
    assert back.next_instant == z("2025-06-01 03:30")


def test_the_last_run_left_after_an_outage_is_the_latest_missed_instant() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *", max_runs=2, missed_runs="once")
    before = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next)

    back = plan_occurrences(before.schedule, z("2025-06-01 03:05"), cron_next)

    assert back.catch_up == (z("2025-06-01 03:00"),)
    assert back.on_time == ()
    assert back.next_instant is None
    assert back.schedule.runs == 2


def test_a_schedule_out_of_runs_plans_nothing_and_stays_where_it_was() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="*/15 * * * *", max_runs=1)
    done = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next).schedule

    later = plan_occurrences(done, z("2025-06-01 03:05"), cron_next)

    assert later == Plan((), (), done, None, missed=False)


def test_runs_given_back_to_a_finished_schedule_catch_up_what_it_missed_by_policy() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *", max_runs=1, missed_runs="once")
    done = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next).schedule
    for hour in range(1, 4):
        done = plan_occurrences(done, z(f"2025-06-01 0{hour}:30"), cron_next).schedule

    more = update_schedule(
        done, {"max_runs": 10}, now=z("2025-06-01 03:40"), check_cron=recurrence.check
    )
    plan = plan_occurrences(more, z("2025-06-01 03:40"), cron_next)

    # 01:00 to 03:00 passed while it had no run left: missed, and "once" keeps the latest.
    assert plan.missed
    assert plan.catch_up == (z("2025-06-01 03:00"),)
    assert plan.next_instant == z("2025-06-01 04:00")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("once", ["2025-06-01 03:00"]),
        ("all", ["2025-06-01 01:00", "2025-06-01 02:00", "2025-06-01 03:00"]),
    ],
)
def test_an_end_inside_an_outage_bounds_the_catch_up(policy: str, expected: list[str]) -> None:
    schedule = make(
        z("2025-06-01 00:00"), cron="0 * * * *", end_at="2025-06-01T03:00:00Z", missed_runs=policy
    )
    before = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next)

    back = plan_occurrences(before.schedule, z("2025-06-01 05:30"), cron_next)

    assert back.catch_up == tuple(z(e) for e in expected)
    assert back.on_time == ()
    assert back.next_instant is None


def test_a_paused_schedule_still_names_its_next_instant() -> None:
    schedule = make(z("2025-06-01 00:00"), cron="0 * * * *")
    ran = plan_occurrences(schedule, z("2025-06-01 00:00"), cron_next).schedule
    paused = pause(ran)

    plan = plan_occurrences(paused, z("2025-06-01 03:30"), cron_next)

    # Nothing is created, but the schedule is not over: its next instant (missed) is 01:00.
    assert plan == Plan((), (), paused, z("2025-06-01 01:00"))
