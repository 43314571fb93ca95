"""Single submissions stored together (timefuse.service.grouping), alone and through the
events service on the in-memory store."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from tests.service.conftest import Receivers, registry_of
from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.adapters.system.clock import SystemClock
from timefuse.domain.event import Event
from timefuse.domain.quota import QuotaTable, SourceQuota
from timefuse.domain.status import EventStatus
from timefuse.ports.ingest import BufferUnavailable
from timefuse.ports.store import EventQuery, StoreRefused, StoreUnavailable
from timefuse.service.events import EventService
from timefuse.service.grouping import GroupAnswers, SubmissionGroups
from timefuse.service.metrics import Metrics
from timefuse.service.quotas import QuotaExceeded, QuotaReason, QuotaRefusal, SourceQuotas
from timefuse.service.store import Store
from timefuse.service.submission import Accepted, accepted_new
from timefuse.testing.factories import make_event

DUE = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
REFUSAL = QuotaRefusal("noisy", "noisy", QuotaReason.RATE, "over its rate", 1.0)


class FakeStorage:
    """Stores groups when ``open`` is set, answering each event as new unless told."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.failures: list[Exception] = []
        self.refuse: set[str] = set()

    async def __call__(self, events: list[Event]) -> GroupAnswers:
        self.groups.append([event.external_job_id for event in events])
        await self.open.wait()
        if self.failures:
            raise self.failures.pop(0)
        accepted = [
            (n, accepted_new(event.id, stored=True))
            for n, event in enumerate(events)
            if event.external_job_id not in self.refuse
        ]
        refused = [
            (n, REFUSAL) for n, event in enumerate(events) if event.external_job_id in self.refuse
        ]
        return GroupAnswers(accepted, refused)


def job(name: str) -> Event:
    return make_event(external_job_id=name, id=f"id-{name}")


async def submitted(groups: SubmissionGroups, *names: str) -> list[asyncio.Task[Accepted]]:
    tasks = [asyncio.create_task(groups.submit(job(name))) for name in names]
    await asyncio.sleep(0)  # each has joined the waiting list
    return tasks


async def test_a_lone_submission_is_stored_at_once_as_a_group_of_one() -> None:
    storage = FakeStorage()
    groups = SubmissionGroups(storage)

    answer = await groups.submit(job("a"))

    assert answer == accepted_new("id-a", stored=True)
    assert storage.groups == [["a"]]


async def test_submissions_arriving_while_a_group_is_stored_go_together_in_the_next() -> None:
    storage = FakeStorage()
    storage.open.clear()
    groups = SubmissionGroups(storage)
    first = await submitted(groups, "a")
    await asyncio.sleep(0)
    later = await submitted(groups, "b", "c", "d")

    storage.open.set()
    answers = await asyncio.gather(*first, *later)

    assert storage.groups == [["a"], ["b", "c", "d"]]
    assert [answer.id for answer in answers] == ["id-a", "id-b", "id-c", "id-d"]


async def test_a_group_holds_at_most_its_limit() -> None:
    storage = FakeStorage()
    storage.open.clear()
    groups = SubmissionGroups(storage, limit=3)
    tasks = await submitted(groups, *"abcdefg")

    storage.open.set()
    await asyncio.gather(*tasks)

    assert storage.groups == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


async def test_a_failed_group_fails_each_of_its_submissions_and_the_next_is_stored() -> None:
    storage = FakeStorage()
    storage.open.clear()
    storage.failures.append(StoreUnavailable("the store is down"))
    groups = SubmissionGroups(storage)
    failing = await submitted(groups, "a", "b")
    await asyncio.sleep(0)
    after = await submitted(groups, "c")

    storage.open.set()
    results = await asyncio.gather(*failing, *after, return_exceptions=True)

    assert [type(result) for result in results[:2]] == [StoreUnavailable, StoreUnavailable]
    assert results[2] == accepted_new("id-c", stored=True)


async def test_a_submission_its_quota_refuses_gets_the_refusal_and_the_others_are_accepted() -> (
    None
):
    storage = FakeStorage()
    storage.refuse.add("b")
    groups = SubmissionGroups(storage)
    tasks = await submitted(groups, "a", "b", "c")

    results = await asyncio.gather(*tasks, return_exceptions=True)

    refused = results[1]
    assert isinstance(refused, QuotaExceeded)
    assert refused.refusal == REFUSAL
    assert str(refused) == REFUSAL.message
    assert [results[0], results[2]] == [
        accepted_new("id-a", stored=True),
        accepted_new("id-c", stored=True),
    ]


async def test_a_submission_whose_caller_stopped_waiting_is_left_out_of_the_next_group() -> None:
    storage = FakeStorage()
    storage.open.clear()
    groups = SubmissionGroups(storage)
    first = await submitted(groups, "a")
    await asyncio.sleep(0)
    gone, kept = await submitted(groups, "b", "c")
    gone.cancel()
    await asyncio.sleep(0)

    storage.open.set()
    await asyncio.gather(*first, kept)

    assert storage.groups == [["a"], ["c"]]
    assert gone.cancelled()


async def test_when_the_storing_stops_every_waiting_submission_is_told_it_was_not_stored() -> None:
    storage = FakeStorage()
    storage.open.clear()
    groups = SubmissionGroups(storage)
    tasks = await submitted(groups, "a")
    await asyncio.sleep(0)
    tasks += await submitted(groups, "b")
    storing = groups._storing
    assert storing is not None

    storing.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [type(result) for result in results] == [BufferUnavailable, BufferUnavailable]
    assert [str(result) for result in results] == [
        "the server is stopping; the submission was not stored"
    ] * 2
    # and the next submission starts storing again
    storage.open.set()
    assert await groups.submit(job("c")) == accepted_new("id-c", stored=True)


@pytest.mark.looptime
async def test_a_submission_left_by_a_storing_stopped_before_its_start_joins_the_next_group() -> (
    None
):
    storage = FakeStorage()
    groups = SubmissionGroups(storage)
    first = await submitted(groups, "a")
    storing = groups._storing
    assert storing is not None
    storing.cancel()  # before its first step: it never took "a"
    await asyncio.sleep(0)
    assert storing.cancelled()

    second = await submitted(groups, "b")
    answers = await asyncio.wait_for(asyncio.gather(*first, *second), 10)

    assert [answer.id for answer in answers] == ["id-a", "id-b"]
    assert storage.groups == [["a", "b"]]


def test_a_storing_left_behind_on_another_loop_does_not_hold_a_new_loops_submissions() -> None:
    # (A loop closed under its tasks leaves them pending for ever; this one is closed after.)
    stored: list[list[str]] = []

    async def first_never_answered(events: list[Event]) -> GroupAnswers:
        stored.append([event.external_job_id for event in events])
        if len(stored) == 1:
            await asyncio.get_running_loop().create_future()
        return GroupAnswers(
            [(n, accepted_new(event.id, stored=True)) for n, event in enumerate(events)]
        )

    groups = SubmissionGroups(first_never_answered)
    old = asyncio.new_event_loop()
    left: list[asyncio.Task[Accepted]] = []

    async def leave_two_waiting() -> None:
        left.append(asyncio.create_task(groups.submit(job("a"))))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # "a" is being stored, for ever
        left.append(asyncio.create_task(groups.submit(job("c"))))
        await asyncio.sleep(0)  # "c" waits for the next group

    try:
        old.run_until_complete(leave_two_waiting())

        async def on_a_new_loop() -> Accepted:
            return await asyncio.wait_for(groups.submit(job("b")), 2)

        assert asyncio.run(on_a_new_loop()) == accepted_new("id-b", stored=True)
        assert stored == [["a"], ["b"]]
        assert not any(task.done() for task in left)
    finally:
        pending = asyncio.all_tasks(old)
        for task in pending:
            task.cancel()
        old.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        old.close()


async def test_a_group_is_stored_outside_the_log_context_of_its_first_caller() -> None:
    seen: list[dict[str, object]] = []

    async def store(events: list[Event]) -> GroupAnswers:
        seen.append(structlog.contextvars.get_contextvars())
        return GroupAnswers(
            [(n, accepted_new(event.id, stored=True)) for n, event in enumerate(events)]
        )

    groups = SubmissionGroups(store)
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        await groups.submit(job("a"))

    assert seen == [{}]


async def test_a_storing_that_ran_out_of_submissions_ends_without_an_error() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    gc.collect()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        groups = SubmissionGroups(FakeStorage())
        await groups.submit(job("a"))
        await asyncio.sleep(0)  # the storing has nothing left and ends
        await groups.submit(job("b"))
        await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(None)

    assert errors == []


@pytest.mark.looptime
async def test_a_time_out_the_store_raises_itself_is_passed_on_not_taken_for_the_deadline() -> None:
    storage = FakeStorage()
    own = TimeoutError("the driver gave up")
    storage.failures.append(own)
    groups = SubmissionGroups(storage, deadline=5.0)

    with pytest.raises(TimeoutError) as raised:
        await groups.submit(job("a"))

    assert raised.value is own


async def test_a_submission_its_group_left_unanswered_fails_with_an_error_saying_so() -> None:
    async def answers_only_the_first(events: list[Event]) -> GroupAnswers:
        return GroupAnswers([(0, accepted_new(events[0].id, stored=True))])

    groups = SubmissionGroups(answers_only_the_first)
    tasks = await submitted(groups, "a", "b")

    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert results[0] == accepted_new("id-a", stored=True)
    assert isinstance(results[1], RuntimeError)
    assert str(results[1]) == "a submission of a group was not answered"


# -- through the events service -----------------------------------------------------------


@pytest.fixture
def adapter() -> MemoryStore:
    return MemoryStore()


def events_service(
    adapter: MemoryStore,
    store: Store,
    *,
    quotas: SourceQuotas | None = None,
    buffer: KafkaLike | None = None,
    submit_timeout: float | None = None,
) -> EventService:
    return EventService(
        buffer=buffer or InlineIngestBuffer(adapter),
        store=store,
        registry=registry_of(Receivers().delivery_type()),
        clock=SystemClock(),
        metrics=Metrics(),
        buffered=buffer is not None,
        quotas=quotas,
        submit_timeout=submit_timeout,
    )


@pytest.fixture
async def service(adapter: MemoryStore) -> AsyncIterator[EventService]:
    store = Store(adapter)
    await store.open()
    yield events_service(adapter, store)
    await store.close()


def fields(external_job_id: str, *, source: str = "billing") -> dict[str, object]:
    return {
        "external_job_id": external_job_id,
        "source": source,
        "scheduled_at": DUE,
        "delivery_type": "http",
        "destination": "https://example.com/hook",
        "payload": b'{"n": 1}',
        "max_retries": 3,
    }


async def test_fifty_concurrent_submissions_are_one_lookup_and_one_insert(
    service: EventService, adapter: MemoryStore
) -> None:
    answers = await asyncio.gather(*(service.submit(fields(f"job-{n}")) for n in range(50)))

    assert len({answer.id for answer in answers}) == 50
    assert not any(answer.duplicate for answer in answers)
    assert adapter.faults.calls.get("insert_many") == 1
    assert adapter.faults.calls.get("get_many") == 1
    stored = await service.list_events(EventQuery(), 100)
    assert len(stored.events) == 50


async def test_a_resubmission_in_a_group_is_answered_with_the_stored_event_and_not_stored_again(
    service: EventService, adapter: MemoryStore
) -> None:
    first = await service.submit(fields("job-1"))
    inserts = adapter.faults.calls.get("insert_many", 0)

    again, other = await asyncio.gather(
        service.submit(fields("job-1")), service.submit(fields("b"))
    )

    assert again == Accepted(first.id, EventStatus.PENDING, duplicate=True, stored=True)
    assert other.duplicate is False
    assert adapter.faults.calls.get("insert_many") == inserts + 1  # b's group, without job-1
    assert len((await service.list_events(EventQuery(), 10)).events) == 2


async def test_identical_submissions_in_one_group_make_one_event_and_the_others_repeat_it(
    service: EventService,
) -> None:
    answers = await asyncio.gather(*(service.submit(fields("same")) for _ in range(3)))

    assert len({answer.id for answer in answers}) == 1
    assert [answer.duplicate for answer in answers] == [False, True, True]
    assert all(answer.status is EventStatus.PENDING and answer.stored for answer in answers)
    assert len((await service.list_events(EventQuery(), 10)).events) == 1


@pytest.mark.looptime
async def test_a_group_stuck_in_the_store_past_its_deadline_fails_and_the_next_is_stored() -> None:
    storage = FakeStorage()
    calls = 0

    async def first_stuck(events: list[Event]) -> GroupAnswers:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # a store call that never returns
        return await storage(events)

    groups = SubmissionGroups(first_stuck, deadline=5.0)
    stuck = await submitted(groups, "a")
    await asyncio.sleep(0)
    later = await submitted(groups, "b")

    results = await asyncio.gather(*stuck, *later, return_exceptions=True)

    assert isinstance(results[0], BufferUnavailable)
    assert str(results[0]) == "the event store did not confirm the submission within 5 s"
    assert results[1] == accepted_new("id-b", stored=True)


def refusing_bad_values(adapter: MemoryStore) -> list[list[str]]:
    """Make ``adapter`` refuse any insert holding the event of job "bad", as PostgreSQL
    refuses a whole transaction for one value; returns the inserts tried."""
    tried: list[list[str]] = []
    insert = adapter.insert_many

    async def refusing(events: Sequence[Event]) -> dict[str, str]:
        tried.append([event.external_job_id for event in events])
        if any(event.external_job_id == "bad" for event in events):
            raise StoreRefused("PostgreSQL: unsupported Unicode escape sequence")
        return await insert(events)

    adapter.insert_many = refusing  # type: ignore[method-assign]
    return tried


async def test_a_value_the_store_refuses_fails_only_its_own_submission(
    adapter: MemoryStore,
) -> None:
    tried = refusing_bad_values(adapter)
    store = Store(adapter)
    await store.open()
    quotas = SourceQuotas(QuotaTable({"a": SourceQuota(rate=0.001, burst=4)}), store, Metrics())
    service = events_service(adapter, store, quotas=quotas)
    names = [("a", "1"), ("a", "2"), ("b", "bad"), ("a", "3"), ("a", "4")]

    results = await asyncio.gather(
        *(service.submit(fields(job, source=source)) for source, job in names),
        return_exceptions=True,
    )

    assert isinstance(results[2], StoreRefused)
    # The others are stored, each admitted by its source's quota once: the halves stored
    # apart took no second token.
    assert [isinstance(r, Accepted) and not r.duplicate for r in results] == [
        True, True, False, True, True,
    ]  # fmt: skip
    assert tried == [
        ["1", "2", "bad", "3", "4"],
        ["1", "2"],
        ["bad", "3", "4"],
        ["bad"],
        ["3", "4"],
    ]
    assert len((await service.list_events(EventQuery(), 10)).events) == 4


async def test_a_batch_item_the_store_refuses_is_rejected_alone(adapter: MemoryStore) -> None:
    refusing_bad_values(adapter)
    store = Store(adapter)
    await store.open()
    service = events_service(adapter, store)

    result = await service.submit_batch([fields("1"), fields("bad"), fields("2")])

    assert [index for index, _ in result.accepted] == [0, 2]
    (rejection,) = result.rejected
    assert (rejection.index, rejection.external_job_id, rejection.errors) == (1, "bad", [])
    assert rejection.reason == "the store refused a value of this event"


class KafkaLike:
    """A buffer that takes events for a later store, as the Kafka buffer does; a call holding
    an event of a source in ``unreachable`` fails whole."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.unreachable: set[str] = set()

    async def submit(self, events: Sequence[Event]) -> dict[str, str]:
        if any(event.source in self.unreachable for event in events):
            raise BufferUnavailable("Kafka did not confirm the events")
        self.events.extend(events)
        return {event.id: event.id for event in events}


async def test_with_kafka_and_the_store_down_only_capped_sources_submissions_fail(
    adapter: MemoryStore,
) -> None:
    # Counting a capped source's PENDING events needs the store; the others don't.
    store = Store(adapter)
    await store.open()
    quotas = SourceQuotas(QuotaTable({"capped": SourceQuota(max_pending=10)}), store, Metrics())
    buffer = KafkaLike()
    service = events_service(adapter, store, quotas=quotas, buffer=buffer)
    adapter.faults.down.update({"pending_by_source", "get_many"})

    results = await asyncio.gather(
        service.submit(fields("c1", source="capped")),
        service.submit(fields("f1", source="free")),
        service.submit(fields("f2", source="free")),
        return_exceptions=True,
    )

    assert isinstance(results[0], StoreUnavailable)
    assert [(r.duplicate, r.stored) for r in results[1:] if isinstance(r, Accepted)] == [
        (False, False), (False, False),
    ]  # fmt: skip
    assert [event.external_job_id for event in buffer.events] == ["f1", "f2"]


async def test_an_event_stored_under_an_older_id_answers_its_resubmission_with_its_state(
    service: EventService, adapter: MemoryStore
) -> None:
    # Stored before ids came from the dedup key: same source, job id and time, another id.
    legacy = make_event(
        id="0190f0f0-0000-7000-8000-0000000000aa",
        external_job_id="job-1",
        source="billing",
        scheduled_at=datetime.fromisoformat(DUE),
        status=EventStatus.COMPLETED,
    )
    await adapter.insert_many([legacy])

    alone = await service.submit(fields("job-1"))
    batch = await service.submit_batch([fields("job-1"), fields("job-2")])

    twin = Accepted(legacy.id, EventStatus.COMPLETED, duplicate=True, stored=True)
    assert alone == twin
    assert [index for index, _ in batch.accepted] == [0, 1]
    (_, in_batch), (_, new) = batch.accepted
    assert in_batch == twin
    assert (new.status, new.duplicate, new.stored) == (EventStatus.PENDING, False, True)
    assert new.id != legacy.id
    assert len((await service.list_events(EventQuery(), 10)).events) == 2


@pytest.mark.looptime
async def test_a_submission_waiting_behind_a_stuck_group_is_answered_once_its_own_time_is_up(
    adapter: MemoryStore,
) -> None:
    async def never_confirmed(events: Sequence[Event]) -> dict[str, str]:
        await asyncio.Event().wait()
        return {}

    adapter.insert_many = never_confirmed  # type: ignore[method-assign]
    store = Store(adapter)
    await store.open()
    service = events_service(adapter, store, submit_timeout=5.0)
    loop = asyncio.get_running_loop()
    stuck = asyncio.create_task(service.submit(fields("a")))
    await asyncio.sleep(1)

    started = loop.time()
    with pytest.raises(BufferUnavailable) as raised:
        await service.submit(fields("b"))

    # 5 s after it was made, though its group could only start once "a"'s gave up (at 4 s)
    assert loop.time() - started == pytest.approx(5.0)
    assert str(raised.value) == "the event store did not confirm the submission within 5 s"
    with pytest.raises(BufferUnavailable):
        await stuck


@pytest.mark.looptime
async def test_a_submission_after_one_stuck_in_the_store_timed_out_is_stored(
    adapter: MemoryStore,
) -> None:
    insert = adapter.insert_many
    inserts = 0

    async def first_never_confirmed(events: Sequence[Event]) -> dict[str, str]:
        nonlocal inserts
        inserts += 1
        if inserts == 1:
            await asyncio.Event().wait()
        return await insert(events)

    adapter.insert_many = first_never_confirmed  # type: ignore[method-assign]
    store = Store(adapter)
    await store.open()
    service = events_service(adapter, store, submit_timeout=5.0)
    with pytest.raises(BufferUnavailable):
        await service.submit(fields("a"))

    # The stuck store call gave up with its submission: it doesn't hold the next one.
    later = await service.submit(fields("b"))

    assert (later.duplicate, later.stored) == (False, True)
    assert await store.get(later.id) is not None


async def test_an_events_service_not_told_of_a_buffer_answers_its_events_stored(
    adapter: MemoryStore,
) -> None:
    store = Store(adapter)
    await store.open()
    service = EventService(
        buffer=InlineIngestBuffer(adapter),
        store=store,
        registry=registry_of(Receivers().delivery_type()),
        clock=SystemClock(),
        metrics=Metrics(),
    )

    answers = await asyncio.gather(service.submit(fields("same")), service.submit(fields("same")))

    assert service.buffered is False
    assert [(answer.duplicate, answer.stored) for answer in answers] == [
        (False, True),
        (True, True),
    ]


async def test_with_source_quotas_a_group_of_capped_and_free_sources_is_still_one_insert(
    adapter: MemoryStore,
) -> None:
    store = Store(adapter)
    await store.open()
    quotas = SourceQuotas(QuotaTable({"capped": SourceQuota(max_pending=10)}), store, Metrics())
    service = events_service(adapter, store, quotas=quotas)

    answers = await asyncio.gather(
        service.submit(fields("c1", source="capped")),
        service.submit(fields("f1", source="free")),
        service.submit(fields("f2", source="free")),
    )

    assert [(answer.duplicate, answer.stored) for answer in answers] == [(False, True)] * 3
    assert adapter.faults.calls.get("insert_many") == 1
    assert len((await service.list_events(EventQuery(), 10)).events) == 3


async def test_with_kafka_a_part_of_a_group_the_buffer_fails_fails_only_its_own_submissions(
    adapter: MemoryStore,
) -> None:
    store = Store(adapter)
    await store.open()
    quotas = SourceQuotas(QuotaTable({"capped": SourceQuota(max_pending=10)}), store, Metrics())
    buffer = KafkaLike()
    buffer.unreachable.add("free")
    service = events_service(adapter, store, quotas=quotas, buffer=buffer)

    results = await asyncio.gather(
        service.submit(fields("c1", source="capped")),
        service.submit(fields("f1", source="free")),
        return_exceptions=True,
    )

    assert isinstance(results[0], Accepted)
    assert (results[0].duplicate, results[0].stored) == (False, False)
    assert isinstance(results[1], BufferUnavailable)
    assert [event.external_job_id for event in buffer.events] == ["c1"]


async def test_a_single_submission_its_source_quota_refuses_is_answered_with_the_refusal(
    adapter: MemoryStore,
) -> None:
    store = Store(adapter)
    await store.open()
    quotas = SourceQuotas(QuotaTable({"noisy": SourceQuota(rate=0.001, burst=1)}), store, Metrics())
    service = events_service(adapter, store, quotas=quotas)

    results = await asyncio.gather(
        service.submit(fields("n1", source="noisy")),
        service.submit(fields("n2", source="noisy")),
        return_exceptions=True,
    )

    assert isinstance(results[0], Accepted)
    refused = results[1]
    assert isinstance(refused, QuotaExceeded)
    assert (refused.refusal.source, refused.refusal.reason) == ("noisy", QuotaReason.RATE)
    assert len((await service.list_events(EventQuery(), 10)).events) == 1
