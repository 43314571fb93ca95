"""What the API answers is what happened: ids, duplicates, warnings, unknown parameters.

A resubmission gets the one id the event has in the store and the stored event's real status;
fields and query parameters the API doesn't know are named, never silently dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.unit.test_api_harness import EVENTS, Harness, at, event_json, running_api
from timefuse.domain.dedup import dedup_event_id
from timefuse.domain.event import Event
from timefuse.entrypoints.api import external as by_external
from timefuse.ports.store import StoreUnavailable
from timefuse.service.store import Store


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_api(tmp_path) as harness:
        yield harness


# -- ids and the dedup answer ------------------------------------------------------------------


async def test_the_id_is_derived_from_source_external_id_and_instant(api: Harness) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    response = await api.submit(scheduled_at=when.isoformat(), external_job_id="inv-1")

    assert response.status_code == 202
    assert response.json()["data"] == {
        "id": dedup_event_id("billing", "inv-1", when),
        "status": "PENDING",
        "duplicate": False,
        "stored": True,
    }


async def test_a_resubmission_answers_the_stored_event_as_a_duplicate(api: Harness) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    first = (await api.submit(scheduled_at=when.isoformat())).json()["data"]
    # The same instant written with another offset is the same event.
    again = when.astimezone(timezone(timedelta(hours=-5))).isoformat()
    second = await api.submit(scheduled_at=again, payload={"changed": True})

    assert second.status_code == 202
    assert second.json()["data"] == {
        "id": first["id"],
        "status": "PENDING",
        "duplicate": True,
        "stored": True,
    }
    assert "nothing changed" in second.json()["message"]
    stored = await api.store.get(first["id"])
    assert stored is not None
    assert stored.payload != b'{"changed":true}'


async def test_a_resubmission_of_a_cancelled_event_says_it_is_cancelled(api: Harness) -> None:
    when = at(3600)
    event_id = await api.submitted_id(scheduled_at=when)
    assert (await api.client.delete(f"{EVENTS}/{event_id}")).status_code == 200

    again = await api.submit(scheduled_at=when)

    assert again.json()["data"]["status"] == "CANCELLED"
    assert again.json()["data"]["duplicate"] is True
    # Another instant is another event, so that is how a cancelled job is scheduled again.
    later = (datetime.fromisoformat(when) + timedelta(milliseconds=1)).isoformat()
    fresh = (await api.submit(scheduled_at=later)).json()["data"]
    assert (fresh["status"], fresh["duplicate"]) == ("PENDING", False)
    assert fresh["id"] != event_id


async def test_a_batch_item_repeating_a_cancelled_event_says_it_is_a_cancelled_duplicate(
    api: Harness,
) -> None:
    when = at(3600)
    event_id = await api.submitted_id(external_job_id="again", scheduled_at=when)
    assert (await api.client.delete(f"{EVENTS}/{event_id}")).status_code == 200
    again = event_json(external_job_id="again", scheduled_at=when)
    fresh = event_json(external_job_id="fresh", scheduled_at=when)

    response = await api.client.post(f"{EVENTS}/batch", json={"events": [fresh, again, fresh]})

    assert response.status_code == 202, response.text
    items = response.json()["data"]["ids"]
    answers = [(i["index"], i["status"], i["duplicate"]) for i in items]
    # The twins of this batch are one new event, not duplicates of each other.
    assert answers == [(0, "PENDING", False), (1, "CANCELLED", True), (2, "PENDING", False)]
    assert items[1]["id"] == event_id
    stored = await api.store.get(event_id)
    assert stored is not None
    assert stored.status.value == "CANCELLED"


async def test_a_batch_resubmitted_after_its_events_were_stored_is_all_duplicates(
    api: Harness,
) -> None:
    items = [event_json(external_job_id=f"job-{n}", scheduled_at=at(600)) for n in range(20)]
    first = (await api.client.post(f"{EVENTS}/batch", json={"events": items})).json()["data"]

    again = (await api.client.post(f"{EVENTS}/batch", json={"events": items})).json()["data"]

    assert {i["duplicate"] for i in first["ids"]} == {False}
    assert [i["id"] for i in again["ids"]] == [i["id"] for i in first["ids"]]
    assert {(i["status"], i["duplicate"]) for i in again["ids"]} == {("PENDING", True)}


async def test_identical_items_of_one_batch_get_one_id_and_make_one_event(api: Harness) -> None:
    item = event_json(external_job_id="twin", scheduled_at=at(600))
    other = event_json(external_job_id="other", scheduled_at=at(600))

    response = await api.client.post(f"{EVENTS}/batch", json={"events": [item, other, item]})

    ids = {entry["index"]: entry["id"] for entry in response.json()["data"]["ids"]}
    assert ids[0] == ids[2] != ids[1]
    assert response.json()["data"]["stored"] is True
    listed = await api.client.get(f"{EVENTS}/external/twin/all")
    assert [event["id"] for event in listed.json()["data"]] == [ids[0]]


async def test_a_submission_the_store_does_not_confirm_in_time_answers_503(
    tmp_path: Path,
) -> None:
    env = {"TIMEFUSE_SUBMIT_TIMEOUT_SECONDS": "0.2"}
    async with running_api(tmp_path, env=env) as api:
        api.memory.faults.stall["insert_many"] = asyncio.Event()
        single = await api.submit()
        batch = await api.client.post(f"{EVENTS}/batch", json={"events": [event_json()]})

    for response in (single, batch):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "within 0.2 s" in response.json()["message"]


# -- with a buffer in front of the store (Kafka) -------------------------------------------------


class _Buffered:
    """An ingest buffer that takes every event and stores nothing yet, as Kafka does."""

    def __init__(self, store: Store) -> None:
        self.events: list[Event] = []

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always reachable."""

    async def submit(self, events: Sequence[Event]) -> dict[str, str]:
        self.events.extend(events)
        return {event.id: event.id for event in events}


KAFKA = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # only selects the buffered answers


async def test_a_buffered_event_is_answered_as_not_stored_yet(tmp_path: Path) -> None:
    async with running_api(tmp_path, env=KAFKA, buffer=_Buffered) as api:
        response = await api.submit()

    data = response.json()["data"]
    assert (data["status"], data["duplicate"], data["stored"]) == ("PENDING", False, False)
    assert "Kafka" in response.json()["message"]


async def test_with_a_buffer_a_stored_twin_is_found_and_nothing_is_buffered(
    tmp_path: Path,
) -> None:
    when = at(3600)
    async with running_api(tmp_path, env=KAFKA, buffer=_Buffered) as api:
        first = await api.submitted_id(scheduled_at=when)
        buffered = api.tf.buffer
        assert isinstance(buffered, _Buffered)
        await api.store.insert_many(buffered.events)  # the ingest consumer's part
        again = await api.submit(scheduled_at=when)

    assert again.json()["data"] == {
        "id": first,
        "status": "PENDING",
        "duplicate": True,
        "stored": True,
    }
    assert len(buffered.events) == 1


async def test_with_a_buffer_a_store_outage_doesnt_stop_submissions(tmp_path: Path) -> None:
    async with running_api(tmp_path, env=KAFKA, buffer=_Buffered) as api:
        api.memory.faults.down.add("get")
        first = await api.submit(external_job_id="a")
        api.memory.faults.fail["get"] = [StoreUnavailable("still down")]
        second = await api.submit(external_job_id="b")

    for response in (first, second):
        assert response.status_code == 202
        assert response.json()["data"]["stored"] is False


# -- fields and parameters the API doesn't know ------------------------------------------------


async def test_an_unknown_field_is_named_in_the_answers_warnings(api: Harness) -> None:
    body = event_json(max_retry=5, colour="blue")
    del body["max_retries"]

    response = await api.client.post(EVENTS, json=body)

    assert response.status_code == 202
    warnings = {w["field"]: w["message"] for w in response.json()["data"]["warnings"]}
    assert set(warnings) == {"max_retry", "colour"}
    assert "did you mean max_retries?" in warnings["max_retry"]
    stored = await api.store.get(response.json()["data"]["id"])
    assert stored is not None
    assert stored.max_retries == 3


async def test_unknown_fields_of_batch_items_are_warned_by_index(api: Harness) -> None:
    events = [event_json(external_job_id="a"), event_json(external_job_id="b", sauce=1)]
    response = await api.client.post(f"{EVENTS}/batch", json={"events": events})

    assert response.status_code == 202
    assert response.json()["data"]["warnings"] == [
        {"index": 1, "field": "sauce", "message": "is not a field of an event"}
    ]


async def test_unknown_fields_can_be_refused(tmp_path: Path) -> None:
    async with running_api(tmp_path, env={"TIMEFUSE_UNKNOWN_FIELDS": "reject"}) as api:
        single = await api.client.post(EVENTS, json=event_json(max_retry=5))
        events = [event_json(external_job_id="a"), event_json(external_job_id="b", sauce=1)]
        batch = await api.client.post(f"{EVENTS}/batch", json={"events": events})

    assert single.status_code == 422
    assert [e["field"] for e in single.json()["errors"]] == ["max_retry"]
    assert batch.status_code == 202
    (rejected,) = batch.json()["data"]["rejected_events"]
    assert (rejected["index"], rejected["errors"][0]["field"]) == (1, "sauce")


async def test_an_unknown_field_of_a_batch_body_is_warned_with_no_index(api: Harness) -> None:
    body = {"events": [event_json()], "dry_run": True, "event": 1}

    response = await api.client.post(f"{EVENTS}/batch", json=body)

    assert response.status_code == 202, response.text
    warnings = response.json()["data"]["warnings"]
    assert [(w["index"], w["field"]) for w in warnings] == [(None, "dry_run"), (None, "event")]
    assert "did you mean events?" in warnings[1]["message"]
    # Not a dry run: the event was accepted and stored.
    stored = await api.store.get(response.json()["data"]["ids"][0]["id"])
    assert stored is not None


async def test_an_unknown_field_of_a_batch_body_can_be_refused(tmp_path: Path) -> None:
    async with running_api(tmp_path, env={"TIMEFUSE_UNKNOWN_FIELDS": "reject"}) as api:
        body = {"events": [event_json()], "dry_run": True}
        response = await api.client.post(f"{EVENTS}/batch", json=body)
        listed = await api.client.get(EVENTS)

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["dry_run"]
    assert listed.json()["data"]["events"] == []


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        (EVENTS, {"sttaus": "FAILED"}, ["sttaus"]),
        (EVENTS, {"status": "FAILED", "limt": "5", "x": "1"}, ["limt", "x"]),
        (f"{EVENTS}/external/job-1", {"sorce": "billing"}, ["sorce"]),
        (f"{EVENTS}/statistics", {"source": "billing"}, ["source"]),
    ],
)
async def test_an_unknown_query_parameter_is_a_400_naming_it(
    api: Harness, path: str, params: dict[str, str], named: list[str]
) -> None:
    await api.submit()
    response = await api.client.get(path, params=params)

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == named


# -- external ids: which sources, and pages of /all --------------------------------------------


async def test_source_narrows_the_external_id_operations_to_one_source(api: Harness) -> None:
    when = at(3600)
    billing = await api.submitted_id(source="billing", external_job_id="order-1", scheduled_at=when)
    shipping = await api.submitted_id(
        source="shipping", external_job_id="order-1", scheduled_at=when
    )
    ext = f"{EVENTS}/external/order-1"

    every = await api.client.get(f"{ext}/all")
    only = await api.client.get(ext, params={"source": "shipping"})
    cancelled = await api.client.delete(ext, params={"source": "billing"})

    assert {e["id"] for e in every.json()["data"]} == {billing, shipping}
    assert only.json()["data"]["id"] == shipping
    assert cancelled.json()["data"] == {"cancelled": 1}
    left = await api.client.get(f"{ext}/all", params={"source": "shipping"})
    assert [(e["id"], e["status"]) for e in left.json()["data"]] == [(shipping, "PENDING")]


async def test_all_pages_through_every_event_of_an_external_id(api: Harness) -> None:
    base = datetime.now(UTC) + timedelta(hours=1)
    made = [
        await api.submitted_id(
            external_job_id="daily", scheduled_at=(base + timedelta(days=n)).isoformat()
        )
        for n in range(7)
    ]
    seen: list[str] = []
    url: str | None = f"{EVENTS}/external/daily/all?limit=3"
    pages = 0
    while url is not None:
        response = await api.client.get(url)
        assert response.status_code == 200, response.text
        seen += [event["id"] for event in response.json()["data"]]
        if pages == 0:  # an event made between two pages shifts nothing
            made.append(await api.submitted_id(external_job_id="daily", scheduled_at=at(60)))
        pages += 1
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None

    assert pages == 3
    assert seen == list(reversed(made[:7]))  # newest first, each once
    assert len(set(seen)) == 7


async def test_all_reaches_the_newest_events_up_to_its_depth_and_then_ends(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The documented ceiling, scaled down: 5 instead of 100,000.
    monkeypatch.setattr(by_external, "MAX_DEPTH", 5)
    base = datetime.now(UTC) + timedelta(hours=1)
    made = [
        await api.submitted_id(
            external_job_id="deep", scheduled_at=(base + timedelta(days=n)).isoformat()
        )
        for n in range(8)
    ]
    seen: list[str] = []
    url: str | None = f"{EVENTS}/external/deep/all?limit=2"
    while url is not None:
        response = await api.client.get(url)
        assert response.status_code == 200, response.text
        seen += [event["id"] for event in response.json()["data"]]
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None

    assert seen == list(reversed(made))[:5]


async def test_a_cursor_this_api_did_not_make_is_a_400(api: Harness) -> None:
    response = await api.client.get(f"{EVENTS}/external/job-1/all", params={"cursor": "nope"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "cursor"
