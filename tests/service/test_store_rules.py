"""The rule layer every store call passes through (timefuse/service/store.py): a bad argument
is refused with its name before any adapter sees it; what can be answered without the adapter
is answered so."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.service.conftest import World
from timefuse.adapters.memory import MemoryStore
from timefuse.domain.destination import destination_key
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    ClaimRef,
    ClaimRequest,
    DestinationRule,
    EventQuery,
    OutcomeUpdate,
    RedeliverResult,
    SharedLimits,
    WorkerBeat,
)
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome

NAIVE = datetime(2030, 1, 1)
AWARE = datetime(2030, 1, 1, tzinfo=UTC)

Call = Callable[[Store], Awaitable[object]]

BAD_CALLS: list[tuple[str, Call, str]] = [
    (
        "extend_leases",
        lambda s: s.extend_leases([ClaimRef("e", 1, "w")], 0),
        "lease_seconds must be positive",
    ),
    (
        "hand_back",
        lambda s: s.hand_back([ClaimRef("e", 1, "w")], -1.0),
        "delay_seconds must not be negative",
    ),
    ("find_by_external_id", lambda s: s.find_by_external_id("x", 0), "limit must be positive"),
    ("forget_workers", lambda s: s.forget_workers(0), "silent_seconds must be positive"),
    (
        "heartbeat without a worker",
        lambda s: s.heartbeat(WorkerBeat("", ("api",), AWARE)),
        "^a heartbeat needs a worker$",
    ),
    (
        "heartbeat with a naive start",
        lambda s: s.heartbeat(WorkerBeat("w", ("api",), NAIVE)),
        "started_at must be a timezone-aware datetime",
    ),
    ("redeliver", lambda s: s.redeliver("e", NAIVE), "now must be a timezone-aware datetime"),
    (
        "move_due due_at",
        lambda s: s.move_due("e", NAIVE, AWARE),
        "^due_at must be a timezone-aware datetime",
    ),
    ("move_due now", lambda s: s.move_due("e", AWARE, NAIVE), "^now must be a timezone-aware"),
    (
        "insert_many naive",
        lambda s: s.insert_many([make_event(scheduled_at=NAIVE)]),
        "^scheduled_at must be a timezone-aware datetime",
    ),
    (
        "insert_many locked",
        lambda s: s.insert_many([make_event(locked_by="w")]),
        "^a new event can't be under a claim$",
    ),
    (
        "insert_many with a lease",
        lambda s: s.insert_many([make_event(lock_expires_at=AWARE)]),
        "^a new event can't be under a claim$",
    ),
    (
        "insert_many claimed before",
        lambda s: s.insert_many([make_event(claim_count=1)]),
        "^a new event can't be under a claim$",
    ),
    (
        "redeliver_dead_letters from",
        lambda s: s.redeliver_dead_letters(
            sources=None, scheduled_from=NAIVE, scheduled_to=None, now=AWARE
        ),
        "scheduled_from must be a timezone-aware datetime",
    ),
    (
        "redeliver_dead_letters to",
        lambda s: s.redeliver_dead_letters(
            sources=None, scheduled_from=None, scheduled_to=NAIVE, now=AWARE
        ),
        "scheduled_to must be a timezone-aware datetime",
    ),
    (
        "redeliver_dead_letters now",
        lambda s: s.redeliver_dead_letters(
            sources=None, scheduled_from=None, scheduled_to=None, now=NAIVE
        ),
        "now must be a timezone-aware datetime",
    ),
    (
        "redeliver_dead_letters limit",
        lambda s: s.redeliver_dead_letters(
            sources=None, scheduled_from=None, scheduled_to=None, now=AWARE, limit=0
        ),
        "limit must be at least 1",
    ),
    (
        "amend naive",
        lambda s: s.amend(make_event(version=2, updated_at=NAIVE), basis=AmendBasis(1, 0, AWARE)),
        "^updated_at must be a timezone-aware datetime",
    ),
    (
        "amend naive basis",
        lambda s: s.amend(make_event(version=2), basis=AmendBasis(1, 0, NAIVE)),
        "^basis.next_attempt_at must be a timezone-aware datetime",
    ),
    (
        "recovery silence",
        lambda s: s.recover_expired_leases(silent_seconds=0.0),
        "^silent_seconds must be positive, got 0.0$",
    ),
    (
        "amend version",
        lambda s: s.amend(make_event(version=3), basis=AmendBasis(1, 0, AWARE)),
        "^a change makes the event's version exactly one more$",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in BAD_CALLS], ids=[n for n, _, _ in BAD_CALLS]
)
async def test_a_bad_argument_is_refused_by_name_before_the_adapter_sees_it(
    world: World, call: Call, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await call(world.store)
    assert world.memory.faults.calls == {}


async def test_nothing_to_extend_or_hand_back_asks_nothing_of_the_adapter(world: World) -> None:
    assert await world.store.extend_leases([], 10.0) == 0
    assert await world.store.hand_back([], 0.0) == 0
    assert world.memory.faults.calls == {}


async def test_no_visible_source_answers_without_the_adapter(world: World) -> None:
    none: frozenset[str] = frozenset()
    assert await world.store.get_many([]) == []
    assert await world.store.get("e", sources=none) is None
    assert await world.store.find_by_external_id("x", sources=none) == []
    assert await world.store.redeliver("e", AWARE, sources=none) is RedeliverResult.NOT_FOUND
    assert (
        await world.store.redeliver_dead_letters(
            sources=none, scheduled_from=None, scheduled_to=None, now=AWARE
        )
        == 0
    )
    assert world.memory.faults.calls == {}


async def test_a_lookup_by_external_id_returns_at_most_100_by_default(world: World) -> None:
    events = [world.event(after=float(n), external_job_id="many") for n in range(101)]
    await world.submit(*events)
    assert len(await world.store.find_by_external_id("many")) == 100


async def test_a_listing_takes_pages_of_one_and_refuses_none(world: World) -> None:
    first, _ = await world.submit(world.event(after=1.0), world.event(after=2.0))
    page = await world.store.list_events(EventQuery(), 1)
    assert [e.id for e in page.events] == [first.id]
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        await world.store.list_events(EventQuery(), 0)
    empty = await world.store.list_events(EventQuery(sources=frozenset()), 10)
    assert (empty.events, empty.next_cursor) == ([], None)


MORE_BAD_CALLS: list[tuple[str, Call, str]] = [
    ("leadership ttl", lambda s: s.acquire_leadership("m", "h", 0), "ttl_seconds must be positive"),
    (
        "leadership role",
        lambda s: s.acquire_leadership("", "h", 1.0),
        "^leadership needs a role and a holder$",
    ),
    (
        "leadership holder",
        lambda s: s.acquire_leadership("m", "", 1.0),
        "^leadership needs a role and a holder$",
    ),
    (
        "retention batch",
        lambda s: s.delete_terminal_before(AWARE, batch_size=0),
        "^batch_size must be at least 1, got 0$",
    ),
    (
        "retention cutoff",
        lambda s: s.delete_terminal_before(NAIVE),
        "cutoff must be a timezone-aware datetime",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"),
    [(c, m) for _, c, m in MORE_BAD_CALLS],
    ids=[n for n, _, _ in MORE_BAD_CALLS],
)
async def test_coordination_and_retention_arguments_are_checked_too(
    world: World, call: Call, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await call(world.store)
    assert world.memory.faults.calls == {}


async def test_retention_may_go_one_event_at_a_time(world: World) -> None:
    (event,) = await world.submit(world.event(after=60.0))
    await world.store.cancel(event.id)
    later = world.clock.now() + timedelta(days=1)
    assert await world.store.delete_terminal_before(later, batch_size=1) == 1


class RetentionCalls(MemoryStore):
    """The in-memory store, noting how each retention pass was asked for (it deletes all at
    once itself; the SQL adapters delete ``batch_size`` rows per transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.passes: list[tuple[frozenset[EventStatus], int, bool]] = []

    async def delete_finished_before(
        self,
        cutoff: datetime,
        statuses: frozenset[EventStatus],
        batch_size: int,
        *,
        wait: bool = False,
    ) -> int:
        self.passes.append((statuses, batch_size, wait))
        return await super().delete_finished_before(cutoff, statuses, batch_size, wait=wait)


async def test_retention_deletes_finished_events_in_batches_of_10000_and_waits_only_if_asked() -> (
    None
):
    adapter = RetentionCalls()
    store = Store(adapter)
    await store.open()
    await store.delete_terminal_before(AWARE)
    await store.delete_terminal_before(AWARE, batch_size=7)
    await store.delete_terminal_before(AWARE, batch_size=7, wait=True)
    finished = frozenset(
        {EventStatus.COMPLETED, EventStatus.FAILED, EventStatus.DEAD_LETTER, EventStatus.CANCELLED}
    )
    assert adapter.passes == [(finished, 10_000, False), (finished, 7, False), (finished, 7, True)]


async def test_counts_by_status_name_every_status(world: World) -> None:
    await world.submit(world.event(after=60.0))
    counts = await world.store.count_by_status()
    assert {status.value: n for status, n in counts.items()} == {
        "PENDING": 1,
        "PROCESSING": 0,
        "COMPLETED": 0,
        "FAILED": 0,
        "DEAD_LETTER": 0,
        "CANCELLED": 0,
    }


class SparseCounts(MemoryStore):
    """An adapter that counts only the statuses it holds events in (as a GROUP BY does)."""

    async def count_by_status(self, sources: frozenset[str] | None) -> Mapping[EventStatus, int]:
        counts = await super().count_by_status(sources)
        return {status: n for status, n in counts.items() if n}


async def test_counts_by_status_name_every_status_even_from_an_adapter_that_leaves_some_out() -> (
    None
):
    store = Store(SparseCounts())
    await store.open()
    await store.insert_many([make_event(status=EventStatus.PENDING)])
    counts = await store.count_by_status()
    assert {status.value: n for status, n in counts.items()} == {
        "PENDING": 1,
        "PROCESSING": 0,
        "COMPLETED": 0,
        "FAILED": 0,
        "DEAD_LETTER": 0,
        "CANCELLED": 0,
    }
    await store.close()


async def test_a_changed_destination_is_stored_under_its_own_canonical_key(world: World) -> None:
    (event,) = await world.submit(world.event(after=60.0))
    # The change names a new receiver but still carries the old receiver's key.
    moved = replace(event, destination="https://Other.Example:443/hooks", version=event.version + 1)
    assert moved.destination_key == "receiver.example:443"
    assert await world.store.amend(moved, basis=AmendBasis.of(event)) is AmendResult.AMENDED
    stored = await world.stored(event)
    assert (stored.destination, stored.destination_key) == (
        "https://Other.Example:443/hooks",
        "other.example:443",
    )


async def test_a_changed_destination_of_another_type_is_keyed_by_that_type(world: World) -> None:
    (event,) = await world.submit(
        world.event(after=60.0, delivery_type="kafka", destination="orders")
    )
    moved = replace(event, destination="orders.v2", version=event.version + 1)
    assert await world.store.amend(moved, basis=AmendBasis.of(event)) is AmendResult.AMENDED
    assert (await world.stored(event)).destination_key == "kafka:orders.v2"


async def test_a_new_event_without_a_key_is_stored_under_its_types_key(world: World) -> None:
    event = world.event(delivery_type="kafka", destination="orders", destination_key="")
    await world.submit(event)
    assert (await world.stored(event)).destination_key == "kafka:orders"


def _retry(**overrides: object) -> list[OutcomeUpdate]:
    return [make_outcome(make_event(), status=EventStatus.PENDING, **overrides)]


def _done(**overrides: object) -> list[OutcomeUpdate]:
    return [make_outcome(make_event(), **overrides)]


def _with_callback(status: EventStatus) -> list[OutcomeUpdate]:
    event = make_event()
    notice = make_event(parent_id=event.id)
    return [make_outcome(event, status=status, callback=notice)]


def _started_naive() -> list[OutcomeUpdate]:
    update = make_outcome(make_event())
    return [replace(update, attempt=replace(update.attempt, started_at=NAIVE))]


BAD_OUTCOMES: list[tuple[str, Call, str]] = [
    (
        "retry without a delay",
        lambda s: s.record_outcomes(_retry(retry_delay_seconds=None)),
        r"^a retry \(PENDING\) needs its retry_delay_seconds$",
    ),
    (
        "retry with a negative delay",
        lambda s: s.record_outcomes(_retry(retry_delay_seconds=-1.0)),
        r"^retry_delay_seconds must not be negative, got -1\.0$",
    ),
    (
        "naive executed_at",
        lambda s: s.record_outcomes(_done(executed_at=NAIVE)),
        r"^executed_at must be a timezone-aware datetime, got ",
    ),
    (
        "another worker's attempt",
        lambda s: s.record_outcomes(_done(ref=ClaimRef("e", 1, "worker-2"))),
        r"^an outcome is recorded by the worker that holds the claim$",
    ),
    (
        "naive attempt start",
        lambda s: s.record_outcomes(_started_naive()),
        r"^started_at must be a timezone-aware datetime, got ",
    ),
    (
        "callback of another event",
        lambda s: s.record_outcomes(_done(callback=make_event(parent_id="another"))),
        r"^an outcome's callback names the event of the outcome as its parent$",
    ),
    (
        "callback of a retry",
        lambda s: s.record_outcomes(_with_callback(EventStatus.PENDING)),
        r"^a callback reports an event's end, not PENDING$",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"),
    [(c, m) for _, c, m in BAD_OUTCOMES],
    ids=[n for n, _, _ in BAD_OUTCOMES],
)
async def test_an_outcome_that_breaks_a_rule_is_refused_with_the_rule_it_breaks(
    world: World, call: Call, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await call(world.store)
    assert world.memory.faults.calls == {}


async def test_of_one_claims_outcomes_given_together_the_last_given_applies(
    world: World,
) -> None:
    (event,) = await world.submit(world.event())
    batch = await world.store.claim(ClaimRequest("worker-1", 1, 60.0))
    assert batch is not None
    (claimed,) = batch.events
    retry = make_outcome(claimed, status=EventStatus.PENDING, retry_delay_seconds=30.0)
    done = make_outcome(claimed)
    assert await world.store.record_outcomes([retry, done]) == {event.id}
    stored = await world.stored(event)
    assert (stored.status, stored.executed_at) == (EventStatus.COMPLETED, done.executed_at)


async def _claimed(world: World) -> Event:
    await world.submit(world.event())
    batch = await world.store.claim(ClaimRequest("worker-1", 1, 60.0))
    assert batch is not None
    (claimed,) = batch.events
    return claimed


async def test_an_unstorable_last_error_is_stored_made_storable_though_the_attempts_is_clean(
    world: World,
) -> None:
    claimed = await _claimed(world)
    retry = make_outcome(claimed, status=EventStatus.PENDING, last_error="HTTP\x00503")
    assert retry.attempt.error == "HTTP 503"
    assert await world.store.record_outcomes([retry]) == {claimed.id}
    assert (await world.stored(claimed)).last_error == "HTTP\ufffd503"
    (record,) = await world.store.attempts(claimed.id)
    assert record.error == "HTTP 503"


async def test_an_unstorable_attempt_error_is_stored_made_storable_though_the_last_is_clean(
    world: World,
) -> None:
    claimed = await _claimed(world)
    retry = make_outcome(claimed, status=EventStatus.PENDING)
    retry = replace(retry, attempt=replace(retry.attempt, error="HTTP\x00503"))
    assert retry.last_error == "HTTP 503"
    assert await world.store.record_outcomes([retry]) == {claimed.id}
    assert (await world.stored(claimed)).last_error == "HTTP 503"
    (record,) = await world.store.attempts(claimed.id)
    assert record.error == "HTTP\ufffd503"


async def test_an_outcomes_callback_is_stored_under_its_destinations_key(world: World) -> None:
    claimed = await _claimed(world)
    notice = make_event(
        parent_id=claimed.id,
        delivery_type="http",
        destination="HTTPS://Notices.Example:443/done",
        destination_key="",
    )
    done = make_outcome(claimed, callback=notice)
    assert await world.store.record_outcomes([done]) == {claimed.id}
    stored = await world.stored(notice)
    assert (stored.parent_id, stored.status) == (claimed.id, EventStatus.PENDING)
    assert stored.destination_key == destination_key("http", notice.destination)
    assert stored.destination_key


BAD_CLAIMS: list[tuple[str, ClaimRequest, str]] = [
    ("negative limit", ClaimRequest("w", -1, 60.0), r"^limit must not be negative, got -1$"),
    ("no lease", ClaimRequest("w", 1, 0.0), r"^lease_seconds must be positive, got 0.0$"),
    ("no worker", ClaimRequest("", 1, 60.0), r"^a claim needs a worker$"),
    (
        "negative budget",
        ClaimRequest("w", 1, 60.0, budgets={"receiver.example:443": -1}),
        r"^destination budgets must not be negative$",
    ),
    (
        "negative default budget",
        ClaimRequest("w", 1, 60.0, default_budget=-1),
        r"^default_budget must not be negative, got -1$",
    ),
    (
        "shared limits on a store that can't share them",
        ClaimRequest("w", 1, 60.0, shared=SharedLimits(default=DestinationRule())),
        r"^this store can't keep limits shared by every process$",
    ),
]


@pytest.mark.parametrize(
    ("request_", "message"),
    [(r, m) for _, r, m in BAD_CLAIMS],
    ids=[n for n, _, _ in BAD_CLAIMS],
)
async def test_a_claim_that_breaks_a_rule_is_refused_with_the_rule_it_breaks(
    world: World, request_: ClaimRequest, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await world.store.claim(request_)
    assert world.memory.faults.calls == {}


async def test_a_zero_budget_claims_none_of_its_destination_and_the_others_still_their_own(
    world: World,
) -> None:
    held = world.event(after=-1.0, destination="https://held.example/hook")
    free = world.event(destination="https://free.example/hook")
    await world.submit(held, free)
    batch = await world.store.claim(ClaimRequest("w", 10, 60.0, budgets={"held.example:443": 0}))
    assert batch is not None
    assert [event.id for event in batch.events] == [free.id]


@pytest.mark.parametrize(
    "request_",
    [
        ClaimRequest("w", 0, 60.0),
        ClaimRequest("w", 5, 60.0, default_budget=0),
        ClaimRequest("w", 5, 60.0, default_budget=0, budgets={"receiver.example:443": 0}),
    ],
    ids=["no room", "no budget anywhere", "no budget listed either"],
)
async def test_a_claim_with_room_for_nothing_is_answered_none_without_the_adapter(
    world: World, request_: ClaimRequest
) -> None:
    await world.submit(world.event())
    assert await world.store.claim(request_) is None
    assert "claim" not in world.memory.faults.calls
