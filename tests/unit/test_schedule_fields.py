"""A schedule's fields as a client sends them: each refusal by exact field and message, each
limit at its edge, and the values an accepted declaration reads back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from timefuse.adapters.cron import CronRecurrence
from timefuse.domain.schedule_fields import (
    MissedRuns,
    ScheduleFields,
    ScheduleLimits,
    parse_schedule_fields,
)
from timefuse.domain.validation import ValidationFailed

check_cron = CronRecurrence().check
VALID: dict[str, object] = {"key": "nightly", "source": "billing", "cron": "0 * * * *"}


def parsed(fields: Mapping[str, object], limits: ScheduleLimits | None = None) -> ScheduleFields:
    return parse_schedule_fields(fields, check_cron=check_cron, limits=limits)


def refusals(
    fields: Mapping[str, object], limits: ScheduleLimits | None = None
) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        parsed(fields, limits)
    return [(error.field, error.message) for error in caught.value.errors]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"key": None}, ("key", "is required")),
        ({"key": 5}, ("key", "must be a string")),
        ({"key": "a/b"}, ("key", "may hold only letters, digits and . _ - :")),
        ({"key": "k" * 201}, ("key", "must be at most 200 characters")),
        ({"source": None}, ("source", "is required")),
        ({"source": ["billing"]}, ("source", "must be a string")),
        ({"source": "   "}, ("source", "must not be blank")),
        ({"source": "s" * 101}, ("source", "must be at most 100 characters")),
        # Cc (a control character) and Cf (an invisible format character) alike.
        ({"source": "bill\x00ing"}, ("source", "must not contain control characters")),
        ({"source": "bill\x7fing"}, ("source", "must not contain control characters")),
        ({"source": "bill\u200bing"}, ("source", "must not contain control characters")),
        ({"source": "bill\u202eing"}, ("source", "must not contain control characters")),
        ({"cron": None}, ("cron", "either cron or every_seconds is required")),
        ({"cron": 5}, ("cron", "must be a string")),
        ({"timezone": 1}, ("timezone", "must be an IANA time zone name")),
        (
            {"timezone": "Mars/Olympus_Mons"},
            ("timezone", "unknown time zone 'Mars/Olympus_Mons' (an IANA name, e.g. UTC)"),
        ),
        (
            {"start_at": "2025-02-01T00:00:00Z", "end_at": "2025-01-31T23:59:59Z"},
            ("end_at", "must not be before start_at"),
        ),
        ({"paused": "yes"}, ("paused", "must be true or false")),
        ({"paused": 1}, ("paused", "must be true or false")),
    ],
)
def test_each_bad_field_is_refused_by_name_and_exact_message(
    changes: dict[str, object], expected: tuple[str, str]
) -> None:
    assert refusals({**VALID, **changes}) == [expected]


def test_an_unknown_zone_is_quoted_up_to_64_characters() -> None:
    name = "Z" * 100

    assert refusals({**VALID, "timezone": name}) == [
        ("timezone", f"unknown time zone {'Z' * 64!r} (an IANA name, e.g. UTC)")
    ]


@pytest.mark.parametrize(("field", "limit"), [("key", 200), ("source", 100)])
def test_a_name_of_exactly_its_limit_is_accepted(field: str, limit: int) -> None:
    fields = parsed({**VALID, field: "k" * limit})

    assert getattr(fields, field) == "k" * limit


def test_a_cron_of_exactly_its_limit_is_checked_and_one_longer_is_refused() -> None:
    cron = "0 0 1 1 *"

    assert parsed({**VALID, "cron": cron}, ScheduleLimits(max_cron=len(cron))).cron == cron
    assert refusals({**VALID, "cron": cron}, ScheduleLimits(max_cron=len(cron) - 1)) == [
        ("cron", f"must be at most {len(cron) - 1} characters")
    ]


def test_an_end_at_equal_to_start_at_is_one_instant_both_inclusive() -> None:
    instant = "2025-02-01T00:00:00Z"

    fields = parsed({**VALID, "start_at": instant, "end_at": instant})

    assert fields.start_at == fields.end_at == datetime(2025, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "paused"),
    [({}, False), ({"paused": None}, False), ({"paused": False}, False), ({"paused": True}, True)],
)
def test_paused_is_false_unless_given_true(given: dict[str, object], paused: bool) -> None:
    fields = parsed({**VALID, **given})

    assert fields.paused is paused


def test_an_accepted_declaration_reads_back_every_field() -> None:
    fields = parsed(
        {
            "key": "nightly.run:1",
            "source": "billing",
            "cron": " 30 2 * * * ",
            "timezone": "Europe/Berlin",
            "start_at": "2025-01-01T00:00:00+01:00",
            "end_at": "2026-01-01T00:00:00Z",
            "max_runs": 10,
            "missed_runs": "all",
            "paused": True,
        }
    )

    assert fields == ScheduleFields(
        key="nightly.run:1",
        source="billing",
        cron="30 2 * * *",
        every_seconds=None,
        timezone="Europe/Berlin",
        start_at=datetime(2024, 12, 31, 23, tzinfo=UTC),
        end_at=datetime(2026, 1, 1, tzinfo=UTC),
        max_runs=10,
        missed_runs=MissedRuns.ALL,
        paused=True,
    )
