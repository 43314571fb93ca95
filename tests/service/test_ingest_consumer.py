"""The ingest consumer on the in-memory store and an in-memory stream: stored before committed,
poison dead-lettered and its neighbours kept, store outages waited out with nothing committed.
(The Kafka stream itself is tested in tests/integration/kafka.)"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.service.conftest import LoopClock, World, loop_time
from timefuse.adapters.memory import MemoryStore
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.ingest import IngestRecord, StreamUnavailable
from timefuse.ports.store import StoreError, StoreRefused
from timefuse.service.ingest_consumer import IngestConsumer, IngestSettings
from timefuse.service.store import Store
from timefuse.service.wakeup import DueSignal

pytestmark = pytest.mark.looptime


@dataclass
class Stream:
    """An ingest stream in memory: partitions of records, a committed offset per partition,
    dead letters; any call can be made to fail (``down``) for a while."""

    records: list[IngestRecord] = field(default_factory=list)
    position: int = 0
    committed: dict[int, int] = field(default_factory=dict)
    dead_letters: list[tuple[IngestRecord, str]] = field(default_factory=list)
    rewinds: int = 0
    down: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    lags: list[Mapping[int, int]] = field(default_factory=list)
    opened: bool = False
    closed: bool = False

    def add(self, *events: Event | None, partition: int = 0) -> list[IngestRecord]:
        added = []
        for event in events:
            offset = sum(1 for r in self.records if r.partition == partition)
            error = None if event is not None else "not JSON"
            record = IngestRecord(partition, offset, b"k", b"v", event, error)
            self.records.append(record)
            added.append(record)
        return added

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if call in self.down:
            raise StreamUnavailable(f"{call}: the broker is away")

    async def open(self) -> None:
        self._check("open")
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def fetch(self, max_records: int, timeout: float) -> list[IngestRecord]:
        self._check("fetch")
        batch = self.records[self.position : self.position + max_records]
        self.position += len(batch)
        if not batch:
            await asyncio.sleep(timeout)
        return batch

    async def commit(self, records: Sequence[IngestRecord]) -> None:
        self._check("commit")
        for record in records:
            self.committed[record.partition] = max(
                self.committed.get(record.partition, -1), record.offset
            )

    async def rewind(self, records: Sequence[IngestRecord]) -> None:
        self._check("rewind")
        self.rewinds += 1
        self.position = min(self.records.index(r) for r in records)

    async def dead_letter(self, record: IngestRecord, error: str) -> None:
        self._check("dead_letter")
        self.dead_letters.append((record, error))

    async def lag(self) -> Mapping[int, int]:
        return self.lags.pop(0) if self.lags else {}

    def all_committed(self) -> bool:
        ends: dict[int, int] = {}
        for record in self.records:
            ends[record.partition] = max(ends.get(record.partition, -1), record.offset)
        return self.committed == ends


@dataclass
class Ingest:
    world: World
    stream: Stream
    consumer: IngestConsumer
    wakeup: DueSignal

    async def run(self, seconds: float) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(self.consumer.run(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, 10.0)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.world.metrics.registry.get_sample_value(name, labels or {})


def ingest_on(world: World, **settings: float) -> Ingest:
    stream = Stream()
    wakeup = DueSignal(world.clock)
    consumer = IngestConsumer(
        stream=stream,
        store=world.store,
        metrics=world.metrics,
        settings=IngestSettings(**{"batch_size": 100, **settings}),  # type: ignore[arg-type]
        wakeup=wakeup,
        monotonic=loop_time,
    )
    return Ingest(world, stream, consumer, wakeup)


@pytest.fixture
def ingest(world: World) -> Ingest:
    return ingest_on(world)


async def stored_statuses(world: World) -> dict[str, EventStatus]:
    return {event_id: e.status for event_id, e in world.memory.snapshot().items()}


async def test_records_are_stored_then_committed(ingest: Ingest) -> None:
    events = [ingest.world.event() for _ in range(5)]
    ingest.stream.add(*events[:3], partition=0)
    ingest.stream.add(*events[3:], partition=1)
    await ingest.run(1.0)
    assert set(await stored_statuses(ingest.world)) == {e.id for e in events}
    # One write, timed on the real clock: well under a second in memory.
    assert ingest.metric("timefuse_ingest_write_seconds_count") == 1
    assert 0 < (ingest.metric("timefuse_ingest_write_seconds_sum") or 0) < 1.0
    assert ingest.stream.committed == {0: 2, 1: 1}
    assert ingest.stream.dead_letters == []
    assert ingest.metric("timefuse_ingest_events_persisted_total") == 5
    assert ingest.metric("timefuse_ingest_batches_persisted_total") == 1
    assert ingest.stream.opened
    assert ingest.stream.closed


async def test_nothing_is_committed_before_its_batch_is_stored(ingest: Ingest) -> None:
    ingest.stream.add(*(ingest.world.event() for _ in range(3)))
    stalled = asyncio.Event()
    ingest.world.memory.faults.stall["insert_many"] = stalled
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.consumer.run(stop))
    await asyncio.sleep(5.0)
    assert "commit" not in ingest.stream.calls
    stalled.set()
    await asyncio.sleep(0.5)
    assert ingest.stream.all_committed()
    stop.set()
    await task


class RefusingStore(MemoryStore):
    """Refuses any batch holding an event whose source is ``refused``."""

    async def insert_many(self, events: Sequence[Event]) -> dict[str, str]:
        if any(event.source == "refused" for event in events):
            raise StoreRefused("value out of range")
        return await super().insert_many(events)


async def test_poison_is_dead_lettered_with_its_reason_and_its_neighbours_stored() -> None:
    clock = LoopClock()
    memory = RefusingStore(clock=clock)
    store = Store(memory)
    await store.open()
    world = World(clock, memory, store, None, None)  # type: ignore[arg-type]
    ingest = ingest_on(world)
    good = [world.event() for _ in range(6)]
    bad_id = replace(world.event(), id="not-an-event-id")
    empty_source = replace(world.event(), source="")
    refused = world.event(source="refused")
    ingest.stream.add(good[0], None, good[1], bad_id, good[2], refused, good[3], empty_source)
    # Each optional field is checked as the API checks it (max 10 retries, a window and
    # backoffs of 7 days at most, a backoff cap not below its base).
    ingest.stream.add(
        good[4],
        world.event(max_retries=11),
        world.event(delivery_window_seconds=8 * 86400.0),
        world.event(retry_backoff_seconds=8 * 86400.0),
        world.event(retry_backoff_seconds=10.0, retry_backoff_max_seconds=5.0),
        world.event(retry_backoff_max_seconds=8 * 86400.0),
        good[5],
        partition=1,
    )
    silent = IngestRecord(1, 7, b"k", b"v", None)  # undecodable, with no reason given
    ingest.stream.records.append(silent)
    await ingest.run(1.0)
    assert set(await stored_statuses(world)) == {e.id for e in good}
    reasons = {
        (record.partition, record.offset): reason for record, reason in ingest.stream.dead_letters
    }
    assert set(reasons) == {(0, 1), (0, 3), (0, 5), (0, 7), *((1, n) for n in (1, 2, 3, 4, 5, 7))}
    assert reasons[0, 1] == "not JSON"
    assert "not an event id" in reasons[0, 3]
    assert reasons[0, 5] == "store refused the event: value out of range"
    assert "source" in reasons[0, 7]
    for offset, field_name in [
        (1, "max_retries"),
        (2, "delivery_window_seconds"),
        (3, "retry_backoff_seconds"),
        (4, "retry_backoff_max_seconds"),
        (5, "retry_backoff_max_seconds"),
    ]:
        assert field_name in reasons[1, offset]
    assert reasons[1, 7] == "undecodable record"
    assert ingest.stream.all_committed()
    assert ingest.metric("timefuse_ingest_dead_lettered_total") == 10


@pytest.mark.parametrize("at", [0, 1])
async def test_a_refused_event_in_a_batch_of_two_is_dead_lettered_alone(at: int) -> None:
    clock = LoopClock()
    memory = RefusingStore(clock=clock)
    store = Store(memory)
    await store.open()
    world = World(clock, memory, store, None, None)  # type: ignore[arg-type]
    ingest = ingest_on(world)
    good = world.event()
    batch = [good]
    batch.insert(at, world.event(source="refused"))
    ingest.stream.add(*batch)
    await ingest.run(1.0)
    assert set(await stored_statuses(world)) == {good.id}
    assert [(r.offset, reason) for r, reason in ingest.stream.dead_letters] == [
        (at, "store refused the event: value out of range")
    ]
    assert ingest.stream.all_committed()


async def test_a_record_with_a_window_and_its_own_backoff_is_stored_as_it_was_accepted(
    ingest: Ingest,
) -> None:
    world = ingest.world
    event = world.event(
        delivery_window_seconds=600.0, retry_backoff_seconds=5.0, retry_backoff_max_seconds=50.0
    )
    ingest.stream.add(event)
    await ingest.run(1.0)
    assert ingest.stream.dead_letters == []
    stored = await world.stored(event)
    assert (
        stored.delivery_window_seconds,
        stored.retry_backoff_seconds,
        stored.retry_backoff_max_seconds,
        stored.next_attempt_at,
    ) == (600.0, 5.0, 50.0, event.next_attempt_at)


async def test_a_record_read_long_after_it_was_accepted_is_judged_as_of_its_acceptance(
    ingest: Ingest,
) -> None:
    world = ingest.world
    accepted = world.clock.now() - timedelta(days=2)
    late = world.event(
        created_at=accepted, scheduled_at=accepted + timedelta(hours=1), updated_at=accepted
    )
    ingest.stream.add(late)
    await ingest.run(1.0)
    assert late.id in await stored_statuses(world)
    assert ingest.stream.dead_letters == []


async def test_while_the_store_is_down_nothing_is_committed_or_dead_lettered(
    ingest: Ingest,
) -> None:
    world = ingest.world
    events = [world.event() for _ in range(4)]
    ingest.stream.add(*events, None)
    world.memory.faults.down.add("insert_many")
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.consumer.run(stop))
    await asyncio.sleep(20.0)
    assert "commit" not in ingest.stream.calls
    assert ingest.stream.dead_letters == []  # not even the undecodable one: the batch waits
    tries = world.memory.faults.calls["insert_many"]
    # Backing off from 0.2 s to the 5 s cap: about 8 tries in 20 s, not thousands.
    assert 5 <= tries <= 10
    world.memory.faults.down.clear()
    await asyncio.sleep(6.0)
    assert set(await stored_statuses(world)) == {e.id for e in events}
    assert ingest.stream.all_committed()
    assert len(ingest.stream.dead_letters) == 1
    assert ingest.metric("timefuse_ingest_store_retries_total") == tries
    stop.set()
    await task


async def test_a_store_error_that_blames_no_event_is_retried_not_dead_lettered(
    ingest: Ingest,
) -> None:
    # A plain StoreError is neither "unavailable" nor a refusal of the values: what SQLite's
    # translation gives a missing table, say. It is the store's state, never an event's fault.
    world = ingest.world
    events = [world.event() for _ in range(4)]
    ingest.stream.add(*events, None)
    failures = [StoreError("SQLite: no such table: events") for _ in range(5)]
    world.memory.faults.fail["insert_many"] = list(failures)
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.consumer.run(stop))
    await asyncio.sleep(3.0)
    assert world.memory.faults.calls["insert_many"] >= 3
    assert "commit" not in ingest.stream.calls
    assert ingest.stream.dead_letters == []
    assert await stored_statuses(world) == {}
    await asyncio.sleep(10.0)
    # Tried again whole, with backoff, until the store took the batch: every event stored,
    # only the undecodable record dead-lettered, everything committed.
    assert world.memory.faults.calls["insert_many"] == len(failures) + 1
    assert set(await stored_statuses(world)) == {e.id for e in events}
    assert [record.offset for record, _ in ingest.stream.dead_letters] == [4]
    assert ingest.stream.all_committed()
    assert ingest.metric("timefuse_ingest_store_retries_total") == len(failures)
    stop.set()
    await task


async def test_a_batch_held_longer_than_the_hold_time_is_given_back_and_read_again(
    world: World,
) -> None:
    ingest = ingest_on(world, hold_seconds=3.0)
    events = [world.event() for _ in range(3)]
    ingest.stream.add(*events)
    world.memory.faults.down.add("insert_many")
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.consumer.run(stop))
    await asyncio.sleep(14.0)
    # Given back once held past 3 s (at the first retry after it, ~6 s), and read again.
    assert ingest.stream.rewinds == 2
    assert "commit" not in ingest.stream.calls
    world.memory.faults.down.clear()
    await asyncio.sleep(6.0)
    assert set(await stored_statuses(world)) == {e.id for e in events}
    assert ingest.stream.all_committed()
    stop.set()
    await task


async def test_a_batch_that_cannot_be_given_back_is_held_until_it_is_stored(
    world: World,
) -> None:
    ingest = ingest_on(world, hold_seconds=3.0)
    events = [world.event() for _ in range(3)]
    ingest.stream.add(*events)
    world.memory.faults.down.add("insert_many")
    ingest.stream.down.add("rewind")
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.consumer.run(stop))
    await asyncio.sleep(10.0)
    assert ingest.stream.calls.count("rewind") == 1  # tried once, then held on
    world.memory.faults.down.clear()
    await asyncio.sleep(6.0)
    assert ingest.stream.all_committed()
    assert ingest.stream.calls.count("fetch") >= 2
    assert set(await stored_statuses(world)) == {e.id for e in events}
    stop.set()
    await task


async def test_a_failed_commit_reads_the_records_again_and_stores_them_once(
    ingest: Ingest,
) -> None:
    events = [ingest.world.event() for _ in range(3)]
    records = ingest.stream.add(*events)
    ingest.stream.down.add("commit")
    assert await ingest.consumer.process(records, asyncio.Event())  # stored: done
    assert ingest.stream.committed == {}
    ingest.stream.down.clear()
    assert await ingest.consumer.process(records, asyncio.Event())  # read again
    assert ingest.stream.all_committed()
    assert len(await stored_statuses(ingest.world)) == 3
    assert ingest.metric("timefuse_ingest_events_persisted_total") == 6  # duplicates included


async def test_a_resubmitted_event_is_stored_once_and_counted_as_a_duplicate(
    ingest: Ingest,
) -> None:
    first, other = ingest.world.event(), ingest.world.event()
    again = replace(ingest.world.event(), external_job_id=first.external_job_id)
    again = replace(again, scheduled_at=first.scheduled_at, next_attempt_at=first.next_attempt_at)
    ingest.stream.add(first, other, again)
    await ingest.run(1.0)
    assert set(await stored_statuses(ingest.world)) == {first.id, other.id}
    assert ingest.metric("timefuse_ingest_duplicates_total") == 1


async def test_a_stopped_consumer_gives_up_a_batch_it_cannot_store(ingest: Ingest) -> None:
    records = ingest.stream.add(ingest.world.event())
    ingest.world.memory.faults.down.add("insert_many")
    stop = asyncio.Event()
    processing = asyncio.create_task(ingest.consumer.process(records, stop))
    await asyncio.sleep(1.0)
    stop.set()
    assert not await processing
    assert ingest.stream.committed == {}


async def test_the_stream_is_opened_and_read_again_after_it_was_away(ingest: Ingest) -> None:
    events = [ingest.world.event() for _ in range(2)]
    ingest.stream.add(*events)
    ingest.stream.down |= {"open", "fetch"}

    async def come_back() -> None:
        await asyncio.sleep(3.0)
        ingest.stream.down.discard("open")
        await asyncio.sleep(3.0)
        ingest.stream.down.discard("fetch")

    opened_at: list[float] = []
    open_stream = ingest.stream.open

    async def timed_open() -> None:
        opened_at.append(loop_time())
        await open_stream()

    ingest.stream.open = timed_open  # type: ignore[method-assign]
    task = asyncio.create_task(come_back())
    await ingest.run(15.0)
    await task
    # Tries at 0, 0.2, 0.6, 1.4 and 3.0 s: the pause doubles from a fifth of a second.
    assert [round(t - opened_at[0], 1) for t in opened_at] == [0.0, 0.2, 0.6, 1.4, 3.0]
    assert ingest.stream.all_committed()
    assert len(await stored_statuses(ingest.world)) == 2


async def test_a_consumer_stopped_before_the_stream_opened_ends_without_closing_it(
    ingest: Ingest,
) -> None:
    ingest.stream.down.add("open")
    await ingest.run(2.0)
    assert not ingest.stream.opened
    assert not ingest.stream.closed


async def test_stored_events_due_sooner_wake_the_dispatcher(ingest: Ingest) -> None:
    world = ingest.world
    ingest.wakeup.plan(world.clock.now() + timedelta(hours=1))
    soon = world.event(after=30.0)
    ingest.stream.add(world.event(after=600.0), soon)
    waiting = asyncio.create_task(ingest.wakeup.wait(3600.0))
    await ingest.run(1.0)
    assert waiting.done()
    assert waiting.result()


async def test_lag_is_reported_per_partition_and_dropped_for_partitions_gone(
    world: World,
) -> None:
    ingest = ingest_on(world, lag_every_seconds=1.0)
    ingest.stream.lags = [{0: 5, 1: 2}, {0: 1}]
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.consumer.run(stop))
    await asyncio.sleep(1.5)
    assert ingest.metric("timefuse_ingest_consumer_lag", {"partition": "0"}) == 5
    assert ingest.metric("timefuse_ingest_consumer_lag", {"partition": "1"}) == 2
    await asyncio.sleep(1.0)
    assert ingest.metric("timefuse_ingest_consumer_lag", {"partition": "0"}) == 1
    assert ingest.metric("timefuse_ingest_consumer_lag", {"partition": "1"}) is None
    stop.set()
    await task


async def test_stored_events_due_later_than_planned_wake_nobody(ingest: Ingest) -> None:
    world = ingest.world
    ingest.wakeup.plan(world.clock.now() + timedelta(hours=1))
    ingest.stream.add(world.event(after=7200.0))
    waiting = asyncio.create_task(ingest.wakeup.wait(3600.0))
    await ingest.run(1.0)
    assert not waiting.done()
    waiting.cancel()


async def test_store_retries_back_off_from_a_fifth_of_a_second_to_five_seconds(
    ingest: Ingest,
) -> None:
    world = ingest.world
    tries: list[float] = []
    insert = world.memory.insert_many

    async def timed(events: Sequence[Event]) -> dict[str, str]:
        tries.append(loop_time())
        return await insert(events)

    world.memory.insert_many = timed  # type: ignore[method-assign]
    ingest.stream.add(world.event())
    world.memory.faults.down.add("insert_many")
    await ingest.run(20.0)
    pauses = [round(b - a, 2) for a, b in itertools.pairwise(tries)]
    assert pauses[:7] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


async def test_a_record_whose_dates_overflow_is_poison_not_a_crash(ingest: Ingest) -> None:
    world = ingest.world
    edge = datetime.max.replace(tzinfo=UTC)  # any offset of its window overflows
    accepted = edge - timedelta(hours=1)
    late = world.event(
        scheduled_at=edge,
        created_at=accepted,
        updated_at=accepted,
        delivery_window_seconds=86400.0,
    )
    ingest.stream.add(late, world.event())
    await ingest.run(1.0)
    ((_, reason),) = ingest.stream.dead_letters
    assert reason.startswith("invalid event: OverflowError: ")
    assert len(await stored_statuses(world)) == 1
