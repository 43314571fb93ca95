"""What an accepted submission tells others: the spread-offset metric of a windowed event,
and the dispatcher's wake-up only when the event is due before it planned to look."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.service.conftest import World
from tests.service.test_operations import body
from timefuse.service.wakeup import DueSignal

pytestmark = pytest.mark.looptime


async def test_a_windowed_submission_records_the_offset_it_was_given(world: World) -> None:
    service = world.events()
    accepted = await service.submit(body(delivery_window_seconds=600.0))
    await service.submit(body(external_job_id="job-2"))  # no window: no offset

    stored = await world.store.get(accepted.id)
    assert stored is not None
    offset = (stored.next_attempt_at - stored.scheduled_at).total_seconds()
    assert 0.0 < offset < 600.0
    sample = world.metrics.registry.get_sample_value
    assert sample("timefuse_spread_offset_seconds_count") == 1
    assert sample("timefuse_spread_offset_seconds_sum") == pytest.approx(offset)


async def test_a_submission_due_after_the_planned_wake_up_wakes_nobody(world: World) -> None:
    wakeup = DueSignal(world.clock)
    service = world.events(wakeup=wakeup)
    wakeup.plan(world.clock.now() + timedelta(hours=2))
    woken = asyncio.create_task(wakeup.wait(3600.0))

    await service.submit(body(scheduled_at="2030-01-01T03:00:00+00:00"))
    await asyncio.sleep(1.0)
    assert not woken.done()

    await service.submit(body(external_job_id="job-2"))  # due in an hour: before the plan
    await asyncio.sleep(1.0)
    assert woken.done()
    assert woken.result() is True
