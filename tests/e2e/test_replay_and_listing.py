"""Redelivery, attempt histories, listings and retention, against a real ``timefuse serve``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver, always

Start = Callable[..., TimefuseProcess]
EVENTS = "/api/v1/events"
HOUR = timedelta(hours=1)


def event(receiver: Receiver, path: str, when: datetime, **extra: object) -> dict[str, object]:
    return {
        "external_job_id": f"job-{time.monotonic_ns()}",
        "source": "replay",
        "scheduled_at": when.isoformat(),
        "delivery_type": "http",
        "destination": receiver.url(path),
        "payload": {"path": path},
        **extra,
    }


async def call(
    client: httpx.AsyncClient, tf: TimefuseProcess, method: str, path: str, **kwargs: Any
) -> Any:
    """The ``data`` of a successful answer."""
    response = await client.request(method, tf.base_url + path, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()["data"]


async def submit(client: httpx.AsyncClient, tf: TimefuseProcess, body: dict[str, object]) -> str:
    data = await call(client, tf, "POST", EVENTS, json=body)
    return str(data["id"])


async def wait_status(
    client: httpx.AsyncClient, tf: TimefuseProcess, event_id: str, status: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = await call(client, tf, "GET", f"{EVENTS}/{event_id}")
        if data["status"] == status or time.monotonic() > deadline:
            assert data["status"] == status, data
            return data
        await asyncio.sleep(0.1)


async def test_a_dead_letter_redelivered_arrives_and_keeps_its_history(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    receiver.behaviours["/flaky"] = always(503)
    event_id = await submit(client, tf, event(receiver, "/flaky", datetime.now(UTC), max_retries=1))
    await wait_status(client, tf, event_id, "DEAD_LETTER", 15)
    destinations = await call(client, tf, "GET", f"{EVENTS}/admin/destinations")

    receiver.behaviours["/flaky"] = always(200)
    redelivered = await call(client, tf, "POST", f"{EVENTS}/{event_id}/redeliver")
    done = await wait_status(client, tf, event_id, "COMPLETED", 15)
    attempts = await call(client, tf, "GET", f"{EVENTS}/{event_id}/attempts")

    assert redelivered["id"] == event_id
    assert redelivered["status"] in ("PENDING", "PROCESSING", "COMPLETED")
    assert done["retry_count"] == 0
    assert [a["sequence"] for a in attempts] == [1, 2, 3]
    assert [a["attempt"] for a in attempts] == [1, 2, 1]
    assert [a["outcome"] for a in attempts] == ["RETRIABLE", "RETRIABLE", "SUCCESS"]
    assert [a["status_code"] for a in attempts] == [503, 503, 200]
    arrivals = receiver.on("/flaky")
    assert len(arrivals) == 3
    assert {arrival.event_id for arrival in arrivals} == {event_id}
    # What the README tells receivers: the redelivery keeps webhook-id and starts
    # timefuse-attempt again at 1, exactly as a resend of the first attempt would look.
    assert {arrival.headers["webhook-id"] for arrival in arrivals} == {event_id}
    assert [arrival.headers["timefuse-attempt"] for arrival in arrivals] == ["1", "2", "1"]
    # The dispatcher of this process met the receiver: two failures, not enough to trip.
    key = f"127.0.0.1:{receiver.port}"
    assert [(d["key"], d["consecutive_failures"]) for d in destinations] == [(key, 2)]
    reset = await call(client, tf, "POST", f"{EVENTS}/admin/destinations/{key}/reset")
    assert (reset["breaker"], reset["consecutive_failures"]) == ("CLOSED", 0)


async def test_only_a_finished_event_is_redelivered(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    event_id = await submit(client, tf, event(receiver, "/later", datetime.now(UTC) + HOUR))

    response = await client.post(f"{tf.base_url}{EVENTS}/{event_id}/redeliver")

    assert response.status_code == 409
    assert "PENDING" in response.json()["message"]


async def test_dead_letters_are_redelivered_in_bulk(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    receiver.behaviours["/bulk"] = always(400)  # permanent: FAILED, not DEAD_LETTER
    failed = await submit(client, tf, event(receiver, "/bulk", datetime.now(UTC)))
    receiver.behaviours["/dead"] = always(503)
    dead = [
        await submit(client, tf, event(receiver, "/dead", datetime.now(UTC), max_retries=0))
        for _ in range(3)
    ]
    for event_id in dead:
        await wait_status(client, tf, event_id, "DEAD_LETTER", 15)
    await wait_status(client, tf, failed, "FAILED", 15)

    receiver.behaviours["/dead"] = always(200)
    answer = await call(client, tf, "POST", f"{EVENTS}/admin/redeliver", json={"source": "replay"})

    assert answer == {"redelivered": 3}
    for event_id in dead:
        await wait_status(client, tf, event_id, "COMPLETED", 15)
    assert (await call(client, tf, "GET", f"{EVENTS}/{failed}"))["status"] == "FAILED"


async def submit_many(
    client: httpx.AsyncClient, tf: TimefuseProcess, receiver: Receiver, n: int
) -> list[str]:
    """``n`` events far ahead, seven to a scheduled second (ties are ordered by id)."""
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    ids: list[str] = []
    for start in range(0, n, 1000):
        batch = [
            event(receiver, "/far", base + timedelta(seconds=i // 7), external_job_id=f"far-{i}")
            for i in range(start, min(n, start + 1000))
        ]
        data = await call(client, tf, "POST", f"{EVENTS}/batch", json={"events": batch})
        assert data["rejected"] == 0
        ids += [item["id"] for item in data["ids"]]
    return ids


async def every_page(
    client: httpx.AsyncClient, tf: TimefuseProcess, **params: str
) -> tuple[list[dict[str, Any]], int]:
    listed: list[dict[str, Any]] = []
    pages = 0
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        data = await call(client, tf, "GET", EVENTS, params=query)
        listed += data["events"]
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            return listed, pages


async def test_ten_thousand_events_page_through_without_gaps_or_repeats(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    ids = await submit_many(client, tf, receiver, 10_000)
    cancelled = set(ids[::200])
    for event_id in cancelled:
        await call(client, tf, "DELETE", f"{EVENTS}/{event_id}")

    listed, pages = await every_page(client, tf, limit="700")
    pending, _ = await every_page(client, tf, limit="700", status="PENDING")
    only_cancelled, _ = await every_page(client, tf, status="CANCELLED")

    listed_ids = [e["id"] for e in listed]
    assert len(listed_ids) == 10_000
    assert set(listed_ids) == set(ids)
    assert pages == 15  # 14 full pages of 700 and one of 200
    order = [(datetime.fromisoformat(e["scheduled_at"]), e["id"]) for e in listed]
    assert order == sorted(order)
    assert len(pending) == 10_000 - len(cancelled)
    assert {e["status"] for e in pending} == {"PENDING"}
    assert not {e["id"] for e in pending} & cancelled
    assert {e["id"] for e in only_cancelled} == cancelled


async def test_cleanup_removes_finished_events_and_counts_them(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse({"CLEANUP_RETENTION_DAYS": "5"})
    done = await submit(client, tf, event(receiver, "/ok", datetime.now(UTC)))
    pending = await submit(client, tf, event(receiver, "/ok", datetime.now(UTC) + HOUR))
    await wait_status(client, tf, done, "COMPLETED", 15)

    kept = await call(client, tf, "POST", f"{EVENTS}/admin/cleanup")
    purged = await call(client, tf, "POST", f"{EVENTS}/admin/cleanup", params={"days": "0"})

    assert kept == {"deleted": 0, "days": 5}
    assert purged == {"deleted": 1, "days": 0}
    gone = await client.get(f"{tf.base_url}{EVENTS}/{done}")
    assert gone.status_code == 404
    assert (await call(client, tf, "GET", f"{EVENTS}/{pending}"))["status"] == "PENDING"
