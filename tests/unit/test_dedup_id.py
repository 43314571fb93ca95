"""The id of a submitted event comes from its dedup key: same key, same id; another key, another."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.dedup import dedup_event_id
from timefuse.domain.event import is_event_id
from timefuse.domain.validation import SubmissionLimits, build_event

AT = datetime(2031, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def test_the_same_key_gives_the_same_id_however_the_instant_is_written() -> None:
    berlin = AT.astimezone(timezone(timedelta(hours=2)))
    assert dedup_event_id("billing", "invoice-42", AT) == dedup_event_id(
        "billing", "invoice-42", berlin
    )


@pytest.mark.parametrize(
    "other",
    [
        ("shipping", "invoice-42", AT),
        ("billing", "invoice-43", AT),
        ("billing", "invoice-42", AT + timedelta(microseconds=1)),
        # The parts are kept apart: moving a character across the boundary is another key.
        ("billin", "ginvoice-42", AT),
    ],
)
def test_any_other_key_gives_another_id(other: tuple[str, str, datetime]) -> None:
    assert dedup_event_id("billing", "invoice-42", AT) != dedup_event_id(*other)


def test_the_id_is_a_uuid7_whose_time_is_the_scheduled_instant() -> None:
    value = uuid.UUID(dedup_event_id("billing", "invoice-42", AT))
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    millis = value.int >> 80
    assert millis == int(AT.timestamp() * 1000)


def test_text_the_store_would_replace_gives_the_id_of_what_it_stores() -> None:
    # A lone surrogate can't be stored: it becomes U+FFFD, so both spellings are one key.
    replaced = dedup_event_id("billing", "job-\ufffd", AT)
    assert dedup_event_id("billing", "job-\ud800", AT) == replaced


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^scheduled_at must be timezone-aware$"):
        dedup_event_id("billing", "job", datetime(2031, 1, 1))


@pytest.mark.parametrize(
    ("source", "external_job_id", "expected"),
    [
        ("", "invoice-42", "01c172d9-6a93-7c6a-8a71-42c747908207"),
        ("billing", "", "01c172d9-6a93-785a-9ec8-3ecca04e7d43"),
    ],
    ids=["empty source", "empty external_job_id"],
)
def test_an_empty_part_of_the_key_is_read_as_empty_text(
    source: str, external_job_id: str, expected: str
) -> None:
    # Submissions never have one (both are required), but the id of such a key is fixed too:
    # the empty part stays empty in the hashed key, like any other text.
    assert dedup_event_id(source, external_job_id, AT) == expected


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_every_key_gives_a_well_formed_event_id(source: str, external: str) -> None:
    event_id = dedup_event_id(source, external, AT)
    assert is_event_id(event_id)
    assert event_id == dedup_event_id(source, external, AT)


def test_a_submission_is_stored_under_the_same_id_and_due_time_in_every_version() -> None:
    # Ids are the dedup key's: a submission sent again after an upgrade, or to another API
    # process of another version, must find the event stored before. These values were made
    # by the code of earlier versions; a change that moves them re-keys every stored event.
    event = build_event(
        {
            "external_job_id": "invoice-42",
            "source": "billing",
            "scheduled_at": "2031-03-04T07:06:07.123456+02:00",
            "delivery_type": "http",
            "destination": "https://receiver.example/hook",
            "payload": b"{}",
            "delivery_window_seconds": 600,
        },
        event_id=None,
        now=datetime(2031, 3, 4, tzinfo=UTC),
        limits=SubmissionLimits(),
    )
    assert event.id == "01c172d9-6a93-77a5-931e-8dc81a5b385d"
    assert event.next_attempt_at.isoformat() == "2031-03-04T05:15:03.620891+00:00"


@pytest.mark.parametrize(
    ("scheduled_at", "expected"),
    [
        # Reachable with a past grace of decades (TIMEFUSE_PAST_GRACE_SECONDS has no upper
        # bound): the time bits are the instant's milliseconds modulo 2**48, as for any other.
        (datetime(1960, 1, 1, tzinfo=UTC), "ffb683a1-3400-7d66-9c8e-567607467d81"),
        (
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            "e677d21f-dbff-76d9-8aa3-035e6a1d2d05",
        ),
    ],
    ids=["before 1970", "the last instant"],
)
def test_the_ids_of_the_first_and_last_instants_are_fixed(
    scheduled_at: datetime, expected: str
) -> None:
    assert dedup_event_id("billing", "invoice-7", scheduled_at) == expected
