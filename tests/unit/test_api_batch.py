"""POST /api/v1/events/batch: partial acceptance, size bounds, the all-rejected answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_api_harness import (
    EVENTS,
    FailingBuffer,
    Harness,
    assert_envelope,
    error_fields,
    event_json,
    running_api,
)
from timefuse.entrypoints.api.batch import MAX_BATCH_EVENTS

BATCH = f"{EVENTS}/batch"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


def events(count: int) -> list[dict[str, Any]]:
    return [event_json(external_job_id=f"job-{n}") for n in range(count)]


async def test_a_mixed_batch_accepts_the_valid_and_names_the_rejected(api: Harness) -> None:
    items: list[Any] = [
        event_json(external_job_id="ok-0"),
        event_json(external_job_id="bad-1", max_retries=11),
        "not an event",
        event_json(external_job_id="ok-3"),
        event_json(external_job_id="bad-4", delivery_type="pigeon", destination=None),
    ]

    response = await api.client.post(BATCH, json={"events": items})

    assert response.status_code == 202, response.text
    body = response.json()
    assert_envelope(body, success=True)
    data = body["data"]
    assert (data["accepted"], data["rejected"]) == (2, 3)
    assert [entry["index"] for entry in data["ids"]] == [0, 3]
    rejected = {entry["index"]: entry for entry in data["rejected_events"]}
    assert sorted(rejected) == [1, 2, 4]
    assert rejected[1]["external_job_id"] == "bad-1"
    assert "max_retries" in rejected[1]["reason"]
    assert rejected[2]["external_job_id"] is None
    assert {e["field"] for e in rejected[4]["errors"]} == {"destination"}
    for entry in data["ids"]:
        stored = await api.store.get(entry["id"])
        assert stored is not None
        assert stored.external_job_id == items[entry["index"]]["external_job_id"]


async def test_a_batch_of_the_maximum_size_is_accepted(api: Harness) -> None:
    response = await api.client.post(BATCH, json={"events": events(MAX_BATCH_EVENTS)})

    assert response.status_code == 202
    assert response.json()["data"]["accepted"] == MAX_BATCH_EVENTS
    assert (await api.service.statistics())["PENDING"] == MAX_BATCH_EVENTS


@pytest.mark.parametrize(
    "body",
    [
        {"events": events(MAX_BATCH_EVENTS + 1)},
        {"events": []},
        {},
        {"events": None},
    ],
    ids=["over-the-limit", "empty", "missing", "null"],
)
async def test_a_batch_outside_its_size_bounds_answers_400(
    api: Harness, body: dict[str, Any]
) -> None:
    response = await api.client.post(BATCH, json=body)

    assert response.status_code == 400
    assert_envelope(response.json(), success=False)
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert error_fields(response) == {"events"}
    assert (await api.service.statistics())["TOTAL"] == 0


@pytest.mark.parametrize("body", [{"events": "x"}, {"events": {"a": 1}}, [event_json()]])
async def test_a_batch_of_the_wrong_shape_answers_400(api: Harness, body: object) -> None:
    response = await api.client.post(BATCH, json=body)

    assert response.status_code == 400
    assert response.json()["error_code"] == "VALIDATION_FAILED"
    assert error_fields(response) <= {"events", "body"}


async def test_a_batch_with_nothing_valid_answers_422_listing_every_item(api: Harness) -> None:
    items = [event_json(max_retries=11, source=""), 7]

    response = await api.client.post(BATCH, json={"events": items})

    assert response.status_code == 422
    body = response.json()
    assert_envelope(body, success=False)
    assert body["error_code"] == "VALIDATION_FAILED"
    assert error_fields(response) == {"events[0].max_retries", "events[0].source", "events[1]"}
    assert body["data"]["accepted"] == 0
    assert [entry["index"] for entry in body["data"]["rejected_events"]] == [0, 1]
    assert api.metrics.rejected._value.get() == 2


async def test_twins_in_one_batch_share_one_id(api: Harness) -> None:
    twin = event_json()

    response = await api.client.post(BATCH, json={"events": [twin, twin]})

    ids = {entry["id"] for entry in response.json()["data"]["ids"]}
    assert response.status_code == 202
    assert len(ids) == 1


async def test_a_batch_is_refused_with_503_when_the_buffer_is_down(tmp_path: Path) -> None:
    async with running_api(tmp_path, buffer=lambda store: FailingBuffer()) as api:
        response = await api.client.post(BATCH, json={"events": events(3)})

    assert response.status_code == 503
    assert response.json()["error_code"] == "SERVICE_UNAVAILABLE"


async def test_accepted_events_are_counted_per_delivery_type(api: Harness) -> None:
    await api.client.post(BATCH, json={"events": events(3)})

    assert api.metrics.received.labels("http")._value.get() == 3


async def test_the_seeds_fields_count_and_list_what_the_batch_did(api: Harness) -> None:
    items = events(4)
    items[1]["max_retries"] = 99
    items[3] = dict(items[0])  # a twin of the first: accepted, with the first one's id

    response = await api.client.post(f"{EVENTS}/batch", json={"events": items})

    assert response.status_code == 202
    data = response.json()["data"]
    assert (data["total_submitted"], data["total_accepted"], data["total_rejected"]) == (4, 3, 1)
    assert data["total_accepted"] == data["accepted"] == len(data["ids"])
    assert data["total_rejected"] == data["rejected"] == len(data["rejected_events"])
    assert data["accepted_message_ids"] == [entry["id"] for entry in data["ids"]]
    assert [entry["index"] for entry in data["ids"]] == [0, 2, 3]
    first, _, twin = data["accepted_message_ids"]
    assert twin == first
    for event_id in data["accepted_message_ids"]:
        assert (await api.client.get(f"{EVENTS}/{event_id}")).status_code == 200


async def test_an_all_rejected_batch_still_carries_the_seeds_fields(api: Harness) -> None:
    items = events(2)
    for item in items:
        item["max_retries"] = -1

    response = await api.client.post(f"{EVENTS}/batch", json={"events": items})

    assert response.status_code == 422
    data = response.json()["data"]
    assert (data["total_submitted"], data["total_accepted"], data["total_rejected"]) == (2, 0, 2)
    assert data["accepted_message_ids"] == []
