"""A shared claim's rounds on PostgreSQL: each round is a transaction of its own, so what the
earlier rounds took is committed before a later one runs.

A destination found behind a full one's backlog (SharedLimitsContract shows the layout) is
looked at again in the next round. Between the two, the first round's events are committed
under this worker: a later round that fails must still hand them over, and one whose earlier
event was recovered and taken again must hand it over once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres import store as postgres_store
from timefuse.ports.store import DestinationRule, StoreError, StoreUnavailable
from timefuse.service.store import Store
from timefuse.testing.store_contract_shared import KEY, due_events, limits, take
from timefuse.testing.store_contract_support import PAST_SHORT_LEASE, SHORT_LEASE, RealTime

pytestmark = pytest.mark.postgres

OTHER_URL = "https://other.example/hook"
Round = Callable[..., Awaitable[Any]]
SHARED = limits(
    overrides={KEY: DestinationRule(concurrency=2),
               "other.example:443": DestinationRule(concurrency=3)}
)  # fmt: skip


async def behind_a_full_destination(store: Store) -> list[str]:
    # A (cap 2) full with worker-c's claims, 9 more due before B's 5 (cap 3): a claim of 10
    # finds B in the last row its first round reads, and takes two more of B's in a second.
    await due_events(store, 11, age=120.0)
    others = await due_events(store, 5, url=OTHER_URL)
    assert len((await take(store, "worker-c", SHARED, limit=2))[0]) == 2
    return others


def before_the_second_round(
    monkeypatch: pytest.MonkeyPatch, step: Callable[[], Awaitable[None]]
) -> None:
    real: Round = PostgresEventStore._claim_shared_round
    rounds = 0

    async def round_with_a_step(self: PostgresEventStore, *args: Any, **kwargs: Any) -> Any:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            await step()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(PostgresEventStore, "_claim_shared_round", round_with_a_step)


async def test_a_later_rounds_failure_hands_over_what_the_earlier_rounds_took(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first round's event is committed PROCESSING under worker-b: were the claim to fail
    # with it, it would wait out its lease unattempted (and a last attempt be dead-lettered).
    others = await behind_a_full_destination(pg_store)

    async def connection_lost() -> None:
        raise StoreUnavailable("the connection was lost")

    before_the_second_round(monkeypatch, connection_lost)
    taken, _ = await take(pg_store, "worker-b", SHARED, limit=10)
    assert taken == others[:1]
    # A round that reads past backlogs may be what fails (a statement timeout): the next
    # claims make one round only for a while, rather than fail it again each time.
    assert (await take(pg_store, "worker-d", SHARED, limit=10))[0] == others[1:2]


async def test_a_first_rounds_failure_is_the_claims(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real: Round = PostgresEventStore._claim_shared_round

    async def refused(self: PostgresEventStore, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the connection was lost")

    await due_events(pg_store, 3)
    monkeypatch.setattr(PostgresEventStore, "_claim_shared_round", refused)
    with pytest.raises(StoreError):
        await take(pg_store, "worker-b", SHARED, limit=10)
    monkeypatch.setattr(PostgresEventStore, "_claim_shared_round", real)
    assert len((await take(pg_store, "worker-b", SHARED, limit=10))[0]) == 2  # none taken before


async def test_an_event_recovered_and_taken_again_between_rounds_comes_once_under_its_new_lease(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim stalls between its rounds past its short lease, and recovery puts the first
    # round's event back: the second round takes it again. The batch holds it once, as the
    # second round claimed it (that lease is the live one).
    others = await behind_a_full_destination(pg_store)

    async def stall_and_recover() -> None:
        await RealTime().advance(PAST_SHORT_LEASE)
        assert await pg_store.recover_expired_leases() == 1

    before_the_second_round(monkeypatch, stall_and_recover)
    taken, _ = await take(pg_store, "worker-b", SHARED, limit=10, lease=SHORT_LEASE)
    # The recovered event still counts toward B's cap in the second round: two, not three.
    assert sorted(taken) == sorted(others[:2])
    claimed = {event.id: event for event in await pg_store.get_many(taken)}
    assert claimed[others[0]].claim_count == 2


class SlowLooks:
    """A fake monotonic clock for the store, moved on by ``seconds`` in every round that looks
    past KEY (the full destination's backlog); each round's excluded destinations, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
        self.now = 1000.0
        self.rounds: list[list[str]] = []
        real: Round = PostgresEventStore._claim_shared_round
        looks = self

        async def timed(self: PostgresEventStore, params: dict[str, Any], *a: Any, **k: Any) -> Any:
            looks.rounds.append(params["excluded"])
            if KEY in params["excluded"]:
                looks.now += seconds
            return await real(self, params, *a, **k)

        monkeypatch.setattr(postgres_store, "time", SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(PostgresEventStore, "_claim_shared_round", timed)

    def later(self, seconds: float) -> None:
        self.now += seconds
        self.rounds.clear()


async def test_after_a_long_look_past_a_backlog_claims_look_once_for_twenty_times_as_long(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Looking past a backlog reads all of it: seconds for a million rows. Done every second, it
    # took PostgreSQL's whole time and the backlog never drained (a ten-million-event day fell
    # behind for good). Here the look takes 2 s of a fake clock: the next claims look once
    # only for 40 s.
    await due_events(pg_store, 10, age=60.0)
    assert len((await take(pg_store, "worker-c", SHARED, limit=2))[0]) == 2  # KEY is full
    looks = SlowLooks(monkeypatch, 2.0)
    assert (await take(pg_store, "worker-b", SHARED, limit=10))[0] == []
    assert looks.rounds == [[], [KEY]]
    looks.later(30.0)
    assert (await take(pg_store, "worker-b", SHARED, limit=10))[0] == []
    assert looks.rounds == [[]]
    looks.later(11.0)
    assert (await take(pg_store, "worker-b", SHARED, limit=10))[0] == []
    assert looks.rounds == [[], [KEY]]


async def test_a_long_look_past_a_backlog_that_finds_work_holds_the_next_claims_too(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another destination's events behind the backlog, found by each look: were only a look
    # that finds nothing to pause the next ones, every claim would read the backlog again.
    await due_events(pg_store, 30, age=60.0)
    others = await due_events(pg_store, 5, url=OTHER_URL)
    assert len((await take(pg_store, "worker-c", SHARED, limit=2))[0]) == 2  # KEY is full
    looks = SlowLooks(monkeypatch, 1.0)
    assert (await take(pg_store, "worker-b", SHARED, limit=10))[0] == others[:3]
    assert len(looks.rounds) == 3  # the first, the look that finds B, the look that finds none
    looks.later(30.0)  # less than 20 times the looks' 2 s
    assert (await take(pg_store, "worker-b", SHARED, limit=10))[0] == []
    assert looks.rounds == [[]]
