"""Waking a sleeping dispatcher: only news of work due sooner than it planned to look wakes it,
and delays are read on the store's clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.service.conftest import START, LoopClock, loop_time
from timefuse.service.wakeup import DueSignal

pytestmark = pytest.mark.looptime


async def test_the_stores_clock_is_carried_forward_on_this_processs() -> None:
    clock = LoopClock()
    signal = DueSignal(clock)
    assert signal.store_now() == clock.now()  # nothing observed yet: no offset
    signal.observe(clock.now() + timedelta(seconds=30))  # the store is 30 s ahead
    await asyncio.sleep(10.0)
    assert signal.store_now() == START + timedelta(seconds=loop_time() + 30)
    assert DueSignal().store_now() is None  # no clock: no idea


async def test_a_delay_is_read_as_from_the_stores_now() -> None:
    clock = LoopClock()
    signal = DueSignal(clock)
    signal.observe(clock.now() - timedelta(seconds=100))  # the store is 100 s behind
    store_now = clock.now() - timedelta(seconds=100)
    signal.plan(store_now + timedelta(seconds=5))  # planned to look 5 s from now
    signal.notify_after(10.0)  # due later than that: no news
    assert not await signal.wait(1.0)
    signal.plan(store_now + timedelta(seconds=5))
    signal.notify_after(3.0)  # sooner: wakes it
    assert await signal.wait(1.0)


async def test_without_a_clock_any_delay_wakes_the_dispatcher() -> None:
    signal = DueSignal()
    signal.plan(START)
    signal.notify_after(3600.0)
    assert await signal.wait(1.0)
