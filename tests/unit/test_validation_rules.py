"""The submission rules (timefuse.domain.validation) one by one: every refusal's exact field
and message as a client reads it in a 422, and each limit at its edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from timefuse.domain.validation import SubmissionLimits, ValidationFailed, build_event

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
NOT_ISO = "must be an ISO-8601 date-time with an offset"
CONTROL = "must not contain control characters"
SECONDS = "must be a number of seconds"
WINDOW = "must be between 0 and 60"
LIMITS = SubmissionLimits(
    max_external_job_id=8,
    max_retries_limit=5,
    past_grace_seconds=5.0,
    max_horizon_days=10,
    max_payload_bytes=16,
    max_window_seconds=60.0,
    max_backoff_seconds=100.0,
    max_http_timeout_seconds=30.0,
)


def fields(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "external_job_id": "job-1",
        "source": "billing",
        "scheduled_at": (NOW + timedelta(hours=1)).isoformat(),
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": b'{"a":1}',
    }
    base.update(overrides)
    return base


def errors_of(**overrides: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        build_event(fields(**overrides), event_id="e-1", now=NOW, limits=LIMITS)
    return {error.field: error.message for error in caught.value.errors}


def built(**overrides: Any) -> Any:
    return build_event(fields(**overrides), event_id="e-1", now=NOW, limits=LIMITS)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"external_job_id": None}, {"external_job_id": "is required"}),
        ({"external_job_id": 5}, {"external_job_id": "must be a string"}),
        ({"external_job_id": "  "}, {"external_job_id": "must not be blank"}),
        ({"external_job_id": "x" * 9}, {"external_job_id": "must be at most 8 characters"}),
        ({"external_job_id": "a\x00b"}, {"external_job_id": CONTROL}),
        ({"source": "a\u200bb"}, {"source": CONTROL}),
        ({"scheduled_at": None}, {"scheduled_at": "is required"}),
        ({"scheduled_at": 5}, {"scheduled_at": "must be an ISO-8601 string with an offset"}),
        ({"scheduled_at": "tomorrow"}, {"scheduled_at": NOT_ISO}),
        ({"scheduled_at": "2026-03-01T13:00:00"},
         {"scheduled_at": "must carry an offset (for example Z or +02:00)"}),
        ({"scheduled_at": "0001-01-01T00:00:00+03:00"},
         {"scheduled_at": "is outside the range of representable times"}),
        ({"scheduled_at": (NOW - timedelta(seconds=5.5)).isoformat()},
         {"scheduled_at": "is more than 5 s in the past"}),
        ({"scheduled_at": (NOW + timedelta(days=10, seconds=1)).isoformat()},
         {"scheduled_at": "is more than 10 days ahead"}),
        ({"payload": None}, {"payload": "is required"}),
        ({"payload": b" null "}, {"payload": "is required"}),
        ({"payload": "text"}, {"payload": "must be a JSON value"}),
        ({"payload": b'"' + b"x" * 15 + b'"'}, {"payload": "must be at most 16 bytes"}),
        ({"max_retries": "3"}, {"max_retries": "must be an integer"}),
        ({"max_retries": True}, {"max_retries": "must be an integer"}),
        ({"max_retries": -1}, {"max_retries": "must be between 0 and 5"}),
        ({"max_retries": 6}, {"max_retries": "must be between 0 and 5"}),
        ({"delivery_window_seconds": "1"}, {"delivery_window_seconds": SECONDS}),
        ({"delivery_window_seconds": False},
         {"delivery_window_seconds": SECONDS}),
        ({"delivery_window_seconds": -0.5}, {"delivery_window_seconds": WINDOW}),
        ({"delivery_window_seconds": 60.5}, {"delivery_window_seconds": WINDOW}),
        ({"retry_backoff_seconds": 101}, {"retry_backoff_seconds": "must be between 0 and 100"}),
        ({"retry_backoff_max_seconds": "1"}, {"retry_backoff_max_seconds": SECONDS}),
        ({"retry_backoff_max_seconds": 100.5},
         {"retry_backoff_max_seconds": "must be between 0 and 100"}),
        ({"retry_backoff_seconds": 10, "retry_backoff_max_seconds": 9.5},
         {"retry_backoff_max_seconds": "must not be below retry_backoff_seconds (10)"}),
        ({"callback_url": "ftp://example.com/x"}, {"callback_url": "must be an http(s) URL"}),
        ({"failure_callback_url": 5}, {"failure_callback_url": "must be a string"}),
        # http.body and http.timeout_seconds are bounded by the submission limits.
        ({"payload": None, "http": {"body": "x" * 17}},
         {"http.body": "must be at most 16 bytes"}),
        # A refused http.body still stands in for the payload: the client meant to send it,
        # so a missing payload isn't also blamed and a given one is still one too many.
        ({"payload": None, "http": {"body": 5}},
         {"http.body": "must be a string (text, or base64 bytes)"}),
        ({"http": {"body": "a\x00b"}},
         {"http.body": 'must not contain NUL characters (send such bytes as "base64")',
          "payload": "must be absent when http.body is given"}),
        # A misspelt body is no body: the payload is still required.
        ({"payload": None, "http": {"BODY": "x"}},
         {"http.BODY": "is not an http option", "payload": "is required"}),
        ({"http": {"timeout_seconds": 30.5}},
         {"http.timeout_seconds": "must be between 0.1 and 30"}),
        # Without a delivery type, http options are not also blamed on it.
        ({"delivery_type": None, "http": {"method": "PUT"}}, {"delivery_type": "is required"}),
        ({"delivery_type": 5, "http": {"method": "PUT"}}, {"delivery_type": "must be a string"}),
        ({"delivery_type": "kafka", "destination": "t", "http": {"method": "PUT"}},
         {"http": "applies to the http delivery type only"}),
    ],
)  # fmt: skip
def test_each_bad_field_is_refused_with_its_exact_message(
    overrides: dict[str, Any], expected: dict[str, str]
) -> None:
    assert errors_of(**overrides) == expected


def test_every_bad_field_is_named_in_one_refusal() -> None:
    assert errors_of(source=None, destination="", max_retries=9) == {
        "source": "is required",
        "destination": "must not be blank",
        "max_retries": "must be between 0 and 5",
    }


def test_the_refusals_text_names_each_field_with_its_message() -> None:
    # The text a batch's rejected item and an ingest dead letter give as their reason.
    with pytest.raises(ValidationFailed) as caught:
        built(source=None, destination="", max_retries=9)
    assert str(caught.value) == (
        "source: is required; destination: must not be blank; max_retries: must be between 0 and 5"
    )


@pytest.mark.parametrize(
    "url", ["http://example.com/done", "https://example.com/done", "HTTP://example.com/done"]
)
def test_http_and_https_callback_urls_are_accepted(url: str) -> None:
    event = built(callback_url=url, failure_callback_url=url)
    assert (event.callback_url, event.failure_callback_url) == (url, url)


def test_values_at_their_limits_are_accepted() -> None:
    event = built(
        external_job_id="x" * 8,
        scheduled_at=(NOW - timedelta(seconds=5)).isoformat(),
        payload=b'"' + b"x" * 14 + b'"',
        max_retries=5,
        delivery_window_seconds=60,
        retry_backoff_seconds=100,
        retry_backoff_max_seconds=100,
    )
    assert (event.external_job_id, event.max_retries) == ("x" * 8, 5)
    assert event.scheduled_at == NOW - timedelta(seconds=5)
    assert (event.delivery_window_seconds, event.retry_backoff_seconds) == (60.0, 100.0)
    assert built(
        scheduled_at=(NOW + timedelta(days=10)).isoformat()
    ).scheduled_at == NOW + timedelta(days=10)
    assert built(max_retries=0, retry_backoff_seconds=0).max_retries == 0
    at_limits = built(payload=None, http={"body": "x" * 16, "timeout_seconds": 30})
    assert at_limits.http == {"body": "x" * 16, "timeout_seconds": 30.0}


def test_an_instant_with_an_offset_is_stored_in_utc_and_the_type_lower_case() -> None:
    event = built(scheduled_at="2026-03-01T15:00:00+02:00", delivery_type="HTTP")
    assert event.scheduled_at == datetime(2026, 3, 1, 13, tzinfo=UTC)
    assert event.delivery_type == "http"


def test_absent_optional_fields_take_their_defaults() -> None:
    event = built()
    assert event.max_retries == 3
    assert event.delivery_window_seconds == 0.0
    assert (event.retry_backoff_seconds, event.retry_backoff_max_seconds) == (None, None)
    assert (event.callback_url, event.failure_callback_url) == (None, None)
