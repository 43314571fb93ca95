"""Per-event HTTP options: the rules a submission's ``http`` object meets, and its answers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_api_harness import EVENTS, Harness, error_fields, event_json, running_api
from timefuse.adapters.kafka.envelope import decode_event, encode_event
from timefuse.domain.http_options import HttpLimits, check_options, read_options
from timefuse.domain.validation import SubmissionLimits, ValidationFailed, build_event

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def build(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "external_job_id": "job-1",
        "source": "billing",
        "scheduled_at": (NOW + timedelta(hours=1)).isoformat(),
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": b'{"a":1}',
    }
    fields.update(overrides)
    return build_event(
        {k: v for k, v in fields.items() if v is not ...},
        event_id="0190f0f0-0000-7000-8000-000000000001",
        now=NOW,
        limits=SubmissionLimits(),
    )


def errors_of(**overrides: Any) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        build(**overrides)
    return {error.field: error.message for error in caught.value.errors}


@pytest.mark.parametrize(
    "name",
    [
        "Host", "content-length", "Content-Type", "Transfer-Encoding", "Connection",
        "Upgrade", "TE", "Authorization", "Cookie", "webhook-signature", "Webhook-Id",
        "timefuse-attempt",
    ],
)  # fmt: skip
def test_a_forbidden_header_is_refused_by_name(name: str) -> None:
    errors = errors_of(http={"headers": {name: "x"}})
    assert f"http.headers.{name}" in errors
    assert errors[f"http.headers.{name}"].startswith("may not be set")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Bad Name": "x"}, "not a valid header name"),
        ({"X-A": "line\r\nInjected: 1"}, "visible ASCII"),
        ({"X-A": 5}, "must be a string"),
        ({"X-A": "a", "x-a": "b"}, "given twice"),
        ({"X-A": "v" * 5000}, "at most 4096"),
        ({f"X-{n}": "v" for n in range(33)}, "at most 32 headers"),
        (["X-A", "b"], "JSON object"),
    ],
)
def test_bad_headers_are_refused_with_a_reason(headers: object, reason: str) -> None:
    errors = errors_of(http={"headers": headers})
    assert any(reason in message for field, message in errors.items() if field.startswith("http"))


@pytest.mark.parametrize(
    ("http", "field", "reason"),
    [
        ({"method": "TRACE"}, "http.method", "one of POST"),
        ({"timeout_seconds": 0}, "http.timeout_seconds", "between 0.1 and 300"),
        ({"timeout_seconds": 301}, "http.timeout_seconds", "between 0.1 and 300"),
        ({"timeout_seconds": "5"}, "http.timeout_seconds", "number of seconds"),
        ({"success_statuses": []}, "http.success_statuses", "status codes"),
        ({"success_statuses": [199]}, "http.success_statuses", "status codes"),
        ({"success_statuses": [True]}, "http.success_statuses", "status codes"),
        ({"body": "x!", "body_encoding": "base64"}, "http.body", "base64"),
        ({"body_encoding": "base64"}, "http.body_encoding", "only meaningful"),
        ({"body_encoding": "hex", "body": "x"}, "http.body_encoding", '"text" or "base64"'),
        ({"content_type": "xml"}, "http.content_type", "media type"),
        ({"retries": 3}, "http.retries", "not an http option"),
        ("PUT", "http", "JSON object"),
    ],
)
def test_bad_options_are_named_with_a_reason(http: object, field: str, reason: str) -> None:
    errors = errors_of(http=http, payload=b"{}")
    assert reason in errors[field]


def test_a_body_and_a_payload_together_are_refused() -> None:
    errors = errors_of(http={"body": "<a/>"}, payload=b'{"a":1}')
    assert errors == {"payload": "must be absent when http.body is given"}


def test_a_body_larger_than_the_payload_limit_is_refused() -> None:
    limits = HttpLimits(max_body_bytes=10)
    _, errors = check_options({"body": base64.b64encode(b"x" * 11).decode(),
                               "body_encoding": "base64"}, limits)  # fmt: skip
    assert [(e.field, e.message) for e in errors] == [("http.body", "must be at most 10 bytes")]


def test_http_options_are_for_the_http_delivery_type_only() -> None:
    errors = errors_of(delivery_type="kafka", destination="orders", http={"method": "PUT"})
    assert errors["http"] == "applies to the http delivery type only"


def test_a_get_may_go_without_payload_but_a_post_may_not() -> None:
    assert build(http={"method": "get"}, payload=None).payload == b"null"
    assert errors_of(payload=None) == {"payload": "is required"}


def test_accepted_options_are_stored_normalised_and_read_back() -> None:
    event = build(
        http={
            "method": "put",
            "headers": {"X-Tenant": "acme"},
            "body": "<a/>",
            "content_type": "application/xml",
            "timeout_seconds": 5,
            "success_statuses": [404, 200, 200],
        },
        payload=None,
    )
    assert event.http == {
        "method": "PUT",
        "headers": {"X-Tenant": "acme"},
        "body": "<a/>",
        "content_type": "application/xml",
        "timeout_seconds": 5.0,
        "success_statuses": [200, 404],
    }
    options = read_options(event.http)
    assert options.request_body(event.payload) == b"<a/>"
    assert options.is_success(404)
    assert not options.is_success(201)
    assert read_options({}).is_success(204)


def test_http_options_travel_in_the_ingest_envelope() -> None:
    event = build(http={"method": "PUT", "body": "x y", "timeout_seconds": 2}, payload=None)
    decoded = decode_event(encode_event(event))
    assert decoded.http == event.http
    assert decoded.payload == b"null"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


async def test_the_api_answers_422_naming_a_forbidden_header(api: Harness) -> None:
    response = await api.client.post(EVENTS, json=event_json(http={"headers": {"Host": "x"}}))

    assert response.status_code == 422
    assert error_fields(response) == {"http.headers.Host"}
    assert "http.headers.Host: may not be set" in response.json()["message"]


async def test_the_events_json_shows_its_http_options(api: Harness) -> None:
    http = {"method": "PUT", "body": "<a/>", "content_type": "text/xml"}
    event_id = await api.submitted_id(http=http, payload=None)

    data = (await api.client.get(f"{EVENTS}/{event_id}")).json()["data"]

    assert data["http"] == http
    assert data["payload"] is None


async def test_a_batch_item_with_bad_options_is_rejected_alone(api: Harness) -> None:
    good = event_json(external_job_id="good", http={"method": "DELETE"})
    bad = event_json(external_job_id="bad", http={"timeout_seconds": -1})

    response = await api.client.post(f"{EVENTS}/batch", json={"events": [good, bad]})

    assert response.status_code == 202
    [rejected] = response.json()["data"]["rejected_events"]
    assert rejected["index"] == 1
    assert rejected["errors"][0]["field"] == "http.timeout_seconds"


def test_a_schedule_template_carries_http_options_to_every_occurrence() -> None:
    from timefuse.domain.schedule import Schedule
    from timefuse.ports.store.schedules import decode_template, encode_template
    from timefuse.service.planner import occurrence_event

    http = {"method": "PUT", "headers": {"X-Tenant": "acme"}, "body": "<tick/>"}
    template = {
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "http": http,
    }
    schedule = Schedule(
        id="0190f0f0-0000-7000-8000-0000000000aa",
        key="nightly",
        source="billing",
        template=decode_template(encode_template(template)),  # as a store keeps it
        created_at=NOW,
        not_before=NOW,
        every_seconds=60,
    )

    event = occurrence_event(schedule, NOW + timedelta(minutes=1), NOW, SubmissionLimits())

    assert event.http == http
    assert read_options(event.http).request_body(event.payload) == b"<tick/>"


async def test_callback_urls_are_checked_like_destinations_and_shown(api: Harness) -> None:
    bad = await api.client.post(EVENTS, json=event_json(callback_url="ftp://example.com/x"))
    internal = await api.client.post(
        EVENTS, json=event_json(failure_callback_url="http://127.0.0.1/hook")
    )
    event_id = await api.submitted_id(
        callback_url="https://client.example/done",
        failure_callback_url="https://client.example/failed",
    )
    data = (await api.client.get(f"{EVENTS}/{event_id}")).json()["data"]

    assert bad.status_code == 422
    assert error_fields(bad) == {"callback_url"}
    assert internal.status_code == 422
    assert error_fields(internal) == {"failure_callback_url"}
    assert (data["callback_url"], data["failure_callback_url"], data["parent_id"]) == (
        "https://client.example/done",
        "https://client.example/failed",
        None,
    )
