from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timefuse.domain.event import is_event_id, new_event_id
from timefuse.domain.status import EventStatus
from timefuse.domain.validation import SubmissionLimits, ValidationFailed, build_event

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LIMITS = SubmissionLimits()


def valid(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "external_job_id": "job-1",
        "source": "billing",
        "scheduled_at": "2026-06-01T13:00:00+01:00",
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": b'{"a": 1}',
        "max_retries": 3,
    }
    fields.update(overrides)
    return fields


def build(**overrides: object) -> object:
    return build_event(valid(**overrides), event_id=new_event_id(NOW), now=NOW, limits=LIMITS)


def fields_in_error(**overrides: object) -> set[str]:
    with pytest.raises(ValidationFailed) as caught:
        build(**overrides)
    return {error.field for error in caught.value.errors}


def test_builds_a_pending_event_due_at_its_scheduled_time_in_utc() -> None:
    event = build_event(valid(), event_id=new_event_id(NOW), now=NOW, limits=LIMITS)
    assert event.status is EventStatus.PENDING
    assert event.scheduled_at == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert event.next_attempt_at == event.scheduled_at
    assert event.payload == b'{"a": 1}'
    assert (event.attempts, event.retry_count, event.max_retries) == (0, 0, 3)


def test_max_retries_defaults_to_three() -> None:
    fields = valid()
    del fields["max_retries"]
    assert build_event(fields, event_id="x", now=NOW, limits=LIMITS).max_retries == 3


def test_a_non_http_destination_is_keyed_by_its_delivery_type_in_lower_case() -> None:
    fields = valid(delivery_type="Kafka", destination="orders.created")
    event = build_event(fields, event_id="e1", now=NOW, limits=LIMITS)

    assert event.delivery_type == "kafka"
    assert event.destination_key == "kafka:orders.created"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"external_job_id": None}, "external_job_id"),
        ({"external_job_id": ""}, "external_job_id"),
        ({"external_job_id": "x" * 256}, "external_job_id"),
        ({"external_job_id": "a\nb"}, "external_job_id"),
        ({"external_job_id": 12}, "external_job_id"),
        ({"source": "s" * 101}, "source"),
        ({"source": "  "}, "source"),
        ({"destination": "d" * 2049}, "destination"),
        ({"delivery_type": None}, "delivery_type"),
        ({"scheduled_at": None}, "scheduled_at"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"scheduled_at": "2026-06-01T13:00:00"}, "scheduled_at"),
        ({"scheduled_at": "2026-06-01T11:59:54Z"}, "scheduled_at"),
        ({"scheduled_at": "2036-06-03T00:00:00Z"}, "scheduled_at"),
        ({"scheduled_at": 1234}, "scheduled_at"),
        ({"scheduled_at": "0001-01-01T00:00:00+03:04"}, "scheduled_at"),
        ({"scheduled_at": "9999-12-31T23:59:59-05:00"}, "scheduled_at"),
        ({"payload": None}, "payload"),
        ({"payload": b"null"}, "payload"),
        ({"payload": b"1" * (LIMITS.max_payload_bytes + 1)}, "payload"),
        ({"max_retries": 11}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"max_retries": "3"}, "max_retries"),
        ({"delivery_window_seconds": -5}, "delivery_window_seconds"),
        ({"retry_backoff_seconds": "fast"}, "retry_backoff_seconds"),
        (
            {"retry_backoff_seconds": 10, "retry_backoff_max_seconds": 9.5},
            "retry_backoff_max_seconds",
        ),
        (
            {"retry_backoff_seconds": 0.5, "retry_backoff_max_seconds": 0},
            "retry_backoff_max_seconds",
        ),
    ],
)
def test_rejects_a_bad_field_by_name(overrides: dict[str, object], field: str) -> None:
    assert fields_in_error(**overrides) == {field}


def test_a_backoff_cap_below_the_base_says_which_base() -> None:
    with pytest.raises(ValidationFailed) as caught:
        build(retry_backoff_seconds=30, retry_backoff_max_seconds=10)
    [error] = caught.value.errors
    assert error.message == "must not be below retry_backoff_seconds (30)"


@pytest.mark.parametrize(
    ("base", "cap"), [(10, 10), (1, 3600), (None, 0.5), (30, None), (None, None)]
)
def test_a_backoff_cap_at_or_above_the_base_or_alone_is_accepted(
    base: float | None, cap: float | None
) -> None:
    event = build_event(
        valid(retry_backoff_seconds=base, retry_backoff_max_seconds=cap),
        event_id="e1",
        now=NOW,
        limits=LIMITS,
    )
    assert (event.retry_backoff_seconds, event.retry_backoff_max_seconds) == (base, cap)


def test_reports_every_bad_field_at_once() -> None:
    assert fields_in_error(source=None, max_retries=99, scheduled_at="x") == {
        "source",
        "max_retries",
        "scheduled_at",
    }


def test_accepts_a_time_within_the_grace_period() -> None:
    assert build(scheduled_at="2026-06-01T11:59:56Z") is not None


def test_a_delivery_window_moves_the_due_time_within_the_window() -> None:
    event = build_event(valid(delivery_window_seconds=60), event_id="e1", now=NOW, limits=LIMITS)
    offset = (event.next_attempt_at - event.scheduled_at).total_seconds()
    assert 0 <= offset < 60
    again = build_event(valid(delivery_window_seconds=60), event_id="e1", now=NOW, limits=LIMITS)
    assert again.next_attempt_at == event.next_attempt_at


@given(st.integers(min_value=0, max_value=2**40))
def test_event_ids_are_uuids_ordered_by_time(millis: int) -> None:
    earlier = datetime.fromtimestamp(millis / 1000, UTC)
    later = earlier + timedelta(milliseconds=1)
    first, second = new_event_id(earlier), new_event_id(later)
    assert is_event_id(first)
    assert first < second


@given(st.text(max_size=40))
def test_validation_never_crashes_on_arbitrary_text(text: str) -> None:
    for name in ("external_job_id", "source", "scheduled_at", "destination", "delivery_type"):
        errors = None
        try:
            build(**{name: text})
        except ValidationFailed as exc:
            errors = exc.errors
        assert errors is None or len(errors) == 1
