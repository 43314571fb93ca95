"""PATCH /api/v1/events/{id} and /external/{external_job_id}: changing a pending event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.test_api_harness import EVENTS, Harness, at, error_fields, running_api
from timefuse.domain.status import EventStatus


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


async def test_a_patch_changes_the_fields_given_and_answers_the_event(api: Harness) -> None:
    event_id = await api.submitted_id(scheduled_at=at(7200))
    new_time = at(3600)

    response = await api.client.patch(
        f"{EVENTS}/{event_id}",
        json={
            "scheduled_at": new_time,
            "payload": {"v": 2},
            "http": {"method": "PUT", "timeout_seconds": 5},
            "if_version": 1,
        },
    )

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["payload"] == {"v": 2}
    assert data["http"] == {"method": "PUT", "timeout_seconds": 5.0}
    assert data["version"] == 2
    assert [c["fields"] for c in data["changes"]] == [["http", "payload", "scheduled_at"]]
    stored = await api.store.get(event_id)
    assert stored is not None
    assert stored.scheduled_at.isoformat()[:19] == new_time[:19]
    assert stored.max_retries == 3  # not given: unchanged


async def test_a_stale_if_version_is_412_with_the_event_as_it_is(api: Harness) -> None:
    event_id = await api.submitted_id()
    first = await api.client.patch(f"{EVENTS}/{event_id}", json={"max_retries": 5})
    assert first.status_code == 200

    response = await api.client.patch(
        f"{EVENTS}/{event_id}", json={"max_retries": 7, "if_version": 1}
    )

    assert response.status_code == 412
    body = response.json()
    assert body["error_code"] == "VERSION_MISMATCH"
    assert body["data"]["version"] == 2
    assert body["data"]["max_retries"] == 5


@pytest.mark.parametrize("status", [EventStatus.COMPLETED, EventStatus.PROCESSING])
async def test_a_patch_on_an_event_no_longer_pending_is_409(
    api: Harness, status: EventStatus
) -> None:
    if status is EventStatus.PROCESSING:
        from timefuse.testing.store_contract_support import claim

        event_id = await api.submitted_id(scheduled_at=at(0))
        assert [e.id for e in await claim(api.store, "worker-test", 1, 60.0)] == [event_id]
    else:
        event_id = await api.attempted(status)

    response = await api.client.patch(f"{EVENTS}/{event_id}", json={"max_retries": 1})

    assert response.status_code == 409
    assert response.json()["error_code"] == "EVENT_NOT_PENDING"
    assert status.value in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "other"}, "source"),
        ({"external_job_id": "x"}, "external_job_id"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"http": {"headers": {"Content-Length": "1"}}}, "http.headers.Content-Length"),
        ({"if_version": "one", "max_retries": 1}, "if_version"),
        ({}, "body"),
    ],
)
async def test_a_bad_change_is_422_naming_the_field(
    api: Harness, body: dict[str, object], field: str
) -> None:
    event_id = await api.submitted_id()

    response = await api.client.patch(f"{EVENTS}/{event_id}", json=body)

    assert response.status_code == 422, response.text
    assert field in error_fields(response)
    assert (await api.store.get(event_id)).version == 1  # type: ignore[union-attr]


async def test_an_unknown_field_is_refused(api: Harness) -> None:
    event_id = await api.submitted_id()

    response = await api.client.patch(f"{EVENTS}/{event_id}", json={"max_retry": 1})

    assert response.status_code == 422
    assert error_fields(response) == {"max_retry"}
    assert "did you mean max_retries?" in response.text


@pytest.mark.parametrize("body", [b"[]", b'{"max_retries": ', b'"change"'])
async def test_a_change_that_cannot_be_read_is_400(api: Harness, body: bytes) -> None:
    event_id = await api.submitted_id()

    response = await api.client.patch(
        f"{EVENTS}/{event_id}", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert response.json()["error_code"] in {"VALIDATION_FAILED", "MALFORMED_JSON"}
    assert (await api.store.get(event_id)).version == 1  # type: ignore[union-attr]


async def test_an_unknown_event_is_404(api: Harness) -> None:
    response = await api.client.patch(
        f"{EVENTS}/0190f0f0-0000-7000-8000-000000000001", json={"max_retries": 1}
    )
    assert response.status_code == 404


async def test_a_patch_by_external_id_changes_its_pending_event(api: Harness) -> None:
    event_id = await api.submitted_id(external_job_id="orders/42")

    response = await api.client.patch(
        f"{EVENTS}/external/orders/42", json={"destination": "https://example.com/other"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"]["id"] == event_id
    assert response.json()["data"]["destination"] == "https://example.com/other"
    missing = await api.client.patch(f"{EVENTS}/external/nope", json={"max_retries": 1})
    assert missing.status_code == 404


async def test_source_narrows_a_patch_by_external_id_to_one_sources_event(api: Harness) -> None:
    when = at(7200)
    billing = await api.submitted_id(source="billing", external_job_id="order-1", scheduled_at=when)
    shipping = await api.submitted_id(
        source="shipping", external_job_id="order-1", scheduled_at=when
    )
    url = f"{EVENTS}/external/order-1"

    response = await api.client.patch(url, params={"source": "billing"}, json={"max_retries": 6})
    elsewhere = await api.client.patch(url, params={"source": "nobody"}, json={"max_retries": 6})
    blank = await api.client.patch(url, params={"source": " "}, json={"max_retries": 6})

    assert response.status_code == 200, response.text
    assert response.json()["data"]["id"] == billing
    assert elsewhere.status_code == 404
    assert blank.status_code == 400
    assert error_fields(blank) == {"source"}
    changed = await api.store.get(billing)
    untouched = await api.store.get(shipping)
    assert changed is not None
    assert untouched is not None
    assert (changed.max_retries, untouched.max_retries) == (6, 3)


async def test_a_new_payload_replaces_a_body_and_a_body_replaces_the_payload(
    api: Harness,
) -> None:
    event_id = await api.submitted_id()

    to_body = await api.client.patch(
        f"{EVENTS}/{event_id}", json={"http": {"body": "<a/>", "content_type": "text/xml"}}
    )
    to_payload = await api.client.patch(f"{EVENTS}/{event_id}", json={"payload": [1]})

    assert to_body.status_code == 200, to_body.text
    assert to_body.json()["data"]["payload"] is None
    assert to_payload.status_code == 200, to_payload.text
    assert to_payload.json()["data"]["payload"] == [1]
    assert to_payload.json()["data"]["http"] == {"content_type": "text/xml"}
