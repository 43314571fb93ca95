"""``timefuse serve`` as a user drives it: real process, real HTTP, real SQLite file."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver, always, fail_then

Start = Callable[..., TimefuseProcess]


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def event(receiver: Receiver, path: str, when: str, **extra: object) -> dict[str, object]:
    return {
        "external_job_id": extra.pop("external_job_id", f"job-{time.monotonic_ns()}"),
        "source": "e2e",
        "scheduled_at": when,
        "delivery_type": "http",
        "destination": receiver.url(path),
        "payload": {"path": path, "n": 1},
        **extra,
    }


async def submit(client: httpx.AsyncClient, tf: TimefuseProcess, body: dict[str, object]) -> str:
    response = await client.post(f"{tf.base_url}/api/v1/events", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["id"])


async def wait_status(
    client: httpx.AsyncClient, tf: TimefuseProcess, event_id: str, status: str, timeout: float
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        data = (await client.get(f"{tf.base_url}/api/v1/events/{event_id}")).json()["data"]
        if data["status"] == status or time.monotonic() > deadline:
            assert data["status"] == status, data
            return dict(data)
        await asyncio.sleep(0.1)


async def test_an_event_arrives_at_its_time_not_before_with_its_webhook_id(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    scheduled = datetime.now(UTC) + timedelta(seconds=2)
    event_id = await submit(client, tf, event(receiver, "/hook", scheduled.isoformat()))
    assert await receiver.wait_for(lambda: bool(receiver.on("/hook")), timeout=10)
    arrival = receiver.on("/hook")[0]
    assert arrival.at >= scheduled.timestamp()
    assert arrival.at - scheduled.timestamp() < 1.5
    assert arrival.event_id == event_id
    assert arrival.headers["content-type"] == "application/json"
    assert arrival.body == b'{"path":"/hook","n":1}'
    done = await wait_status(client, tf, event_id, "COMPLETED", 5)
    assert done["retry_count"] == 0


async def test_lateness_of_a_batch_due_together_is_small(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    scheduled = datetime.now(UTC) + timedelta(seconds=2)
    events = [event(receiver, "/late", scheduled.isoformat()) for _ in range(200)]
    response = await client.post(f"{tf.base_url}/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    assert await receiver.wait_for(lambda: len(receiver.on("/late")) >= 200, timeout=20)
    lateness = sorted(r.at - scheduled.timestamp() for r in receiver.on("/late"))
    assert lateness[0] >= 0
    p50 = statistics.median(lateness)
    p99 = lateness[int(len(lateness) * 0.99) - 1]
    print(f"\nlateness of 200 events due at once: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert p99 < 5.0


async def test_a_receiver_failing_twice_then_answering_ends_completed_after_three_attempts(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.behaviours["/flaky"] = fail_then(503, failures=2)
    tf = timefuse()
    event_id = await submit(client, tf, event(receiver, "/flaky", at(0)))
    done = await wait_status(client, tf, event_id, "COMPLETED", 15)
    assert len(receiver.on("/flaky")) == 3
    assert done["retry_count"] == 2
    assert {r.event_id for r in receiver.on("/flaky")} == {event_id}


async def test_a_receiver_answering_400_ends_failed_after_one_attempt(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.behaviours["/bad"] = always(400)
    tf = timefuse()
    event_id = await submit(client, tf, event(receiver, "/bad", at(0)))
    done = await wait_status(client, tf, event_id, "FAILED", 10)
    await asyncio.sleep(1.0)
    assert len(receiver.on("/bad")) == 1
    assert "400" in str(done["last_error"])


async def test_always_503_with_two_retries_ends_dead_letter_after_three_attempts(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.behaviours["/down"] = always(503)
    tf = timefuse()
    event_id = await submit(client, tf, event(receiver, "/down", at(0), max_retries=2))
    done = await wait_status(client, tf, event_id, "DEAD_LETTER", 15)
    await asyncio.sleep(1.0)
    assert len(receiver.on("/down")) == 3
    assert done["retry_count"] == 3


async def test_cancel_before_the_time_means_no_delivery(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    event_id = await submit(client, tf, event(receiver, "/cancelled", at(1.5)))
    response = await client.delete(f"{tf.base_url}/api/v1/events/{event_id}")
    assert response.status_code == 200, response.text
    await asyncio.sleep(3.0)
    assert receiver.on("/cancelled") == []
    await wait_status(client, tf, event_id, "CANCELLED", 1)


async def test_a_restart_loses_nothing_that_was_accepted(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    ids = [await submit(client, tf, event(receiver, "/restart", at(3))) for _ in range(20)]
    assert tf.stop() == 0
    tf.start()
    assert await receiver.wait_for(lambda: len(receiver.on("/restart")) >= 20, timeout=20)
    assert {r.event_id for r in receiver.on("/restart")} == set(ids)


async def test_kill_9_during_a_burst_then_restart_delivers_every_accepted_event(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.delay_seconds["/burst"] = 0.2
    tf = timefuse({"TIMEFUSE_LEASE_SECONDS": "2"})
    events = [event(receiver, "/burst", at(0.5)) for _ in range(1000)]
    response = await client.post(f"{tf.base_url}/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    ids = {item["id"] for item in response.json()["data"]["ids"]}
    assert len(ids) == 1000
    assert await receiver.wait_for(lambda: len(receiver.on("/burst")) >= 100, timeout=20)
    tf.kill()
    delivered_before_crash = len(receiver.on("/burst"))
    tf.start()
    assert await receiver.wait_for(
        lambda: {r.event_id for r in receiver.on("/burst")} >= ids, timeout=60
    ), f"missing {len(ids - {r.event_id for r in receiver.on('/burst')})} of 1000"
    duplicates = len(receiver.on("/burst")) - len(ids)
    print(f"\ndelivered before kill -9: {delivered_before_crash}; duplicates after: {duplicates}")
