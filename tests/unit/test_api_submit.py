"""POST /api/v1/events: acceptance, validation, and what a body must look like."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.test_api_harness import (
    EVENTS,
    FailingBuffer,
    Harness,
    assert_envelope,
    at,
    error_fields,
    event_json,
    running_api,
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


async def test_an_accepted_event_answers_202_with_its_id_in_the_envelope(api: Harness) -> None:
    response = await api.submit()

    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert_envelope(body, success=True)
    assert body["error_code"] is None
    assert body["errors"] is None
    assert body["data"]["status"] == "PENDING"
    assert response.headers["location"] == f"{EVENTS}/{body['data']['id']}"
    assert await api.store.get(body["data"]["id"]) is not None


async def test_the_payload_round_trips_as_a_json_object_not_a_string(api: Harness) -> None:
    payload = {"invoice": "INV-1", "nested": {"n": [1, 2.5, None, True]}, "text": "é"}
    event_id = await api.submitted_id(payload=payload)

    stored = await api.store.get(event_id)
    fetched = (await api.client.get(f"{EVENTS}/{event_id}")).json()["data"]

    assert stored is not None
    assert stored.payload.startswith(b"{")
    assert fetched["payload"] == payload


async def test_a_resubmitted_twin_gets_the_first_events_id(api: Harness) -> None:
    when = at(600)
    first = await api.submitted_id(scheduled_at=when)
    second = await api.submitted_id(scheduled_at=when, payload={"other": True})

    assert second == first


async def test_the_delivery_type_is_case_insensitive_as_in_the_seed(api: Harness) -> None:
    event_id = await api.submitted_id(delivery_type="HTTP")

    fetched = (await api.client.get(f"{EVENTS}/{event_id}")).json()["data"]
    assert fetched["delivery_type"] == "http"


async def test_every_bad_field_is_named_in_one_answer(api: Harness) -> None:
    body = event_json(source=42, max_retries="three", scheduled_at="tomorrow", payload=None)
    del body["destination"]

    response = await api.client.post(EVENTS, json=body)

    assert response.status_code == 422
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert error_fields(response) == {
        "source",
        "max_retries",
        "scheduled_at",
        "payload",
        "destination",
    }


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"scheduled_at": at(-10)}, "scheduled_at"),
        ({"scheduled_at": "2030-01-01T00:00:00"}, "scheduled_at"),
        ({"max_retries": 11}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"delivery_type": "carrier-pigeon"}, "delivery_type"),
        ({"destination": "ftp://example.com/x"}, "destination"),
        ({"destination": "not a url"}, "destination"),
        ({"external_job_id": "x" * 256}, "external_job_id"),
        ({"source": ""}, "source"),
        ({"payload": None}, "payload"),
        (
            {"retry_backoff_seconds": 60, "retry_backoff_max_seconds": 1},
            "retry_backoff_max_seconds",
        ),
        ({"destination": "https://user:secret@example.com/hook"}, "destination"),
        ({"destination": "https://example.com:0443/hook"}, "destination"),
    ],
)
async def test_a_rule_broken_answers_422_naming_the_field(
    api: Harness, overrides: dict[str, object], field: str
) -> None:
    response = await api.submit(**overrides)

    assert response.status_code == 422, response.text
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert field in error_fields(response)
    assert (await api.service.statistics())["TOTAL"] == 0


async def test_a_number_json_can_not_hold_as_a_float_is_named(api: Harness) -> None:
    body = json.dumps(event_json()).replace('"max_retries": 3', '"max_retries": 1e999')

    response = await api.client.post(
        EVENTS, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert error_fields(response) == {"max_retries"}


async def test_an_absent_payload_is_missing(api: Harness) -> None:
    body = event_json()
    del body["payload"]

    response = await api.client.post(EVENTS, json=body)

    assert response.status_code == 422
    assert error_fields(response) == {"payload"}


async def test_rejections_are_counted(api: Harness) -> None:
    await api.submit(max_retries=11)

    assert api.metrics.rejected._value.get() == 1


@pytest.mark.parametrize("body", [b"[]", b'"event"', b"42", b"null"])
async def test_a_body_that_is_not_an_object_answers_400(api: Harness, body: bytes) -> None:
    response = await api.client.post(
        EVENTS, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert error_fields(response) == {"body"}


@pytest.mark.parametrize("body", [b'{"source": ', b"{,}", b"", b'{"a": "\xff"}'])
async def test_malformed_json_answers_400(api: Harness, body: bytes) -> None:
    response = await api.client.post(
        EVENTS, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "MALFORMED_JSON"


async def test_invalid_utf8_inside_the_raw_payload_is_refused(api: Harness) -> None:
    # msgspec keeps the payload raw, so its strings are never decoded by the parser.
    body = b'{"payload": {"note": "\xff"}}'
    response = await api.client.post(
        EVENTS, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error_code"] == "MALFORMED_JSON"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_answers_415(api: Harness, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await api.client.post(EVENTS, content=b"{}", headers=headers)

    assert response.status_code == 415
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "application/vnd.timefuse+json"],
)
async def test_json_media_types_with_parameters_or_suffixes_are_accepted(
    api: Harness, content_type: str
) -> None:
    response = await api.client.post(
        EVENTS, content=json.dumps(event_json()), headers={"content-type": content_type}
    )

    assert response.status_code == 202, response.text


async def test_an_unavailable_buffer_answers_503_never_202(tmp_path: Path) -> None:
    async with running_api(tmp_path, buffer=lambda store: FailingBuffer()) as api:
        response = await api.submit()
        statistics = await api.service.statistics()

    assert response.status_code == 503
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "SERVICE_UNAVAILABLE"
    assert "broker unreachable" in response.json()["message"]
    assert statistics["TOTAL"] == 0


class TestBodySize:
    @pytest.fixture
    async def small(self, tmp_path: Path) -> AsyncIterator[Harness]:
        async with running_api(tmp_path, env={"TIMEFUSE_MAX_BODY_BYTES": "1000"}) as harness:
            yield harness

    async def test_a_declared_length_over_the_limit_answers_413(self, small: Harness) -> None:
        response = await small.submit(payload={"blob": "x" * 2000})

        assert response.status_code == 413
        assert_envelope(response.json(), success=False)
        assert response.json()["error_code"] == "PAYLOAD_TOO_LARGE"

    async def test_a_streamed_body_is_cut_off_at_the_limit(self, small: Harness) -> None:
        chunks_sent = 0

        async def endless() -> AsyncIterator[bytes]:
            nonlocal chunks_sent
            yield b'{"payload": "'
            while chunks_sent < 10_000:
                chunks_sent += 1
                yield b"x" * 100

        response = await small.client.post(
            EVENTS, content=endless(), headers={"content-type": "application/json"}
        )

        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert chunks_sent < 10_000

    async def test_a_body_under_the_limit_is_read(self, small: Harness) -> None:
        response = await small.submit()

        assert response.status_code == 202
