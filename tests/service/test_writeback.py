"""The outcome writer on its own: what it writes, what it keeps through an outage, what it
reports as written."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
import structlog
import structlog.testing

from tests.service.conftest import World, loop_time
from timefuse.domain.callback import callback_event
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import (
    ClaimRef,
    ClaimRequest,
    OutcomeUpdate,
    StoreRefused,
    StoreUnavailable,
)
from timefuse.service.wakeup import DueSignal
from timefuse.service.writeback import OutcomeWriter
from timefuse.testing.factories import make_outcome

pytestmark = pytest.mark.looptime


def writer_for(world: World, batch_size: int = 100) -> tuple[OutcomeWriter, DueSignal]:
    wakeup = DueSignal(world.clock)
    writer = OutcomeWriter(world.store, wakeup, batch_size=batch_size, monotonic=loop_time)
    return writer, wakeup


async def claimed(world: World, n: int) -> list[Event]:
    await world.submit(*(world.event() for _ in range(n)))
    batch = await world.store.claim(ClaimRequest("worker-1", n, 60.0))
    assert batch is not None
    return list(batch.events)


async def test_outcomes_are_written_and_counted_as_the_store_applied_them(world: World) -> None:
    events = await claimed(world, 3)
    writer, _ = writer_for(world)
    for event in events:
        writer.add(make_outcome(event))
    assert writer.pending == 3
    assert await writer.flush()
    assert (writer.written, writer.pending, writer.dropped) == (3, 0, 0)
    assert {(await world.stored(e)).status for e in events} == {EventStatus.COMPLETED}


async def test_an_outcome_the_store_no_longer_takes_is_not_counted_as_written(
    world: World,
) -> None:
    (event,) = await claimed(world, 1)
    stale = make_outcome(event, worker_id="someone-else")  # not the claim's holder
    writer, _ = writer_for(world)
    writer.add(stale)
    assert await writer.flush()
    assert writer.written == 0
    assert (await world.stored(event)).status is EventStatus.PROCESSING


async def test_outcomes_written_while_the_store_is_down_are_kept_not_reported_written(
    world: World,
) -> None:
    events = await claimed(world, 2)
    writer, _ = writer_for(world)
    for event in events:
        writer.add(make_outcome(event))
    world.memory.faults.down.add("record_outcomes")
    assert not await writer.flush()
    assert (writer.written, writer.pending) == (0, 2)
    assert not await writer.flush_until_written(3.0)
    assert (writer.written, writer.pending) == (0, 2)
    world.memory.faults.down.clear()
    assert await writer.flush_until_written(3.0)
    assert (writer.written, writer.pending) == (2, 0)
    assert {(await world.stored(e)).status for e in events} == {EventStatus.COMPLETED}


async def test_a_hand_back_made_during_an_outage_is_written_once_the_store_is_back(
    world: World,
) -> None:
    events = await claimed(world, 2)
    writer, _ = writer_for(world)
    for event in events:
        writer.hand_back(ClaimRef.of(event), 5.0)
    world.memory.faults.down.add("hand_back")
    assert not await writer.flush()
    assert writer.pending == 2
    assert {(await world.stored(e)).status for e in events} == {EventStatus.PROCESSING}
    world.memory.faults.down.clear()
    handed_back_at = world.clock.now()
    assert await writer.flush()
    assert writer.pending == 0
    for event in events:
        stored = await world.stored(event)
        assert stored.status is EventStatus.PENDING
        assert stored.attempts == 0  # handed back uncounted
        assert stored.next_attempt_at == handed_back_at + timedelta(seconds=5.0)


async def test_hand_backs_are_never_due_sooner_than_asked(world: World) -> None:
    events = await claimed(world, 3)
    writer, _ = writer_for(world)
    delays = [0.0, 0.03, 1.26]
    for event, delay in zip(events, delays, strict=True):
        writer.hand_back(ClaimRef.of(event), delay)
    now = world.clock.now()
    assert await writer.flush()
    for event, delay in zip(events, delays, strict=True):
        due = (await world.stored(event)).next_attempt_at
        # Grouped by the tenth of a second, rounded up: never earlier, at most 0.1 s later.
        assert now + timedelta(seconds=delay) <= due <= now + timedelta(seconds=delay + 0.1)


async def test_a_hand_back_added_while_a_batch_is_written_is_not_lost(world: World) -> None:
    first, second = await claimed(world, 2)
    writer, _ = writer_for(world)
    writer.hand_back(ClaimRef.of(first), 0.0)
    stalled = asyncio.Event()
    world.memory.faults.stall["hand_back"] = stalled
    flushing = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.1)  # the first hand-back is being written
    writer.hand_back(ClaimRef.of(second), 0.0)
    stalled.set()
    assert await flushing
    del world.memory.faults.stall["hand_back"]
    await writer.flush()
    assert writer.pending == 0
    assert {(await world.stored(e)).status for e in (first, second)} == {EventStatus.PENDING}


async def test_a_retry_written_wakes_the_dispatcher_for_its_due_time(world: World) -> None:
    (event,) = await claimed(world, 1)
    writer, wakeup = writer_for(world)
    wakeup.observe(world.clock.now())
    writer.add(make_outcome(event, status=EventStatus.PENDING, retry_delay_seconds=2.0))
    assert await writer.flush()
    start = loop_time()
    assert await wakeup.wait(10.0)  # told of the retry at once
    assert loop_time() == pytest.approx(start)


async def test_a_full_batch_is_written_at_once_without_waiting_for_the_flush_interval(
    world: World,
) -> None:
    events = await claimed(world, 4)
    writer, _ = writer_for(world, batch_size=4)
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))
    for event in events:
        writer.add(make_outcome(event))
    await asyncio.sleep(0.001)
    assert writer.written == 4
    stop.set()
    await running


async def test_the_writer_flushes_what_arrives_while_it_runs(world: World) -> None:
    events = await claimed(world, 5)
    writer, _ = writer_for(world)
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))
    for event in events:
        writer.add(make_outcome(event))
        await asyncio.sleep(0.5)
    assert writer.written == 5
    stop.set()
    await running


class RefusingOneStore:
    """Refuses any batch that holds the poisoned event, even without its text."""

    def __init__(self, world: World, poisoned: str) -> None:
        self.world = world
        self.poisoned = poisoned
        self.batches: list[int] = []

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        self.batches.append(len(updates))
        if any(u.event_id == self.poisoned for u in updates):
            raise StoreRefused("no")
        return await self.world.store.record_outcomes(updates)

    async def hand_back(self, refs: Sequence[ClaimRef], delay_seconds: float = 0.0) -> int:
        return await self.world.store.hand_back(refs, delay_seconds)


async def test_an_outcome_refused_even_without_its_text_is_dropped_and_counted(
    world: World,
) -> None:
    events = await claimed(world, 8)
    store = RefusingOneStore(world, poisoned=events[5].id)
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    for event in events:
        writer.add(make_outcome(event))
    assert await writer.flush()
    assert (writer.written, writer.dropped, writer.pending) == (7, 1, 0)
    statuses = [(await world.stored(e)).status for e in events]
    assert (
        statuses
        == [EventStatus.COMPLETED] * 5 + [EventStatus.PROCESSING] + [EventStatus.COMPLETED] * 2
    )
    # Split in halves down to the one at fault: a handful of writes, not one per outcome.
    assert len(store.batches) < 10


class RefusingTextStore(RefusingOneStore):
    """Refuses any batch holding an outcome whose error text has a snowman in it."""

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        self.batches.append(len(updates))
        if any("\u2603" in (u.last_error or "") + (u.attempt.error or "") for u in updates):
            raise StoreRefused("no snowmen")
        return await self.world.store.record_outcomes(updates)


async def test_an_outcome_refused_for_its_text_is_written_without_it(world: World) -> None:
    events = await claimed(world, 6)
    store = RefusingTextStore(world, poisoned="")
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    for n, event in enumerate(events):
        error = "\u2603 melted" if n in (1, 4) else "HTTP 503"
        update = make_outcome(event, status=EventStatus.DEAD_LETTER)
        writer.add(replace(update, last_error=error, attempt=replace(update.attempt, error=error)))
    assert await writer.flush()
    assert (writer.written, writer.dropped) == (6, 0)
    for n, event in enumerate(events):
        stored = await world.stored(event)
        (attempt,) = await world.store.attempts(event.id)
        assert stored.status is EventStatus.DEAD_LETTER
        if n in (1, 4):
            assert stored.last_error == "the delivery type's error text could not be stored"
            assert attempt.error is None
        else:
            assert (stored.last_error, attempt.error) == ("HTTP 503", "HTTP 503")


async def test_every_outcome_refused_outright_is_counted_as_dropped(world: World) -> None:
    events = await claimed(world, 4)

    class RefusingTwo(RefusingOneStore):
        async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
            if any(u.event_id in {events[0].id, events[3].id} for u in updates):
                raise StoreRefused("no")
            return await self.world.store.record_outcomes(updates)

    writer = OutcomeWriter(
        RefusingTwo(world, ""), DueSignal(world.clock), batch_size=100, monotonic=loop_time
    )
    for event in events:
        writer.add(make_outcome(event))
    assert await writer.flush()
    assert (writer.written, writer.dropped, writer.pending) == (2, 2, 0)


async def test_tries_during_an_outage_double_their_pause_up_to_two_seconds(world: World) -> None:
    (event,) = await claimed(world, 1)
    writer, _ = writer_for(world)
    tries: list[float] = []
    record = world.memory.record_outcomes

    async def timed(updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        tries.append(loop_time())
        return await record(updates)

    world.memory.record_outcomes = timed  # type: ignore[method-assign]
    world.memory.faults.down.add("record_outcomes")
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))
    start = loop_time()
    writer.add(make_outcome(event))
    await asyncio.sleep(9.0)
    pauses = [round(b - a, 2) for a, b in itertools.pairwise(tries)]
    assert round(tries[0] - start, 2) == 0.02  # the flush interval
    assert pauses == [0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.0, 2.0, 2.0]
    world.memory.faults.down.clear()
    await asyncio.sleep(2.0)
    assert writer.written == 1
    stop.set()
    await running


OUTAGE = "writing outcomes failed; keeping them and retrying"


async def test_an_outage_is_logged_at_its_first_failure_then_every_half_minute_not_per_try(
    world: World,
) -> None:
    (event,) = await claimed(world, 1)
    writer, _ = writer_for(world)
    tries: list[float] = []
    logged: list[int] = []  # outage warnings logged before each try
    record = world.memory.record_outcomes

    async def timed(updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        tries.append(loop_time())
        logged.append(sum(e["event"] == OUTAGE for e in logs))
        return await record(updates)

    world.memory.record_outcomes = timed  # type: ignore[method-assign]
    world.memory.faults.down.add("record_outcomes")
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(writer.run(stop))
        writer.add(make_outcome(event))
        await asyncio.sleep(65.0)
        during = len(tries)
        world.memory.faults.down.clear()
        await asyncio.sleep(3.0)
        assert writer.written == 1
        # A later outage is news again: logged at its first failure.
        (second,) = await claimed(world, 1)
        world.memory.faults.down.add("record_outcomes")
        writer.add(make_outcome(second))
        await asyncio.sleep(1.0)
        stop.set()
        world.memory.faults.down.clear()
        await running
    # Tries two seconds apart at most, so dozens of them in 65 s; the warnings came with the
    # first, then with the first try at least 30 s after the last warning.
    assert during >= 30
    warned_at = [round(tries[n], 2) for n in range(during) if logged[n + 1] > logged[n]]
    first = tries[0]
    second = min(t for t in tries if t >= first + 30.0)
    third = min(t for t in tries if t >= second + 30.0)
    assert warned_at == [round(t, 2) for t in (first, second, third)]
    back = "writing outcomes again"
    told = [(e["event"], e["log_level"]) for e in logs if e["event"] in (OUTAGE, back)]
    # Three warnings for the 65 s outage, one for the second; each end is told once.
    assert told == [
        *[(OUTAGE, "warning")] * 3,
        (back, "info"),
        (OUTAGE, "warning"),
        (back, "info"),
    ]


# -- completion callbacks: inserted only for outcomes that applied ------------------------------

HOOK = "https://client.example/hook"


async def lost_and_held(world: World) -> tuple[Event, Event]:
    """Two claimed events with callbacks: ``lost`` by worker-1, whose lease ran out and which
    worker-2 has claimed since, and ``held``, still worker-1's."""
    await world.submit(
        *(world.event(callback_url=HOOK, failure_callback_url=HOOK) for _ in range(2))
    )
    short = await world.store.claim(ClaimRequest("worker-1", 1, 5.0))
    long = await world.store.claim(ClaimRequest("worker-1", 1, 60.0))
    assert short is not None
    assert long is not None
    await asyncio.sleep(6.0)  # fake time: the short lease runs out
    assert await world.store.recover_expired_leases() == 1
    again = await world.store.claim(ClaimRequest("worker-2", 1, 60.0))
    assert again is not None
    assert [e.id for e in again.events] == [short.events[0].id]
    return short.events[0], long.events[0]


def with_callback(
    writer: OutcomeWriter, world: World, event: Event, status: EventStatus, **overrides: object
) -> None:
    update = make_outcome(event, status=status, **overrides)
    notice = callback_event(
        event,
        status,
        now=world.clock.now(),
        attempts=event.attempts,
        retry_count=update.retry_count,
        status_code=update.attempt.status_code,
        response_excerpt=None,
        error=update.last_error,
    )
    assert notice is not None
    writer.add(replace(update, callback=notice))


def callbacks_of(world: World) -> dict[str, str]:
    """The stored callbacks' parents, and the status each reports."""
    return {
        event.parent_id: json.loads(event.payload)["status"]
        for event in world.memory.snapshot().values()
        if event.parent_id is not None
    }


async def test_a_fenced_out_outcome_inserts_no_callback_an_applied_one_does(
    world: World,
) -> None:
    lost, held = await lost_and_held(world)
    writer, _ = writer_for(world)
    with_callback(writer, world, lost, EventStatus.DEAD_LETTER)
    with_callback(writer, world, held, EventStatus.COMPLETED)

    assert await writer.flush()

    assert callbacks_of(world) == {held.id: "COMPLETED"}
    assert (writer.written, writer.pending, writer.dropped) == (1, 0, 0)
    assert (await world.stored(lost)).locked_by == "worker-2"


async def test_callbacks_follow_only_applied_outcomes_through_a_split_write(
    world: World,
) -> None:
    lost, held = await lost_and_held(world)
    await world.submit(world.event(callback_url=HOOK, failure_callback_url=HOOK))
    batch = await world.store.claim(ClaimRequest("worker-1", 1, 60.0))
    assert batch is not None
    refused = batch.events[0]
    store = RefusingTextStore(world, poisoned="")
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    with_callback(writer, world, lost, EventStatus.FAILED)
    snowman = "\u2603 melted"
    update = make_outcome(refused, status=EventStatus.FAILED)
    update = replace(update, last_error=snowman, attempt=replace(update.attempt, error=snowman))
    notice = callback_event(
        refused,
        EventStatus.FAILED,
        now=world.clock.now(),
        attempts=1,
        retry_count=1,
        status_code=503,
        response_excerpt=None,
        error=snowman,
    )
    writer.add(replace(update, callback=notice))
    with_callback(writer, world, held, EventStatus.COMPLETED)

    assert await writer.flush()

    # Split until the refused one is alone, which is then written without its text.
    assert len(store.batches) > 1
    assert callbacks_of(world) == {held.id: "COMPLETED", refused.id: "FAILED"}
    assert (writer.written, writer.dropped) == (2, 0)


async def test_callbacks_wait_through_an_outage_and_follow_only_applied_outcomes(
    world: World,
) -> None:
    lost, held = await lost_and_held(world)
    writer, _ = writer_for(world)
    with_callback(writer, world, lost, EventStatus.DEAD_LETTER)
    with_callback(writer, world, held, EventStatus.COMPLETED)
    world.memory.faults.down.add("record_outcomes")

    assert not await writer.flush()
    assert callbacks_of(world) == {}
    assert writer.pending == 2  # two outcomes, each carrying its callback

    world.memory.faults.down.clear()
    assert await writer.flush()
    assert callbacks_of(world) == {held.id: "COMPLETED"}
    assert (writer.written, writer.pending) == (1, 0)


async def test_an_outcome_written_though_its_answer_was_lost_has_its_callback_once(
    world: World,
) -> None:
    lost, held = await lost_and_held(world)
    writer, wakeup = writer_for(world)
    with_callback(writer, world, lost, EventStatus.DEAD_LETTER)
    with_callback(writer, world, held, EventStatus.COMPLETED)
    world.memory.faults.lose_answer["record_outcomes"] = [
        StoreUnavailable("connection lost before the commit was acknowledged")
    ]

    assert not await writer.flush()
    # Written with its outcome, in one write: there already, though the writer doesn't know.
    assert (await world.stored(held)).status is EventStatus.COMPLETED
    assert callbacks_of(world) == {held.id: "COMPLETED"}
    assert writer.pending == 2

    # Written again, neither applies now (the fence), so nothing is stored twice; the
    # dispatcher is woken for the callback the lost write may have made due.
    wakeup.observe(world.clock.now())
    assert await writer.flush()
    start = loop_time()
    assert await wakeup.wait(10.0)
    assert loop_time() == pytest.approx(start)
    assert callbacks_of(world) == {held.id: "COMPLETED"}
    assert len([e for e in world.memory.snapshot().values() if e.parent_id]) == 1
    assert (writer.written, writer.pending, writer.dropped) == (0, 0, 0)


class CallbackRefusingStore(RefusingOneStore):
    """Refuses any batch holding an outcome that carries a callback."""

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        self.batches.append(len(updates))
        if any(u.callback is not None for u in updates):
            raise StoreRefused("no callbacks")
        return await self.world.store.record_outcomes(updates)


async def test_a_callback_the_store_refuses_is_dropped_its_outcome_written_without_it(
    world: World,
) -> None:
    _, held = await lost_and_held(world)
    (plain,) = await claimed(world, 1)
    store = CallbackRefusingStore(world, poisoned="")
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    with_callback(writer, world, held, EventStatus.FAILED)
    writer.add(make_outcome(plain))

    assert await writer.flush()

    assert (await world.stored(plain)).status is EventStatus.COMPLETED
    stored = await world.stored(held)
    (attempt,) = await world.store.attempts(held.id)
    # Tried without its text first (kept, with the callback), then without the callback.
    assert (stored.status, stored.last_error, attempt.error) == (
        EventStatus.FAILED,
        "HTTP 503",
        "HTTP 503",
    )
    assert callbacks_of(world) == {}
    assert (writer.written, writer.dropped, writer.pending) == (2, 1, 0)


# -- what is written instead of an outcome the store refuses -------------------------------------

SNOWMAN = "\u2603 melted"


class RefusingTextAndCallbacksStore(RefusingOneStore):
    """Refuses any batch holding a snowman in an error text or a completion callback."""

    async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
        self.batches.append(len(updates))
        for u in updates:
            if u.callback is not None:
                raise StoreRefused("no callbacks")
            if SNOWMAN in (u.last_error or "") + (u.attempt.error or ""):
                raise StoreRefused("no snowmen")
        return await self.world.store.record_outcomes(updates)


@pytest.mark.parametrize("where", ["last_error", "attempt.error"])
async def test_an_error_text_refused_in_either_place_is_replaced_in_both(
    world: World, where: str
) -> None:
    (event,) = await claimed(world, 1)
    store = RefusingTextStore(world, poisoned="")
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    update = make_outcome(event, status=EventStatus.DEAD_LETTER)
    if where == "last_error":
        update = replace(update, last_error=SNOWMAN, attempt=replace(update.attempt, error=None))
    else:
        update = replace(update, last_error=None, attempt=replace(update.attempt, error=SNOWMAN))
    writer.add(update)

    assert await writer.flush()

    stored = await world.stored(event)
    (attempt,) = await world.store.attempts(event.id)
    assert (stored.status, stored.last_error, attempt.error) == (
        EventStatus.DEAD_LETTER,
        "the delivery type's error text could not be stored",
        None,
    )
    assert (writer.written, writer.dropped) == (1, 0)


async def test_a_refused_callback_of_an_outcome_without_error_text_is_dropped_alone(
    world: World,
) -> None:
    _, held = await lost_and_held(world)
    store = CallbackRefusingStore(world, poisoned="")
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    with_callback(writer, world, held, EventStatus.COMPLETED)  # a success: no error text

    assert await writer.flush()

    assert (await world.stored(held)).status is EventStatus.COMPLETED
    assert callbacks_of(world) == {}
    # One try without the callback, written: nothing else was tried.
    assert store.batches == [1, 1]
    assert (writer.written, writer.dropped, writer.pending) == (1, 1, 0)


async def test_an_outcome_refused_for_its_text_and_its_callback_is_written_without_both(
    world: World,
) -> None:
    _, held = await lost_and_held(world)
    store = RefusingTextAndCallbacksStore(world, poisoned="")
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    with_callback(
        writer,
        world,
        held,
        EventStatus.FAILED,
        last_error=SNOWMAN,
    )

    assert await writer.flush()

    stored = await world.stored(held)
    (attempt,) = await world.store.attempts(held.id)
    assert (stored.status, stored.last_error, attempt.error) == (
        EventStatus.FAILED,
        "the delivery type's error text could not be stored",
        None,
    )
    assert callbacks_of(world) == {}
    # As given, without its text, without its callback, then without both.
    assert store.batches == [1, 1, 1, 1]
    assert (writer.written, writer.dropped, writer.pending) == (1, 1, 0)


async def test_each_callback_the_store_refuses_is_counted_as_dropped(world: World) -> None:
    _, held = await lost_and_held(world)
    await world.submit(world.event(callback_url=HOOK, failure_callback_url=HOOK))
    batch = await world.store.claim(ClaimRequest("worker-1", 1, 60.0))
    assert batch is not None
    store = CallbackRefusingStore(world, poisoned="")
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    with_callback(writer, world, held, EventStatus.COMPLETED)
    with_callback(writer, world, batch.events[0], EventStatus.COMPLETED)

    assert await writer.flush()

    assert callbacks_of(world) == {}
    assert (writer.written, writer.dropped, writer.pending) == (2, 2, 0)


async def test_an_outcome_dropped_before_an_outage_is_not_kept_with_the_others(
    world: World,
) -> None:
    poisoned, other = await claimed(world, 2)

    class RefusingThenDown(RefusingOneStore):
        async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
            self.batches.append(len(updates))
            if any(u.event_id == self.poisoned for u in updates):
                raise StoreRefused("no")
            raise StoreUnavailable("down")

    store = RefusingThenDown(world, poisoned=poisoned.id)
    writer = OutcomeWriter(store, DueSignal(world.clock), batch_size=100, monotonic=loop_time)
    writer.add(make_outcome(poisoned))
    writer.add(make_outcome(other))

    assert not await writer.flush()

    # The refused one was dropped once, for good; only the other waits for the store.
    assert (writer.written, writer.dropped, writer.pending) == (0, 1, 1)
    store.poisoned = ""
    assert not await writer.flush()
    assert store.batches[-1] == 1
    assert (writer.dropped, writer.pending) == (1, 1)


async def test_an_outcome_dropped_is_logged_with_the_stores_last_refusal(world: World) -> None:
    (event,) = await claimed(world, 1)
    refusals = iter(["the whole outcome", "even without its text"])

    class RefusingInTurn(RefusingOneStore):
        async def record_outcomes(self, updates: Sequence[OutcomeUpdate]) -> frozenset[str]:
            raise StoreRefused(next(refusals))

    writer = OutcomeWriter(
        RefusingInTurn(world, ""), DueSignal(world.clock), batch_size=100, monotonic=loop_time
    )
    writer.add(make_outcome(event, status=EventStatus.FAILED))  # with its error text
    with structlog.testing.capture_logs() as logs:
        assert await writer.flush()
    dropped = [e for e in logs if e["event"] == "dropped an outcome the store refuses"]
    assert [(e["event_id"], e["error"]) for e in dropped] == [(event.id, "even without its text")]
    assert writer.dropped == 1


async def test_hand_backs_due_within_one_tenth_of_a_second_share_one_write(world: World) -> None:
    events = await claimed(world, 3)
    writer, _ = writer_for(world)
    writes: list[tuple[int, float]] = []
    hand_back = world.memory.hand_back

    async def counted(refs: Sequence[ClaimRef], delay_seconds: float = 0.0) -> int:
        writes.append((len(refs), delay_seconds))
        return await hand_back(refs, delay_seconds)

    world.memory.hand_back = counted  # type: ignore[method-assign]
    for event, delay in zip(events, [0.01, 0.05, 0.1], strict=True):
        writer.hand_back(ClaimRef.of(event), delay)
    now = world.clock.now()

    assert await writer.flush()

    assert writes == [(3, 0.1)]
    for event in events:
        assert (await world.stored(event)).next_attempt_at == now + timedelta(seconds=0.1)
