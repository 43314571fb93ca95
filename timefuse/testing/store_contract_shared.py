"""The contract of stores that share per-destination limits and breakers across processes.

For adapters that declare ``limits_sharer`` (PostgreSQL; the in-memory one when asked): a
subclass of :class:`SharedLimitsContract` runs with the same fixtures as
:class:`~timefuse.testing.store_contract.StoreContract`. Workers here stand for processes.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from timefuse.ports.store import ClaimRef, ClaimRequest, DestinationRule, DueFilter, SharedLimits
from timefuse.service.gate import source_breaker_key
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import StoreTime, insert_events, utc_now

KEY = "capped.example:443"
URL = "https://capped.example/hook"
NO_LIMITS = DestinationRule()


def limits(**kwargs: object) -> SharedLimits:
    fields: dict[str, object] = {"default": NO_LIMITS, **kwargs}
    return SharedLimits(**fields)  # type: ignore[arg-type]


async def take(
    store: Store,
    worker: str,
    shared: SharedLimits,
    limit: int = 100,
    lease: float = 30.0,
    due: DueFilter | None = None,
) -> tuple[list[str], frozenset[str]]:
    request = ClaimRequest(worker, limit, lease, shared=shared, due=due or DueFilter())
    batch = await store.claim(request)
    assert batch is not None
    return [event.id for event in batch.events], batch.probes


async def due_events(
    store: Store, count: int, url: str = URL, source: str = "tests", age: float = 0.0
) -> list[str]:
    now = utc_now() - timedelta(seconds=age)
    events = [
        make_event(destination=url, source=source, scheduled_at=now - timedelta(seconds=count - n))
        for n in range(count)
    ]
    await insert_events(store, *events)
    return [event.id for event in events]


C_AND_D_CAPPED = {
    "c.example:443": DestinationRule(concurrency=1),
    "d.example:443": DestinationRule(concurrency=1),
}


async def c_and_d_full_then_b(store: Store, shared: SharedLimits) -> list[str]:
    """C's and D's backlogs (cap 1 each, held by worker-c), then B's 3 events, due after
    whatever is stored already: a claim meeting them needs all its rounds to reach B."""
    await due_events(store, 31, url="https://c.example/hook", age=300.0)
    await due_events(store, 31, url="https://d.example/hook", age=200.0)
    last = await due_events(store, 3, url="https://b.example/hook")
    for held in C_AND_D_CAPPED:
        others = frozenset({KEY, *C_AND_D_CAPPED} - {held})
        due = DueFilter(excluded_destinations=others)
        assert len((await take(store, "worker-c", shared, limit=1, due=due))[0]) == 1
    return last


@pytest.mark.timefuse_contract
@pytest.mark.asyncio
class SharedLimitsContract:
    async def test_a_cap_holds_across_workers(self, store: Store) -> None:
        ids = await due_events(store, 10)
        shared = limits(overrides={KEY: DestinationRule(concurrency=3)})
        first, _ = await take(store, "worker-a", shared)
        assert first == ids[:3]
        assert (await take(store, "worker-b", shared))[0] == []
        claimed = await store.get(first[0])
        assert claimed is not None
        assert await store.record_outcomes([make_outcome(claimed)]) == {claimed.id}
        assert (await take(store, "worker-b", shared))[0] == ids[3:4]

    async def test_a_full_destinations_backlog_does_not_hide_the_others_due_events(
        self, store: Store
    ) -> None:
        # 100 events of a capped destination fall due before another destination's 3: a claim
        # of 10 looks at 40 rows first, all of the full one's, and must look past them.
        await due_events(store, 100, age=60.0)
        others = await due_events(store, 3, url="https://other.example/hook")
        shared = limits(overrides={KEY: DestinationRule(concurrency=2)})
        first, _ = await take(store, "worker-a", shared, limit=10)
        assert set(others) <= set(first)
        second, _ = await take(store, "worker-b", shared, limit=10)
        assert second == []  # the capped one is full, the others are taken

    async def test_a_destination_found_behind_a_full_ones_rows_is_read_and_claimed(
        self, store: Store
    ) -> None:
        # A (cap 10) is full with another worker's claims and has 35 more due before B's one
        # event (cap 5). A claim of 40 finds B among its first 40 due rows; reading only what
        # A and B could take (15, twice over) would stop at A's rows and pass B over.
        await due_events(store, 45, age=60.0)
        (other,) = await due_events(store, 1, url="https://other.example/hook")
        shared = limits(
            overrides={KEY: DestinationRule(concurrency=10),
                       "other.example:443": DestinationRule(concurrency=5)}
        )  # fmt: skip
        assert len((await take(store, "worker-a", shared, limit=10))[0]) == 10
        taken, _ = await take(store, "worker-b", shared, limit=40)
        assert taken == [other]

    async def test_claims_keep_looking_past_a_full_destination_while_that_finds_work(
        self, store: Store
    ) -> None:
        # A (cap 5) is full, its backlog due first; C (cap 10) behind it. Each claim finds C
        # past A, again and again, not only the first time.
        await due_events(store, 30, age=120.0)
        await due_events(store, 25, url="https://other.example/hook")
        shared = limits(
            overrides={KEY: DestinationRule(concurrency=5),
                       "other.example:443": DestinationRule(concurrency=10)}
        )  # fmt: skip
        assert len((await take(store, "worker-a", shared, limit=5))[0]) == 5
        for _ in range(2):
            taken, _ = await take(store, "worker-b", shared, limit=15)
            assert len(taken) == 10
            claimed = [await store.get(event_id) for event_id in taken]
            outcomes = [make_outcome(event) for event in claimed if event is not None]
            assert len(await store.record_outcomes(outcomes)) == 10

    async def test_a_worker_counts_what_it_holds_itself(self, store: Store) -> None:
        await due_events(store, 10)
        shared = limits(overrides={KEY: DestinationRule(concurrency=3)}, mine={KEY: 2})
        assert len((await take(store, "worker-a", shared))[0]) == 1

    async def test_concurrent_claims_never_exceed_the_cap(self, store: Store) -> None:
        await due_events(store, 40)
        shared = limits(overrides={KEY: DestinationRule(concurrency=5)})
        results = await asyncio.gather(
            *(take(store, f"worker-{n}", shared, limit=10) for n in range(8))
        )
        assert sum(len(ids) for ids, _ in results) == 5

    async def test_a_rate_holds_across_workers(self, store: Store, store_time: StoreTime) -> None:
        await due_events(store, 10)
        shared = limits(overrides={KEY: DestinationRule(rate=1.0, burst=2)})
        assert len((await take(store, "worker-a", shared))[0]) == 2
        assert (await take(store, "worker-b", shared))[0] == []
        await store_time.advance(1.1)
        assert len((await take(store, "worker-b", shared))[0]) == 1
        assert (await take(store, "worker-a", shared))[0] == []

    async def test_a_rate_limited_destinations_backlog_does_not_hide_the_others_due_events(
        self, store: Store, store_time: StoreTime
    ) -> None:
        # A's 30 events (a burst of 2, a token every 2 s) fall due before B's 15: a claim of 10
        # looks at A's rows only and A takes its burst; the claim must look past A for the rest.
        # Out of tokens, A takes nothing, claim after claim, until one comes back.
        limited = await due_events(store, 30, age=120.0)
        others = await due_events(store, 15, url="https://other.example/hook")
        shared = limits(overrides={KEY: DestinationRule(rate=0.5, burst=2)})
        assert (await take(store, "worker-a", shared, limit=10))[0] == limited[:2] + others[:8]
        assert (await take(store, "worker-b", shared, limit=10))[0] == others[8:]
        assert (await take(store, "worker-a", shared, limit=10))[0] == []  # only A's are due
        await store_time.advance(2.1)
        assert (await take(store, "worker-b", shared, limit=10))[0] == limited[2:3]

    async def test_a_destination_found_beside_one_out_of_tokens_is_read_past_where_it_was_found(
        self, store: Store
    ) -> None:
        # A's 8 events (a burst of 2) fall due before B's 20: a claim of 10 finds A and B in its
        # first 10 due rows, only two of them B's. A takes its burst, then nothing: the claim must
        # read B's rows past the ones it found B in to fill up, since later rounds pass B over.
        limited = await due_events(store, 8, age=120.0)
        others = await due_events(store, 20, url="https://other.example/hook")
        shared = limits(overrides={KEY: DestinationRule(rate=0.5, burst=2)})
        assert (await take(store, "worker-a", shared, limit=10))[0] == limited[:2] + others[:8]
        assert (await take(store, "worker-b", shared, limit=10))[0] == others[8:18]

    async def test_a_destination_found_in_the_last_row_looked_at_takes_all_its_cap_allows(
        self, store: Store
    ) -> None:
        # A (cap 2) is full with worker-c's claims and has 9 more due before B's 5 (cap 3): a
        # claim of 10 finds B in the last of the 10 rows it looks at. Reading no further than
        # that, B would give one event a claim; it gives three to the first, and no more: what
        # the claim took in one round counts toward B's cap in the next.
        await due_events(store, 11, age=120.0)
        others = await due_events(store, 5, url="https://other.example/hook")
        shared = limits(
            overrides={KEY: DestinationRule(concurrency=2),
                       "other.example:443": DestinationRule(concurrency=3)}
        )  # fmt: skip
        assert len((await take(store, "worker-c", shared, limit=2))[0]) == 2
        assert (await take(store, "worker-b", shared, limit=10))[0] == others[:3]
        assert (await take(store, "worker-a", shared, limit=10))[0] == []

    async def test_a_destination_given_all_its_room_leaves_the_rounds_to_the_others(
        self, store: Store
    ) -> None:
        # A (cap 4, two held by worker-c) first, then C's and D's backlogs, B's 3 last. A gives
        # its two; looking at A again would spend a round on nothing, and B would be left
        # behind C's and D's backlogs with no round to reach it.
        await due_events(store, 32, age=400.0)
        shared = limits(overrides={KEY: DestinationRule(concurrency=4), **C_AND_D_CAPPED})
        assert len((await take(store, "worker-c", shared, limit=2))[0]) == 2
        last = await c_and_d_full_then_b(store, shared)
        taken, _ = await take(store, "worker-b", shared, limit=10)
        assert len(taken) == 5
        assert set(last) <= set(taken)

    async def test_a_destination_given_all_its_tokens_leaves_the_rounds_to_the_others(
        self, store: Store
    ) -> None:
        # As above, A's room being the two tokens worker-c left in its bucket.
        await due_events(store, 32, age=400.0)
        shared = limits(overrides={KEY: DestinationRule(rate=0.001, burst=4), **C_AND_D_CAPPED})
        only_a = DueFilter(excluded_destinations=frozenset({"c.example:443", "d.example:443"}))
        assert len((await take(store, "worker-c", shared, limit=2, due=only_a))[0]) == 2
        last = await c_and_d_full_then_b(store, shared)
        taken, _ = await take(store, "worker-b", shared, limit=10)
        assert len(taken) == 5
        assert set(last) <= set(taken)

    async def test_a_destination_given_its_probe_leaves_the_rounds_to_the_others(
        self, store: Store
    ) -> None:
        # As above, A's breaker open and cooled down: its room is its one probe.
        await due_events(store, 32, age=400.0)
        shared = limits(overrides=C_AND_D_CAPPED, breaker_cooldown_seconds=0.0)
        last = await c_and_d_full_then_b(store, shared)
        await store.publish_breaker(KEY, open=True)
        taken, probes = await take(store, "worker-b", shared, limit=10)
        assert len(probes) == 1
        assert len(taken) == 4
        assert set(last) <= set(taken)

    async def test_a_claims_budget_for_a_destination_holds_over_its_rounds(
        self, store: Store
    ) -> None:
        # As above, with B bounded by the claim's own budget (what the process has room for)
        # instead of a cap: the rounds together take three of B's five.
        await due_events(store, 11, age=120.0)
        others = await due_events(store, 5, url="https://other.example/hook")
        shared = limits(overrides={KEY: DestinationRule(concurrency=2)})
        assert len((await take(store, "worker-c", shared, limit=2))[0]) == 2
        request = ClaimRequest("worker-b", 10, 30.0, default_budget=3, shared=shared)
        batch = await store.claim(request)
        assert batch is not None
        assert [event.id for event in batch.events] == others[:3]

    async def test_a_host_rule_covers_every_port_and_a_type_rule_its_type(
        self, store: Store
    ) -> None:
        await due_events(store, 5, "https://host.example:8443/x")
        await due_events(store, 5, "https://other.example/x")
        shared = limits(
            overrides={"host.example": DestinationRule(concurrency=1)},
            type_defaults={"http": DestinationRule(concurrency=2)},
        )
        ids, _ = await take(store, "worker-a", shared)
        assert len(ids) == 3  # one of host.example, two of other.example

    async def test_an_open_breaker_lets_one_probe_through_after_its_cooldown(
        self, store: Store, store_time: StoreTime
    ) -> None:
        ids = await due_events(store, 5)
        other = await due_events(store, 2, "https://fine.example/")
        shared = limits(breaker_cooldown_seconds=0.2)
        await store.publish_breaker(KEY, open=True)
        (breaker,) = await store.open_breakers()
        assert (breaker.key, breaker.probe_by) == (KEY, None)
        assert breaker.open_seconds >= 0
        taken, probes = await take(store, "worker-a", shared)
        assert (taken, probes) == (other, frozenset())  # the open destination gives nothing
        await store_time.advance(0.3)
        taken, probes = await take(store, "worker-a", shared)
        assert (taken, probes) == (ids[:1], frozenset(ids[:1]))  # one probe
        assert (await take(store, "worker-b", shared))[0] == []  # only one, cluster-wide
        assert [b.probe_by for b in await store.open_breakers()] == ["worker-a"]
        await store.publish_breaker(KEY, open=False)
        assert await store.open_breakers() == []
        taken, probes = await take(store, "worker-b", shared)
        assert (taken, probes) == (ids[1:], frozenset())

    async def test_a_reopened_breaker_waits_a_whole_cooldown_again(
        self, store: Store, store_time: StoreTime
    ) -> None:
        await due_events(store, 5)
        shared = limits(breaker_cooldown_seconds=0.2)
        await store.publish_breaker(KEY, open=True)
        await store_time.advance(0.3)
        (probe,), _ = await take(store, "worker-a", shared)
        await store.publish_breaker(KEY, open=True)  # the probe failed
        claimed = await store.get(probe)
        assert claimed is not None
        await store.hand_back([ClaimRef.of(claimed)])
        assert (await take(store, "worker-b", shared))[0] == []
        await store_time.advance(0.3)
        assert len((await take(store, "worker-b", shared))[0]) == 1

    async def test_handed_back_events_are_claimed_again_past_a_full_destinations_rows(
        self, store: Store, store_time: StoreTime
    ) -> None:
        # A (cap 2) is full with worker-c's claims and has 6 more due before B's 20. Worker-a
        # hands its 10 of B back (a shutdown), worker-b then its own 10 with a delay (a wait that
        # ran too long): each time, a claim of 10 finds A's 6 rows and 4 of B's first, and must
        # read on to take B's handed-back events again, in due order, their attempts uncounted.
        await due_events(store, 8, age=120.0)
        others = await due_events(store, 20, url="https://other.example/hook")
        shared = limits(overrides={KEY: DestinationRule(concurrency=2)})
        assert len((await take(store, "worker-c", shared, limit=2))[0]) == 2
        elsewhere = DueFilter(excluded_destinations=frozenset({KEY}))
        first, _ = await take(store, "worker-a", shared, limit=10, due=elsewhere)
        assert first == others[:10]
        refs = [ClaimRef.of(event) for event in await store.get_many(first)]
        assert await store.hand_back(refs, 0.0) == 10
        # Handed back at once, they keep their places: before B's others.
        again, _ = await take(store, "worker-b", shared, limit=10)
        assert again == others[:10]
        claimed = await store.get_many(again)
        assert {(event.attempts, event.claim_count) for event in claimed} == {(1, 2)}
        refs = [ClaimRef.of(event) for event in claimed]
        assert await store.hand_back(refs, 0.2) == 10
        await store_time.advance(0.3)
        # Handed back for later, they are due after B's others, all at one time (then by id).
        assert (await take(store, "worker-a", shared, limit=10))[0] == others[10:]
        last, _ = await take(store, "worker-a", shared, limit=10)
        assert last == sorted(others[:10])
        claimed = await store.get_many(last)
        assert {(event.attempts, event.claim_count) for event in claimed} == {(1, 3)}

    # -- a source's own breaker at a destination ----------------------------------------------

    async def test_a_sources_breaker_holds_only_that_sources_events(
        self, store: Store, store_time: StoreTime
    ) -> None:
        # The failing tenant's events are due first: they must not stand in the others' way.
        failing = await due_events(store, 5, source="tenant-a", age=60.0)
        healthy = await due_events(store, 3, source="tenant-b")
        shared = limits(breaker_cooldown_seconds=0.2)
        held = source_breaker_key(KEY, "tenant-a")
        await store.publish_breaker(held, open=True)
        assert [b.key for b in await store.open_breakers()] == [held]
        taken, probes = await take(store, "worker-a", shared)
        assert (taken, probes) == (healthy, frozenset())
        await store_time.advance(0.3)
        taken, probes = await take(store, "worker-a", shared)
        assert (taken, probes) == (failing[:1], frozenset(failing[:1]))  # the source's probe
        assert (await take(store, "worker-b", shared))[0] == []  # one, cluster-wide
        assert [(b.key, b.probe_by) for b in await store.open_breakers()] == [(held, "worker-a")]
        await store.publish_breaker(held, open=False)
        assert await store.open_breakers() == []
        assert (await take(store, "worker-b", shared))[0] == failing[1:]

    async def test_a_held_sources_due_events_keep_no_other_source_out_of_reach(
        self, store: Store
    ) -> None:
        # A held source's events first, a full destination's backlog after them, then another
        # source's events to the held source's destination: a claim of 10 reads 20 rows ahead
        # at most, which must not be the held ones' and the full one's.
        await due_events(store, 10, source="held", age=300.0)
        await due_events(store, 40, url="https://full.example/hook", age=200.0)
        healthy = await due_events(store, 3, source="healthy")
        shared = limits(
            overrides={"full.example:443": DestinationRule(concurrency=1)},
            breaker_cooldown_seconds=60.0,
        )
        elsewhere = DueFilter(excluded_destinations=frozenset({KEY}))
        assert len((await take(store, "worker-b", shared, limit=1, due=elsewhere))[0]) == 1
        await store.publish_breaker(source_breaker_key(KEY, "held"), open=True)
        assert (await take(store, "worker-a", shared, limit=10))[0] == healthy

    async def test_a_held_sources_backlog_keeps_no_other_source_of_its_destination_out(
        self, store: Store
    ) -> None:
        # 30 events of a held source, then another source's 3, to one destination: a claim of
        # 10 reads at most 20 of its rows, which must not be the held ones.
        await due_events(store, 30, source="held", age=400.0)
        healthy = await due_events(store, 3, source="healthy")
        await store.publish_breaker(source_breaker_key(KEY, "held"), open=True)
        shared = limits(breaker_cooldown_seconds=60.0)
        assert (await take(store, "worker-b", shared, limit=10))[0] == healthy

    async def test_a_destinations_breaker_holds_every_source(
        self, store: Store, store_time: StoreTime
    ) -> None:
        await due_events(store, 2, source="tenant-a")
        await due_events(store, 2, source="tenant-b")
        shared = limits(breaker_cooldown_seconds=0.2)
        await store.publish_breaker(KEY, open=True)
        await store.publish_breaker(source_breaker_key(KEY, "tenant-a"), open=True)
        assert (await take(store, "worker-a", shared))[0] == []
        await store_time.advance(0.3)
        taken, probes = await take(store, "worker-a", shared)
        assert len(taken) == 1
        assert probes == frozenset(taken)
