"""Crashes in the middle of work: what was acknowledged is delivered after a restart."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

pytestmark = pytest.mark.slow

Start = Callable[..., TimefuseProcess]


def flood_event(receiver: Receiver, n: int) -> dict[str, object]:
    return {
        "external_job_id": f"flood-{n}-{uuid.uuid4().hex[:8]}",
        "source": "flood",
        "scheduled_at": (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat(),
        "delivery_type": "http",
        "destination": receiver.url("/flood"),
        "payload": {"n": n},
    }


async def test_sqlite_killed_during_a_flood_of_submissions_keeps_every_acknowledged_event(
    timefuse: Start, receiver: Receiver
) -> None:
    tf = timefuse()
    accepted: set[str] = set()
    refused = 0
    stop = asyncio.Event()

    async def submitter(worker: int) -> None:
        nonlocal refused
        n = worker * 1_000_000
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                events = [flood_event(receiver, n + i) for i in range(50)]
                n += 50
                try:
                    response = await client.post(
                        f"{tf.base_url}/api/v1/events/batch", json={"events": events}
                    )
                except httpx.HTTPError:
                    refused += 1  # the crash cut this request: nothing was promised
                    await asyncio.sleep(0.05)
                    continue
                if response.status_code == 202:
                    accepted.update(str(item["id"]) for item in response.json()["data"]["ids"])

    submitters = [asyncio.create_task(submitter(w)) for w in range(4)]
    # Kill at a moment the test doesn't choose, once the flood is going (however long a busy
    # machine takes to get it there): batches are being written and delivered.
    async with asyncio.timeout(60):
        while len(accepted) < 100:
            await asyncio.sleep(0.05)
    await asyncio.sleep(random.uniform(0.0, 0.8))
    tf.kill()
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*submitters)
    acknowledged_before_kill = len(accepted)
    assert acknowledged_before_kill >= 100, "the flood never got going"

    tf.start()
    assert await receiver.wait_for(
        lambda: {r.event_id for r in receiver.on("/flood")} >= accepted, timeout=60
    ), f"{len(accepted - {r.event_id for r in receiver.on('/flood')})} acknowledged events lost"
    print(
        f"\nacknowledged {acknowledged_before_kill}, cut by the kill {refused}, "
        f"deliveries {len(receiver.on('/flood'))}"
    )
