"""A completion notice as it is stored and sent: its body, compact JSON in ASCII, and the
receiver key its limits and breaker are kept under."""

from __future__ import annotations

from datetime import UTC, datetime

from timefuse.domain.callback import callback_event
from timefuse.domain.status import EventStatus
from timefuse.testing.factories import make_event

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_notice_body_is_compact_json_with_non_ascii_text_escaped() -> None:
    parent = make_event(
        id="evt-1",
        external_job_id="job-1",
        source="billing",
        failure_callback_url="https://client.example/failed",
    )
    notice = callback_event(
        parent,
        EventStatus.FAILED,
        now=NOW,
        attempts=3,
        retry_count=2,
        status_code=500,
        response_excerpt="déjà",
        error="HTTP 500 \ud800",
    )
    assert notice is not None
    assert notice.payload == (
        b'{"type":"event.failed","event_id":"evt-1","external_job_id":"job-1",'
        b'"source":"billing","status":"FAILED","attempts":3,"retry_count":2,'
        b'"status_code":500,"response_excerpt":"d\\u00e9j\\u00e0",'
        b'"error":"HTTP 500 \\ud800","at":"2030-01-02T03:04:05+00:00"}'
    )


def test_the_notice_is_keyed_under_its_receiver_however_the_url_is_spelled() -> None:
    parent = make_event(callback_url="HTTPS://Client.Example:0443/done?x=1")
    notice = callback_event(
        parent,
        EventStatus.COMPLETED,
        now=NOW,
        attempts=1,
        retry_count=0,
        status_code=200,
        response_excerpt=None,
        error=None,
    )
    assert notice is not None
    assert (notice.delivery_type, notice.destination, notice.destination_key) == (
        "http",
        "HTTPS://Client.Example:0443/done?x=1",
        "client.example:443",
    )
