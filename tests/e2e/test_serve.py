"""``timefuse serve`` as a user drives it: real process, real HTTP, real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
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


async def test_each_ending_of_an_event_through_a_real_receiver(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    # One process for the four endings (the service tier holds their rules in detail):
    # a retried success, a permanent failure, retries running out, a cancellation.
    receiver.behaviours["/flaky"] = fail_then(503, failures=2)
    receiver.behaviours["/bad"] = always(400)
    receiver.behaviours["/down"] = always(503)
    tf = timefuse()
    cancelled = await submit(client, tf, event(receiver, "/cancelled", at(1.0)))
    response = await client.delete(f"{tf.base_url}/api/v1/events/{cancelled}")
    assert response.status_code == 200, response.text
    flaky = await submit(client, tf, event(receiver, "/flaky", at(0)))
    bad = await submit(client, tf, event(receiver, "/bad", at(0)))
    down = await submit(client, tf, event(receiver, "/down", at(0), max_retries=2))

    done = await wait_status(client, tf, flaky, "COMPLETED", 15)
    assert (done["retry_count"], receiver.count("/flaky")) == (2, 3)
    assert {r.event_id for r in receiver.on("/flaky")} == {flaky}
    dead = await wait_status(client, tf, down, "DEAD_LETTER", 15)
    assert (dead["retry_count"], receiver.count("/down")) == (3, 3)
    failed = await wait_status(client, tf, bad, "FAILED", 5)
    assert "400" in str(failed["last_error"])
    assert receiver.count("/bad") == 1
    # Long past the cancelled event's time (and the others' last retries): nothing more.
    await wait_status(client, tf, cancelled, "CANCELLED", 1)
    assert receiver.on("/cancelled") == []
    assert (receiver.count("/bad"), receiver.count("/down")) == (1, 3)


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
    in_flight_cap = 100
    tf = timefuse({"TIMEFUSE_LEASE_SECONDS": "2", "TIMEFUSE_CONCURRENCY": str(in_flight_cap)})
    events = [event(receiver, "/burst", at(0.5)) for _ in range(600)]
    response = await client.post(f"{tf.base_url}/api/v1/events/batch", json={"events": events})
    assert response.status_code == 202, response.text
    ids = {item["id"] for item in response.json()["data"]["ids"]}
    assert len(ids) == 600
    assert await receiver.wait_for(lambda: len(receiver.on("/burst")) >= 100, timeout=20)
    tf.kill()
    # Let the receiver read the requests already on the wire (tf.start() blocks this loop).
    await asyncio.sleep(0.5)
    before_crash = Counter(r.event_id for r in receiver.on("/burst"))
    tf.start()
    assert await receiver.wait_for(
        lambda: {r.event_id for r in receiver.on("/burst")} >= ids, timeout=60
    ), f"missing {len(ids - {r.event_id for r in receiver.on('/burst')})} of 600"
    seen = Counter(r.event_id for r in receiver.on("/burst"))
    duplicated = {event_id for event_id, n in seen.items() if n > 1}
    # A duplicate is an attempt the crash cut off before its outcome was written: made
    # before the kill, at most once again after it. Those are the ones in flight (at most the
    # cap) and those answered whose outcomes were still on their way to the store (written
    # in batches as they come; far fewer than the cap unless the machine stalls the writer).
    assert set(seen) == ids
    assert duplicated <= set(before_crash)
    assert max(seen.values()) <= 2
    assert all(before_crash[event_id] == 1 for event_id in duplicated)
    assert len(duplicated) <= 2 * in_flight_cap
