"""Heartbeats on their own: when vouching for the process heartbeats first, and what an
outage of the store's heartbeats tells the operator."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import structlog

from tests.service.conftest import World
from timefuse.service.presence import Presence

pytestmark = pytest.mark.looptime

START = datetime(2026, 1, 1, tzinfo=UTC)
FAILED = "heartbeat failed; retrying"
BACK = "heartbeats reach the store again"


async def test_vouching_heartbeats_unless_a_beat_within_half_the_dead_after_time_succeeded(
    world: World,
) -> None:
    clock = [100.0]
    presence = Presence(
        world.store,
        worker="worker-1",
        roles=["dispatch"],
        started_at=START,
        dead_after_seconds=5.0,
        monotonic=lambda: clock[0],
    )
    calls = world.memory.faults.calls
    await presence.vouch()  # never heard of: heartbeat first
    assert calls["heartbeat"] == 1
    await presence.vouch()
    clock[0] = 102.0
    await presence.vouch()
    assert calls["heartbeat"] == 1  # heard of 2 s ago: within 2.5 s
    clock[0] = 102.5
    await presence.vouch()
    assert calls["heartbeat"] == 2  # 2.5 s: half the dead-after time is up
    (record,) = await world.store.workers()
    assert record.worker == "worker-1"


async def test_a_heartbeat_outage_is_told_once_at_its_start_and_once_at_its_end(
    world: World,
) -> None:
    presence = Presence(world.store, worker="w", roles=["api"], started_at=START)
    faults = world.memory.faults
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(presence.run(stop))
        await asyncio.sleep(1.5)  # two beats that reached the store: nothing to tell
        faults.down.add("heartbeat")
        await asyncio.sleep(3.0)  # three that failed
        faults.down.clear()
        await asyncio.sleep(2.0)
        faults.down.add("heartbeat")  # a later outage is news again
        await asyncio.sleep(2.0)
        faults.down.clear()
        await asyncio.sleep(1.0)
        stop.set()
        await task
    told = [(e["event"], e["log_level"]) for e in logs if e["event"] in (FAILED, BACK)]
    assert told == [(FAILED, "warning"), (BACK, "info"), (FAILED, "warning"), (BACK, "info")]
