"""The event a change makes of a PENDING one (timefuse.domain.amend), field by field."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from timefuse.domain.amend import CHANGEABLE, amend_event, check_change_fields
from timefuse.domain.destination import destination_key
from timefuse.domain.event import Event
from timefuse.domain.spread import first_due_time
from timefuse.domain.validation import FieldError, SubmissionLimits, ValidationFailed
from timefuse.testing.factories import make_event

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = SubmissionLimits()


def pending(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "scheduled_at": NOW + timedelta(hours=1),
        "created_at": NOW - timedelta(hours=1),
        "updated_at": NOW - timedelta(hours=1),
    }
    fields.update(overrides)
    return make_event(**fields)


def failed_fields(
    current: Event, changes: dict[str, object], limits: SubmissionLimits
) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as raised:
        amend_event(current, changes, now=NOW, limits=limits)
    return raised.value.errors


def test_every_changeable_field_takes_the_value_the_change_gives() -> None:
    current = pending()
    changes: dict[str, object] = {
        "destination": "https://Other.Example:443/in",
        "http": {"method": "PUT"},
        "delivery_window_seconds": 60.0,
        "retry_backoff_seconds": 2.0,
        "retry_backoff_max_seconds": 30.0,
        "callback_url": "https://cb.example/done",
        "failure_callback_url": "https://cb.example/failed",
    }

    changed = amend_event(current, changes, now=NOW, limits=LIMITS)

    assert changed.destination == "https://Other.Example:443/in"
    assert changed.destination_key == destination_key("http", "https://Other.Example:443/in")
    assert changed.destination_key != current.destination_key
    assert changed.http == {"method": "PUT"}
    assert changed.payload == current.payload
    assert changed.delivery_window_seconds == 60.0
    assert (changed.retry_backoff_seconds, changed.retry_backoff_max_seconds) == (2.0, 30.0)
    assert changed.callback_url == "https://cb.example/done"
    assert changed.failure_callback_url == "https://cb.example/failed"
    # A new window places the event afresh in it, by its own id.
    assert changed.next_attempt_at == first_due_time(current.id, current.scheduled_at, 60.0)
    assert changed.next_attempt_at > current.scheduled_at
    assert (changed.id, changed.updated_at, changed.version) == (current.id, NOW, 2)
    assert changed.created_at == current.created_at


def test_fields_a_change_does_not_name_are_kept() -> None:
    current = pending(
        delivery_window_seconds=30.0,
        next_attempt_at=NOW + timedelta(hours=1, seconds=7),
        retry_backoff_seconds=3.0,
        retry_backoff_max_seconds=40.0,
        callback_url="https://cb.example/done",
        failure_callback_url="https://cb.example/failed",
    )

    changed = amend_event(current, {"max_retries": 5}, now=NOW, limits=LIMITS)

    assert changed.max_retries == 5
    assert changed.delivery_window_seconds == 30.0
    assert changed.next_attempt_at == current.next_attempt_at  # timing unchanged: kept
    assert (changed.retry_backoff_seconds, changed.retry_backoff_max_seconds) == (3.0, 40.0)
    assert changed.callback_url == "https://cb.example/done"
    assert changed.failure_callback_url == "https://cb.example/failed"
    assert (changed.payload, changed.http) == (current.payload, current.http)


def test_each_change_is_kept_in_the_history_the_latest_last() -> None:
    first = amend_event(pending(), {"max_retries": 5}, now=NOW, limits=LIMITS)
    later = NOW + timedelta(minutes=1)

    second = amend_event(first, {"payload": b"[1]", "max_retries": 6}, now=later, limits=LIMITS)

    assert second.extra["changes"] == [
        {"version": 2, "at": NOW.isoformat(), "fields": ["max_retries"]},
        {"version": 3, "at": later.isoformat(), "fields": ["max_retries", "payload"]},
    ]


def test_a_new_http_without_a_body_keeps_the_payload() -> None:
    current = pending(payload=b'{"v": 1}')

    changed = amend_event(current, {"http": {"method": "PUT"}}, now=NOW, limits=LIMITS)

    assert (changed.payload, changed.http) == (b'{"v": 1}', {"method": "PUT"})


def test_an_http_body_and_a_payload_in_one_change_are_refused() -> None:
    errors = failed_fields(pending(), {"http": {"body": "<a/>"}, "payload": b"[1]"}, LIMITS)

    assert errors == [FieldError("payload", "must be absent when http.body is given")]


def test_a_change_that_does_not_touch_the_body_keeps_it() -> None:
    current = pending(payload=b"null", http={"method": "PUT", "body": "<a/>"})

    changed = amend_event(current, {"max_retries": 1}, now=NOW, limits=LIMITS)

    assert changed.http == {"method": "PUT", "body": "<a/>"}
    assert changed.max_retries == 1


def test_a_new_payload_drops_a_base64_body_with_its_encoding() -> None:
    current = pending(
        payload=b"null", http={"method": "PUT", "body": "aGk=", "body_encoding": "base64"}
    )

    changed = amend_event(current, {"payload": b"[1]"}, now=NOW, limits=LIMITS)

    assert (changed.payload, changed.http) == (b"[1]", {"method": "PUT"})


def test_a_body_encoding_without_a_body_is_refused_even_with_a_new_payload() -> None:
    changes: dict[str, object] = {"payload": b"[1]", "http": {"body_encoding": "text"}}

    errors = failed_fields(pending(), changes, LIMITS)

    assert errors == [FieldError("http.body_encoding", "is only meaningful with http.body")]


def test_a_retrying_event_due_in_the_past_may_still_change_other_fields() -> None:
    due = NOW - timedelta(hours=1)
    current = pending(scheduled_at=due, next_attempt_at=NOW + timedelta(seconds=30))

    changed = amend_event(current, {"max_retries": 4}, now=NOW, limits=LIMITS)

    assert (changed.scheduled_at, changed.next_attempt_at) == (due, current.next_attempt_at)
    assert changed.max_retries == 4


def test_a_new_time_must_lie_ahead_of_now_not_of_the_old_time() -> None:
    current = pending(scheduled_at=NOW - timedelta(hours=1))
    new_time = (NOW - timedelta(minutes=30)).isoformat()

    errors = failed_fields(current, {"scheduled_at": new_time}, LIMITS)

    assert errors == [FieldError("scheduled_at", "is more than 5 s in the past")]


def test_only_the_changed_fields_errors_are_named_when_there_are_any() -> None:
    # An event accepted under looser limits: its unchanged max_retries breaks today's.
    current = pending(max_retries=8)
    tight = SubmissionLimits(max_retries_limit=5)
    changes: dict[str, object] = {"scheduled_at": "tomorrow", "http": {"headers": {"Host": "x"}}}

    errors = failed_fields(current, changes, tight)

    assert sorted(e.field for e in errors) == ["http.headers.Host", "scheduled_at"]


def test_an_error_of_a_changed_nested_field_alone_is_named() -> None:
    current = pending(max_retries=8)
    tight = SubmissionLimits(max_retries_limit=5)

    errors = failed_fields(current, {"http": {"headers": {"Host": "x"}}}, tight)

    assert [e.field for e in errors] == ["http.headers.Host"]


def test_errors_of_unchanged_fields_are_named_when_the_change_itself_is_sound() -> None:
    current = pending(max_retries=8)
    tight = SubmissionLimits(max_retries_limit=5)

    errors = failed_fields(current, {"payload": b"[1]"}, tight)

    assert [e.field for e in errors] == ["max_retries"]
    assert errors[0].message


def test_fields_a_change_may_not_name_are_refused_with_their_reason() -> None:
    errors = check_change_fields({"source": "x", "max_retry": 1, "payload": b"[1]"})

    assert errors == [
        FieldError("source", "can't be changed: it identifies the event"),
        FieldError("max_retry", "is not a field of an event that can be changed"),
    ]


def test_an_empty_change_names_the_fields_that_can_change() -> None:
    assert check_change_fields({}) == [
        FieldError("body", "names no field to change (" + ", ".join(CHANGEABLE) + ")")
    ]
    assert "(scheduled_at, destination, payload, " in check_change_fields({})[0].message


def test_amend_refuses_a_fixed_field_before_building_anything() -> None:
    current = replace(pending(), external_job_id="orders/1")

    errors = failed_fields(current, {"external_job_id": "orders/2"}, LIMITS)

    assert errors == [FieldError("external_job_id", "can't be changed: it identifies the event")]
