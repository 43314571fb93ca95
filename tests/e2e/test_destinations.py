"""Herd control as a receiver sees it: caps, a breaker, and spreading windows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver, always

Start = Callable[..., TimefuseProcess]


@pytest.fixture
async def slow_receiver() -> AsyncIterator[Receiver]:
    server = Receiver(delay_seconds={"/slow": 2.0})
    await server.start()
    yield server
    await server.stop()


def events(receiver: Receiver, path: str, n: int, when: datetime, **extra: object) -> list[dict]:
    return [
        {
            "external_job_id": f"{path}-{i}",
            "source": "herd",
            "scheduled_at": when.isoformat(),
            "delivery_type": "http",
            "destination": receiver.url(path),
            "payload": {"i": i},
            **extra,
        }
        for i in range(n)
    ]


async def submit_all(client: httpx.AsyncClient, tf: TimefuseProcess, batch: list[dict]) -> None:
    for start in range(0, len(batch), 1000):
        response = await client.post(
            f"{tf.base_url}/api/v1/events/batch", json={"events": batch[start : start + 1000]}
        )
        assert response.status_code == 202, response.text


async def test_a_slow_receiver_does_not_starve_a_fast_one_and_caps_hold(
    timefuse: Start, receiver: Receiver, slow_receiver: Receiver, client: httpx.AsyncClient
) -> None:
    slow_host = f"127.0.0.1:{slow_receiver.port}"
    tf = timefuse(
        {
            "TIMEFUSE_DESTINATION_CONCURRENCY": "50",
            "TIMEFUSE_LEASE_SECONDS": "60",
            "TIMEFUSE_DESTINATION_LIMITS": json.dumps({slow_host: {"concurrency": 200}}),
        }
    )
    due = datetime.now(UTC) + timedelta(seconds=3)
    herd = events(slow_receiver, "/slow", 2000, due) + events(receiver, "/fast", 2000, due)
    await submit_all(client, tf, herd)
    assert await receiver.wait_for(lambda: receiver.count("/fast") >= 2000, timeout=60)
    fast_done = max(r.at for r in receiver.on("/fast"))
    assert len(slow_receiver.on("/slow")) < 2000, "the slow backlog drained first"
    assert await slow_receiver.wait_for(lambda: slow_receiver.count("/slow") >= 2000, timeout=90)
    slow_done = max(r.at for r in slow_receiver.on("/slow"))
    print(
        f"\nfast drained {fast_done - due.timestamp():.1f} s after due, "
        f"slow {slow_done - due.timestamp():.1f} s; max concurrent fast "
        f"{receiver.max_concurrent}, slow {slow_receiver.max_concurrent}"
    )
    assert fast_done < slow_done
    assert receiver.max_concurrent <= 50
    assert slow_receiver.max_concurrent <= 200


async def test_a_failing_receiver_trips_the_breaker_and_recovers(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.behaviours["/down"] = always(503)
    tf = timefuse(
        {
            "TIMEFUSE_BREAKER_FAILURES": "3",
            "TIMEFUSE_BREAKER_COOLDOWN_SECONDS": "3",
            "TIMEFUSE_RETRY_BASE_MS": "100",
            "TIMEFUSE_RETRY_CAP_MS": "200",
        }
    )
    batch = events(receiver, "/down", 10, datetime.now(UTC), max_retries=10)
    await submit_all(client, tf, batch)
    assert await receiver.wait_for(lambda: receiver.count("/down") >= 10, timeout=10)
    await asyncio.sleep(0.5)
    while_open = len(receiver.on("/down"))
    await asyncio.sleep(1.5)
    assert len(receiver.on("/down")) == while_open, "attempts grew while the breaker was open"
    metrics = (await client.get(f"{tf.base_url}/metrics")).text
    assert f'timefuse_destination_breaker_open{{destination="127.0.0.1:{receiver.port}"}} 1.0' in (
        metrics
    )
    receiver.behaviours["/down"] = always(200)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = (await client.get(f"{tf.base_url}/api/v1/events/statistics")).json()["data"]
        if stats["COMPLETED"] == 10:
            break
        await asyncio.sleep(0.2)
    assert stats["COMPLETED"] == 10, stats


async def test_resetting_an_open_breaker_releases_the_events_it_held_back_at_once(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    receiver.behaviours["/held"] = always(503)
    tf = timefuse(
        {
            "TIMEFUSE_BREAKER_FAILURES": "3",
            # Far longer than the test: only the reset can let the events through.
            "TIMEFUSE_BREAKER_COOLDOWN_SECONDS": "300",
            "TIMEFUSE_RETRY_BASE_MS": "100",
            "TIMEFUSE_RETRY_CAP_MS": "200",
            # A queue of claimed events behind 4 in flight: the breaker holds those back.
            "TIMEFUSE_DESTINATION_CONCURRENCY": "4",
        }
    )
    await submit_all(client, tf, events(receiver, "/held", 100, datetime.now(UTC), max_retries=10))
    assert await receiver.wait_for(lambda: receiver.count("/held") >= 3, timeout=10)
    key = f"127.0.0.1:{receiver.port}"
    admin = f"{tf.base_url}/api/v1/events/admin/destinations"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = {d["key"]: d for d in (await client.get(admin)).json()["data"]}
        if states.get(key, {}).get("breaker") == "OPEN":
            break
        await asyncio.sleep(0.1)
    assert states[key]["breaker"] == "OPEN", states
    receiver.behaviours["/held"] = always(200)
    reset = await client.post(f"{admin}/{key}/reset")
    assert reset.status_code == 200, reset.text
    assert reset.json()["data"]["breaker"] == "CLOSED"
    released = time.monotonic()
    while time.monotonic() < released + 20:
        stats = (await client.get(f"{tf.base_url}/api/v1/events/statistics")).json()["data"]
        if stats["COMPLETED"] == 100:
            break
        await asyncio.sleep(0.2)
    assert stats["COMPLETED"] == 100, f"{stats} 20 s after the reset (cool-down: 300 s)"


async def test_a_delivery_window_spreads_a_herd_over_the_window(
    timefuse: Start, receiver: Receiver, client: httpx.AsyncClient
) -> None:
    tf = timefuse()
    due = datetime.now(UTC) + timedelta(seconds=1)
    await submit_all(client, tf, events(receiver, "/spread", 1000, due, delivery_window_seconds=60))
    await asyncio.sleep(7.0)
    early = [r.at - due.timestamp() for r in receiver.on("/spread")]
    # A tenth of the window has passed: about a tenth of the herd, not all of it.
    assert 40 <= len(early) <= 170, len(early)
    assert all(0 <= offset < 7.5 for offset in early)
