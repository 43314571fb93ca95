"""Reading, cancelling and counting events through /api/v1/events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.test_api_harness import EVENTS, Harness, assert_envelope, at, running_api
from timefuse.ports.store import StoreRefused, StoreUnavailable
from timefuse.testing.store_contract_support import claim

EVENT_FIELDS = {
    "id", "external_job_id", "source", "scheduled_at", "delivery_type", "destination",
    "payload", "max_retries", "status", "retry_count", "attempts", "last_error", "created_at",
    "updated_at", "executed_at", "next_attempt_at", "locked_by", "lock_expires_at",
    "delivery_window_seconds", "retry_backoff_seconds", "retry_backoff_max_seconds",
    "http", "version", "changes", "callback_url", "failure_callback_url", "parent_id",
}  # fmt: skip


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


def utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment


async def test_an_event_is_read_with_every_field(api: Harness) -> None:
    scheduled = at(120)
    event_id = await api.submitted_id(scheduled_at=scheduled, max_retries=5)

    response = await api.client.get(f"{EVENTS}/{event_id}")

    assert response.status_code == 200
    assert_envelope(response.json(), success=True)
    event = response.json()["data"]
    assert set(event) == EVENT_FIELDS
    assert event["id"] == event_id
    assert event["status"] == "PENDING"
    assert event["max_retries"] == 5
    assert (event["retry_count"], event["attempts"]) == (0, 0)
    assert utc(event["scheduled_at"]) == datetime.fromisoformat(scheduled)
    assert utc(event["created_at"]) <= utc(event["next_attempt_at"])
    assert event["executed_at"] is None


async def test_an_id_is_accepted_in_upper_case(api: Harness) -> None:
    event_id = await api.submitted_id()

    response = await api.client.get(f"{EVENTS}/{event_id.upper()}")

    assert response.status_code == 200
    assert response.json()["data"]["id"] == event_id


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_an_unknown_id_answers_404(api: Harness, method: str) -> None:
    response = await api.client.request(method, f"{EVENTS}/{uuid.uuid4()}")

    assert response.status_code == 404
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "EVENT_NOT_FOUND"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("bad_id", ["42", "not-a-uuid", "0123456789abcdef0123456789abcdef"])
async def test_a_malformed_id_answers_400(api: Harness, method: str, bad_id: str) -> None:
    response = await api.client.request(method, f"{EVENTS}/{bad_id}")

    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_EVENT_ID"


async def test_the_latest_event_of_an_external_id_is_found(api: Harness) -> None:
    await api.submitted_id(external_job_id="order-7", scheduled_at=at(100))
    latest = await api.submitted_id(external_job_id="order-7", scheduled_at=at(200))

    response = await api.client.get(f"{EVENTS}/external/order-7")

    assert response.status_code == 200
    assert response.json()["data"]["id"] == latest


async def test_every_event_of_an_external_id_is_listed(api: Harness) -> None:
    ids = {
        await api.submitted_id(external_job_id="order-7", scheduled_at=at(100 * n))
        for n in (1, 2, 3)
    }
    await api.submitted_id(external_job_id="order-8")

    response = await api.client.get(f"{EVENTS}/external/order-7/all")

    assert response.status_code == 200
    assert {event["id"] for event in response.json()["data"]} == ids


async def test_an_external_id_may_hold_a_slash(api: Harness) -> None:
    event_id = await api.submitted_id(external_job_id="orders/42")

    single = await api.client.get(f"{EVENTS}/external/orders/42")
    listed = await api.client.get(f"{EVENTS}/external/orders%2F42/all")

    assert single.json()["data"]["id"] == event_id
    assert [event["id"] for event in listed.json()["data"]] == [event_id]


async def test_an_unknown_external_id_is_404_singly_and_an_empty_list_in_all(
    api: Harness,
) -> None:
    single = await api.client.get(f"{EVENTS}/external/nobody")
    listed = await api.client.get(f"{EVENTS}/external/nobody/all")

    assert single.status_code == 404
    assert single.json()["error_code"] == "EVENT_NOT_FOUND"
    assert listed.status_code == 200
    assert listed.json()["data"] == []


async def test_a_pending_event_is_cancelled_once_then_409(api: Harness) -> None:
    event_id = await api.submitted_id()

    first = await api.client.delete(f"{EVENTS}/{event_id}")
    second = await api.client.delete(f"{EVENTS}/{event_id}")

    assert first.status_code == 200
    assert_envelope(first.json(), success=True)
    assert first.json()["data"]["status"] == "CANCELLED"
    assert second.status_code == 409
    assert_envelope(second.json(), success=False)
    assert second.json()["error_code"] == "EVENT_NOT_PENDING"
    assert "CANCELLED" in second.json()["message"]
    assert api.metrics.cancelled._value.get() == 1


async def test_a_claimed_event_is_not_cancellable(api: Harness) -> None:
    event_id = await api.submitted_id(scheduled_at=at(0))
    claimed = await claim(api.store, "worker-1", 10, 60.0)
    assert [event.id for event in claimed] == [event_id]

    response = await api.client.delete(f"{EVENTS}/{event_id}")

    assert response.status_code == 409
    assert "PROCESSING" in response.json()["message"]


async def test_cancelling_by_external_id_counts_what_was_cancelled(api: Harness) -> None:
    for n in (1, 2):
        await api.submitted_id(external_job_id="order-7", scheduled_at=at(100 * n))

    first = await api.client.delete(f"{EVENTS}/external/order-7")
    again = await api.client.delete(f"{EVENTS}/external/order-7")
    unknown = await api.client.delete(f"{EVENTS}/external/nobody")

    assert first.status_code == 200
    assert first.json()["data"] == {"cancelled": 2}
    assert again.status_code == 200
    assert again.json()["data"] == {"cancelled": 0}
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "EVENT_NOT_FOUND"


async def test_statistics_count_events_per_status(api: Harness) -> None:
    for n in range(3):
        await api.submitted_id(external_job_id=f"job-{n}")
    cancelled = await api.submitted_id(external_job_id="job-x")
    await api.client.delete(f"{EVENTS}/{cancelled}")

    response = await api.client.get(f"{EVENTS}/statistics")

    assert response.status_code == 200
    assert_envelope(response.json(), success=True)
    assert response.json()["data"] == {
        "PENDING": 3,
        "PROCESSING": 0,
        "COMPLETED": 0,
        "FAILED": 0,
        "DEAD_LETTER": 0,
        "CANCELLED": 1,
        "TOTAL": 4,
    }


async def test_a_store_failure_on_a_read_answers_503(api: Harness) -> None:
    failure = StoreUnavailable("SQLite: database is locked at /secret/path")
    api.memory.faults.fail["get"] = [failure]

    response = await api.client.get(f"{EVENTS}/{uuid.uuid4()}")

    assert response.status_code == 503
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "SERVICE_UNAVAILABLE"
    assert "/secret/path" not in response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/external/order-7"),
        ("GET", "/external/order-7/all"),
        ("DELETE", "/external/order-7"),
    ],
)
@pytest.mark.parametrize("source", ["bill\x00ing", "billing\r\n", "\u200bbilling"])
async def test_a_control_character_in_the_source_of_an_external_id_answers_400_naming_it(
    api: Harness, method: str, path: str, source: str
) -> None:
    event_id = await api.submitted_id(external_job_id="order-7")

    response = await api.client.request(method, f"{EVENTS}{path}", params={"source": source})

    assert response.status_code == 400
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert [error["field"] for error in response.json()["errors"]] == ["source"]
    assert "control characters" in response.json()["message"]
    # Nothing was cancelled on the way.
    assert (await api.client.get(f"{EVENTS}/{event_id}")).json()["data"]["status"] == "PENDING"


async def test_a_value_the_store_refuses_answers_400_without_the_stores_words(
    api: Harness,
) -> None:
    # What a store answers when a value of the request can't be held (PostgreSQL and a NUL,
    # say) that no check above the store caught: the same request would fail again.
    failure = StoreRefused("PostgreSQL: invalid byte sequence near 'secret-row'")
    api.memory.faults.fail["get"] = [failure]

    response = await api.client.get(f"{EVENTS}/{uuid.uuid4()}")

    assert response.status_code == 400
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert "refused a value" in response.json()["message"]
    assert "secret-row" not in response.text
    assert "Retry-After" not in response.headers
