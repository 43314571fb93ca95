"""Quotas per source through the REST API: 429 with Retry-After, per-item refusals in a batch,
the admin view, the metrics."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_api_harness import (
    EVENTS,
    Harness,
    assert_envelope,
    at,
    error_fields,
    event_json,
    running_api,
)
from timefuse.domain.event import Event
from timefuse.entrypoints.api.errors import retry_after
from timefuse.service.store import Store

BATCH = f"{EVENTS}/batch"
QUOTAS = f"{EVENTS}/admin/quotas"
# A rate so slow that no token comes back while a test runs: the burst is all a source gets.
SLOW = 0.001
TABLE = {
    "billing": {"rate": SLOW, "burst": 2},
    "capped": {"max_pending": 3},
    "*": {"max_pending": 100},
}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path, env={"TIMEFUSE_SOURCE_QUOTAS": json.dumps(TABLE)}) as api:
        yield api


def jobs(source: str, count: int, first: int = 0) -> list[dict[str, Any]]:
    return [
        event_json(source=source, external_job_id=f"{source}-{n}")
        for n in range(first, first + count)
    ]


async def test_a_source_over_its_rate_gets_429_with_retry_after_and_others_go_on(
    api: Harness,
) -> None:
    for n in range(2):
        await api.submitted_id(source="billing", external_job_id=f"b-{n}")

    over = await api.submit(source="billing", external_job_id="b-2")
    other = await api.submit(source="shipping", external_job_id="s-0")

    assert over.status_code == 429, over.text
    assert_envelope(over.json(), success=False)
    assert over.json()["error_code"] == "QUOTA_RATE"
    assert error_fields(over) == {"source"}
    # The next token of a 0.001/s bucket is 1000 s away.
    assert int(over.headers["retry-after"]) == pytest.approx(1000, abs=1)
    assert other.status_code == 202, other.text
    listed = await api.client.get(EVENTS, params={"source": "billing"})
    assert len(listed.json()["data"]["events"]) == 2


async def test_a_source_at_its_pending_cap_gets_429_without_a_time_to_retry(
    api: Harness,
) -> None:
    ids = [await api.submitted_id(source="capped", external_job_id=f"c-{n}") for n in range(3)]

    over = await api.submit(source="capped", external_job_id="c-3")

    assert over.status_code == 429, over.text
    assert over.json()["error_code"] == "QUOTA_PENDING"
    assert "retry-after" not in over.headers
    # A cancelled event is not PENDING: its place is free again.
    await api.client.delete(f"{EVENTS}/{ids[0]}")
    again = await api.submit(source="capped", external_job_id="c-3")
    assert again.status_code == 202, again.text


async def test_a_batch_over_the_pending_cap_is_accepted_up_to_the_cap_and_the_rest_rejected(
    api: Harness,
) -> None:
    await api.submitted_id(source="capped", external_job_id="c-first")
    items = [*jobs("capped", 4), event_json(external_job_id="bad", max_retries=99)]
    items.insert(1, event_json(source="shipping", external_job_id="s-0"))

    response = await api.client.post(BATCH, json={"events": items})

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert [entry["index"] for entry in data["ids"]] == [0, 1, 2]
    rejected = [(r["index"], r["code"]) for r in data["rejected_events"]]
    assert rejected == [(3, "QUOTA_PENDING"), (4, "QUOTA_PENDING"), (5, "VALIDATION_FAILED")]
    assert data["rejected_events"][0]["external_job_id"] == "capped-2"
    assert {e["field"] for e in data["rejected_events"][0]["errors"]} == {"source"}
    # No rate refused anything: nothing to wait for.
    assert "retry-after" not in response.headers


async def test_a_batch_past_a_rate_says_when_to_send_the_rest(api: Harness) -> None:
    response = await api.client.post(BATCH, json={"events": jobs("billing", 3)})

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert (data["accepted"], data["rejected"]) == (2, 1)
    assert data["rejected_events"][0]["code"] == "QUOTA_RATE"
    assert int(response.headers["retry-after"]) >= 999


async def test_a_batch_refused_whole_by_quotas_answers_429(api: Harness) -> None:
    await api.client.post(BATCH, json={"events": jobs("billing", 2)})

    response = await api.client.post(BATCH, json={"events": jobs("billing", 2, first=2)})

    assert response.status_code == 429, response.text
    assert response.json()["error_code"] == "QUOTA_RATE"
    assert response.json()["data"]["rejected"] == 2
    assert "retry-after" in response.headers


async def test_a_resubmission_takes_from_the_rate_like_a_new_event_singly_and_in_a_batch(
    api: Harness,
) -> None:
    event = event_json(source="billing", external_job_id="b-0", scheduled_at=at(3600))
    first = await api.client.post(EVENTS, json=event)
    again = await api.client.post(EVENTS, json=event)
    # The burst of 2 is spent: one event stored, and its resubmission.
    single = await api.client.post(EVENTS, json=event)
    batch = await api.client.post(BATCH, json={"events": [event]})

    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert again.json()["data"]["duplicate"] is True
    assert (single.status_code, single.json()["error_code"]) == (429, "QUOTA_RATE")
    assert (batch.status_code, batch.json()["error_code"]) == (429, "QUOTA_RATE")
    assert "retry-after" in single.headers
    assert "retry-after" in batch.headers


async def test_a_resubmission_at_the_pending_cap_is_refused_singly_and_in_a_batch(
    api: Harness,
) -> None:
    when = at(3600)
    for n in range(3):
        await api.submitted_id(source="capped", external_job_id=f"c-{n}", scheduled_at=when)
    resubmitted = event_json(source="capped", external_job_id="c-0", scheduled_at=when)

    single = await api.client.post(EVENTS, json=resubmitted)
    batch = await api.client.post(
        BATCH, json={"events": [resubmitted, event_json(source="shipping")]}
    )

    assert (single.status_code, single.json()["error_code"]) == (429, "QUOTA_PENDING")
    assert batch.status_code == 202, batch.text
    data = batch.json()["data"]
    assert [(r["index"], r["code"]) for r in data["rejected_events"]] == [(0, "QUOTA_PENDING")]
    assert [entry["index"] for entry in data["ids"]] == [1]
    # Room under the cap lets the resubmission through, answered by the stored event.
    listed = await api.client.get(EVENTS, params={"source": "capped"})
    stored = {e["external_job_id"]: e["id"] for e in listed.json()["data"]["events"]}
    await api.client.delete(f"{EVENTS}/{stored['c-1']}")
    after = await api.client.post(EVENTS, json=resubmitted)
    assert after.status_code == 202, after.text
    assert (after.json()["data"]["id"], after.json()["data"]["duplicate"]) == (stored["c-0"], True)


async def test_a_batch_refused_whole_for_quotas_and_bad_fields_answers_422(api: Harness) -> None:
    await api.client.post(BATCH, json={"events": jobs("billing", 2)})
    items = [*jobs("billing", 1, first=2), event_json(external_job_id="bad", max_retries=99)]

    response = await api.client.post(BATCH, json={"events": items})

    # Resending it won't help the bad item: a client must fix it first.
    assert response.status_code == 422, response.text
    assert response.json()["error_code"] == "VALIDATION_FAILED"


async def test_the_admin_api_shows_each_entry_and_its_use(api: Harness) -> None:
    await api.submitted_id(source="capped", external_job_id="c-0")
    await api.submitted_id(source="billing", external_job_id="b-0")
    await api.submit(source="capped", external_job_id="c-1")

    response = await api.client.get(QUOTAS)

    assert response.status_code == 200, response.text
    rows = {row["source"]: row for row in response.json()["data"]}
    assert set(rows) == {"billing", "capped", "*"}
    assert rows["billing"] | {"tokens": None} == {
        "source": "billing", "entry": "billing", "rate": SLOW, "burst": 2,
        "max_pending": None, "pending": 1, "tokens": None,
        "rejected": {"rate": 0, "pending": 0},
    }  # fmt: skip
    assert rows["billing"]["tokens"] == pytest.approx(1.0, abs=0.01)
    assert (rows["capped"]["max_pending"], rows["capped"]["pending"]) == (3, 2)
    assert (rows["*"]["max_pending"], rows["*"]["pending"]) == (100, None)


async def test_the_admin_api_shows_the_entry_holding_for_one_source(api: Harness) -> None:
    await api.submitted_id(source="shipping", external_job_id="s-0")

    response = await api.client.get(QUOTAS, params={"source": "shipping"})

    (row,) = response.json()["data"]
    assert (row["source"], row["entry"], row["max_pending"], row["pending"]) == (
        "shipping",
        "*",
        100,
        1,
    )


@pytest.mark.parametrize("source", ["", " ", "s" * 101, "bill\x00ing"])
async def test_a_bad_source_in_the_admin_query_answers_400(api: Harness, source: str) -> None:
    response = await api.client.get(QUOTAS, params={"source": source})

    assert response.status_code == 400, response.text
    assert error_fields(response) == {"source"}


async def test_refusals_are_counted_in_the_metrics_by_entry(api: Harness) -> None:
    await api.client.post(BATCH, json={"events": jobs("billing", 3) + jobs("other", 1)})
    await api.client.post(BATCH, json={"events": jobs("capped", 5)})

    text = (await api.client.get("/metrics")).text

    assert 'timefuse_quota_rejections_total{reason="rate",source="billing"} 1.0' in text
    assert 'timefuse_quota_rejections_total{reason="pending",source="capped"} 2.0' in text


async def test_without_quotas_nothing_is_refused(tmp_path: Path) -> None:
    async with running_api(tmp_path) as api:
        response = await api.client.post(BATCH, json={"events": jobs("billing", 50)})
        quotas = await api.client.get(QUOTAS)

    assert response.json()["data"]["accepted"] == 50
    assert quotas.json()["data"] == []


class TopicBuffer:
    """A buffer like Kafka's: it keeps what it is given and stores nothing."""

    def __init__(self, store: Store) -> None:
        self.produced: list[Event] = []

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always up."""

    async def submit(self, events: Sequence[Event]) -> dict[str, str]:
        self.produced.extend(events)
        return {event.id: event.id for event in events}


async def test_with_a_buffer_between_api_and_store_nothing_refused_is_produced(
    tmp_path: Path,
) -> None:
    buffers: list[TopicBuffer] = []

    def buffer(store: Store) -> TopicBuffer:
        buffers.append(TopicBuffer(store))
        return buffers[-1]

    env = {"TIMEFUSE_SOURCE_QUOTAS": json.dumps(TABLE)}
    async with running_api(tmp_path, env=env, buffer=buffer) as api:
        batch = await api.client.post(BATCH, json={"events": jobs("billing", 3)})
        single = await api.submit(source="billing", external_job_id="billing-9")

    assert batch.json()["data"]["accepted"] == 2
    assert single.status_code == 429
    assert [event.external_job_id for event in buffers[0].produced] == ["billing-0", "billing-1"]


async def test_a_quota_set_through_the_admin_api_holds_at_once(api: Harness) -> None:
    set_ = await api.client.put(f"{QUOTAS}/shipping", json={"rate": SLOW, "burst": 1})
    first = await api.submit(source="shipping", external_job_id="s-0")
    second = await api.submit(source="shipping", external_job_id="s-1")

    assert set_.status_code == 200, set_.text
    assert set_.json()["data"]["entry"] == "shipping"
    assert (set_.json()["data"]["rate"], set_.json()["data"]["burst"]) == (SLOW, 1)
    assert (first.status_code, second.status_code) == (202, 429)


async def test_changing_a_rate_hands_no_fresh_burst(api: Harness) -> None:
    await api.client.post(BATCH, json={"events": jobs("billing", 2)})

    await api.client.put(f"{QUOTAS}/billing", json={"rate": SLOW, "burst": 50})
    after = await api.submit(source="billing", external_job_id="billing-9")

    assert after.status_code == 429, after.text


async def test_removing_an_entry_puts_its_source_under_the_default(api: Harness) -> None:
    removed = await api.client.delete(f"{QUOTAS}/capped")
    again = await api.client.delete(f"{QUOTAS}/capped")
    batch = await api.client.post(BATCH, json={"events": jobs("capped", 10)})

    assert removed.status_code == 200, removed.text
    assert (removed.json()["data"]["entry"], removed.json()["data"]["max_pending"]) == ("*", 100)
    assert again.status_code == 404
    assert again.json()["error_code"] == "QUOTA_NOT_FOUND"
    assert batch.json()["data"]["accepted"] == 10


async def test_the_default_entry_can_be_set_too(api: Harness) -> None:
    response = await api.client.put(f"{QUOTAS}/*", json={"max_pending": 1})
    first = await api.submit(source="newcomer", external_job_id="n-0")
    second = await api.submit(source="newcomer", external_job_id="n-1")

    assert response.status_code == 200, response.text
    assert response.json()["data"]["pending"] is None
    assert (first.status_code, second.status_code) == (202, 429)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("billing", {"rate": 0}, "rate"),
        ("billing", {"rate": 5e-324, "burst": 1}, "rate"),  # a wait past any date
        ("billing", {"rate": 1e300}, "rate"),
        ("billing", {"rate": 1, "burst": 2**31}, "burst"),
        ("billing", {"max_pending": 2**31}, "max_pending"),
        ("billing", {"rate": "fast"}, "rate"),
        ("billing", {"burst": 5}, "burst"),
        ("billing", {"rate": 1, "burst": 0}, "burst"),
        ("billing", {"max_pending": -1}, "max_pending"),
        ("billing", {"max_pending": True}, "max_pending"),
        ("billing", {"per_minute": 5}, "body"),
        ("bill%00ing", {"rate": 1}, "source"),
        ("s" * 101, {"rate": 1}, "source"),
    ],
)
async def test_a_bad_quota_answers_400_and_changes_nothing(
    api: Harness, path: str, body: dict[str, Any], field: str
) -> None:
    response = await api.client.put(f"{QUOTAS}/{path}", json=body)

    assert response.status_code == 400, response.text
    assert error_fields(response) == {field}
    rows = {row["source"]: row for row in (await api.client.get(QUOTAS)).json()["data"]}
    assert (rows["billing"]["rate"], rows["billing"]["burst"]) == (SLOW, 2)


def test_a_wait_that_cannot_be_told_is_answered_as_ten_years() -> None:
    assert retry_after(0.2) == {"Retry-After": "1"}
    assert retry_after(math.inf) == {"Retry-After": "315360000"}
    assert retry_after(math.nan) == {"Retry-After": "315360000"}
