"""Quotas per source (timefuse.service.quotas) on the in-memory store, with a fake clock."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timefuse.adapters.inline import InlineIngestBuffer
from timefuse.adapters.memory import MemoryStore
from timefuse.domain.dedup import dedup_event_id
from timefuse.domain.event import Event
from timefuse.domain.quota import QuotaTable, SourceQuota
from timefuse.domain.status import EventStatus
from timefuse.plugins.registry import DeliveryRegistry
from timefuse.ports.store import StoreUnavailable
from timefuse.service.events import EventService
from timefuse.service.metrics import Metrics
from timefuse.service.quotas import MAX_IDLE_BUCKETS, QuotaReason, SourceQuotas
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import seed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    store = Store(MemoryStore())
    await store.open()
    yield store
    await store.close()


def quotas(
    store: Store, clock: Clock | None = None, metrics: Metrics | None = None, **entries: SourceQuota
) -> SourceQuotas:
    table = QuotaTable({name.replace("ANY", "*"): quota for name, quota in entries.items()})
    return SourceQuotas(table, store, metrics or Metrics(), monotonic=clock or Clock())


def events(source: str, count: int) -> list[Event]:
    return [make_event(source=source, external_job_id=f"{source}-{n}") for n in range(count)]


async def admitted(
    quota: SourceQuotas, batch: Sequence[Event], *, store: Store | None = None
) -> list[str]:
    """Admit ``batch``, store what was admitted (in ``store``) inside the block, as the
    submission path does; the admitted events' job ids."""
    async with quota.admit(batch) as admission:
        if store is not None and admission.admitted:
            await seed(store, *admission.admitted)
        return [event.external_job_id for event in admission.admitted]


async def test_a_source_over_its_rate_is_refused_with_the_wait_for_its_next_token(
    store: Store,
) -> None:
    clock = Clock()
    quota = quotas(store, clock, billing=SourceQuota(rate=2.0, burst=3))

    async with quota.admit(events("billing", 5)) as admission:
        kept = [event.external_job_id for event in admission.admitted]
        refusals = [refusal for _, refusal in admission.refused]

    assert kept == ["billing-0", "billing-1", "billing-2"]
    assert [r.reason for r in refusals] == [QuotaReason.RATE] * 2
    assert refusals[0].retry_after == pytest.approx(0.5)
    assert refusals[0].entry == "billing"
    assert "2 events/s" in refusals[0].message

    clock.now += 0.5
    assert await admitted(quota, events("billing", 2)) == ["billing-0"]


async def test_the_default_burst_is_one_seconds_worth_of_the_rate(store: Store) -> None:
    quota = quotas(store, billing=SourceQuota(rate=4.0))

    assert len(await admitted(quota, events("billing", 10))) == 4


async def test_another_source_is_not_held_by_one_over_its_quota(store: Store) -> None:
    quota = quotas(store, ANY=SourceQuota(rate=1.0, burst=1))

    first = await admitted(quota, events("alpha", 3) + events("beta", 3))

    # "*" gives every source a bucket of its own, and a source not limited at all passes.
    assert first == ["alpha-0", "beta-0"]


async def test_a_sources_own_entry_replaces_the_default_whole(store: Store) -> None:
    quota = quotas(store, ANY=SourceQuota(rate=1.0, burst=1, max_pending=1), ops=SourceQuota())

    assert len(await admitted(quota, events("ops", 20))) == 20
    assert len(await admitted(quota, events("other", 20))) == 1


async def test_a_batch_over_the_pending_cap_is_admitted_up_to_the_cap_in_order(
    store: Store,
) -> None:
    await seed(store, *[make_event(source="billing") for _ in range(3)])
    quota = quotas(store, billing=SourceQuota(max_pending=5))

    async with quota.admit(events("billing", 4)) as admission:
        kept = [event.external_job_id for event in admission.admitted]
        reasons = [refusal.reason for _, refusal in admission.refused]
        refused_ids = [event.external_job_id for event, _ in admission.refused]

    assert kept == ["billing-0", "billing-1"]
    assert refused_ids == ["billing-2", "billing-3"]
    assert reasons == [QuotaReason.PENDING] * 2


async def test_only_pending_events_count_toward_the_cap(store: Store) -> None:
    done = [
        make_event(source="billing", status=status)
        for status in EventStatus
        if status.value != "PENDING"
    ]
    await seed(store, *done)
    quota = quotas(store, billing=SourceQuota(max_pending=2))

    assert len(await admitted(quota, events("billing", 5), store=store)) == 2
    # Now the two admitted are PENDING in the store: no room left.
    assert await admitted(quota, events("billing", 1)) == []


async def test_a_cap_of_zero_refuses_every_event(store: Store) -> None:
    quota = quotas(store, billing=SourceQuota(max_pending=0))

    assert await admitted(quota, events("billing", 2)) == []


async def test_room_granted_and_not_yet_stored_is_not_granted_twice(store: Store) -> None:
    quota = quotas(store, billing=SourceQuota(max_pending=3))

    async with quota.admit(events("billing", 2)) as first:
        # A second submission while the first is still inserting sees its reservation.
        async with quota.admit(events("billing", 2)) as second:
            assert (len(first.admitted), len(second.admitted)) == (2, 1)
            await seed(store, *second.admitted)
        await seed(store, *first.admitted)

    assert (await store.count_by_status(sources=["billing"]))[EventStatus.PENDING] == 3
    assert await admitted(quota, events("billing", 1)) == []


async def test_room_is_freed_when_an_admission_fails_to_insert(store: Store) -> None:
    quota = quotas(store, billing=SourceQuota(max_pending=2))

    with pytest.raises(RuntimeError):
        async with quota.admit(events("billing", 2)):
            raise RuntimeError("the insert failed")

    assert len(await admitted(quota, events("billing", 2))) == 2


async def test_refusals_are_counted_per_entry_and_reason(store: Store) -> None:
    metrics = Metrics()
    quota = quotas(
        store, metrics=metrics, ANY=SourceQuota(rate=1.0, burst=1), ops=SourceQuota(max_pending=0)
    )

    await admitted(quota, events("alpha", 3) + events("beta", 2) + events("ops", 1))

    def counted(entry: str, reason: str) -> float | None:
        return metrics.registry.get_sample_value(
            "timefuse_quota_rejections_total", {"source": entry, "reason": reason}
        )

    # alpha and beta are both under "*": one series for every source without an entry.
    assert counted("*", "rate") == 3
    assert counted("ops", "pending") == 1
    usage = {row.source: row for row in await quota.usage()}
    assert usage["*"].rejected == {"rate": 3, "pending": 0}
    assert usage["ops"].rejected == {"rate": 0, "pending": 1}


async def test_usage_shows_each_entry_with_its_pending_count_and_tokens(store: Store) -> None:
    clock = Clock()
    await seed(store, *[make_event(source="billing") for _ in range(4)])
    quota = quotas(store, clock, billing=SourceQuota(rate=1.0, burst=5, max_pending=10))
    await admitted(quota, events("billing", 2), store=store)

    (billing,) = await quota.usage()
    (stranger,) = await quota.usage(["stranger"])

    assert (billing.entry, billing.pending, billing.tokens) == ("billing", 6, 3.0)
    assert (stranger.entry, stranger.quota, stranger.pending) == (None, None, 0)


async def test_no_quotas_admits_everything_without_reading_the_store(store: Store) -> None:
    quota = quotas(store, billing=SourceQuota())
    memory = store.adapter
    assert isinstance(memory, MemoryStore)
    memory.faults.fail["pending_by_source"] = [RuntimeError("must not be read")]

    assert len(await admitted(quota, events("billing", 3))) == 3


async def test_quiet_sources_buckets_are_dropped_past_the_bound(store: Store) -> None:
    clock = Clock()
    quota = quotas(store, clock, ANY=SourceQuota(rate=1.0, burst=1))
    sources = [make_event(source=f"s{n}") for n in range(MAX_IDLE_BUCKETS)]
    assert len(await admitted(quota, sources)) == MAX_IDLE_BUCKETS
    clock.now += 5.0  # every bucket is full again: dropping them forgets nothing

    await admitted(quota, [make_event(source="newcomer")])

    assert quota.bucket_count == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cap=st.integers(0, 6),
    rate=st.sampled_from([None, 1.0, 3.0]),
    burst=st.integers(1, 4),
    steps=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 5), st.floats(0, 2)), max_size=8
    ),
)
async def test_no_sequence_of_batches_takes_a_source_past_its_limits(
    cap: int, rate: float | None, burst: int, steps: list[tuple[str, int, float]]
) -> None:
    """Whatever batches come, at whatever pace: a source never holds more than its cap, never
    gets more than its burst plus what its rate refilled, and is refused only at a limit."""
    store = Store(MemoryStore())
    await store.open()
    clock = Clock()
    quota = quotas(
        store,
        clock,
        ANY=SourceQuota(rate=rate, burst=burst if rate else None, max_pending=cap),
    )
    start = clock.now
    taken: Counter[str] = Counter()
    try:
        for source, size, pause in steps:
            clock.now += pause
            batch = events(source, size)
            async with quota.admit(batch) as admission:
                if admission.admitted:
                    await seed(store, *admission.admitted)
                refused = [refusal for _, refusal in admission.refused]
            taken[source] += len(admission.admitted)
            # In submission order: what passes is a prefix of the source's events.
            assert admission.admitted == batch[: len(admission.admitted)]
            pending = (await store.count_by_status(sources=[source]))[EventStatus.PENDING]
            assert pending == taken[source] <= cap
            allowed = math.inf if rate is None else burst + rate * (clock.now - start)
            assert taken[source] <= allowed + 1e-9
            for refusal in refused:
                if refusal.reason is QuotaReason.PENDING:
                    assert pending == cap
                else:
                    assert refusal.retry_after is not None
                    assert refusal.retry_after > 0
    finally:
        await store.close()


async def test_a_changed_default_applies_to_every_source_under_it_keeping_their_tokens(
    store: Store,
) -> None:
    clock = Clock()
    quota = quotas(store, clock, ANY=SourceQuota(rate=1.0, burst=3), ops=SourceQuota(rate=1.0))
    await admitted(quota, events("alpha", 2) + events("ops", 1))

    assert quota.set_entry("*", SourceQuota(rate=10.0, burst=2))
    alpha_now = await admitted(quota, events("alpha", 5))
    clock.now += 0.1
    alpha_later = await admitted(quota, events("alpha", 5))

    # alpha kept its 1 token (not a fresh burst of 2), then refills at the new 10/s.
    assert (len(alpha_now), len(alpha_later)) == (1, 1)
    assert quota.set_entry("*", None)
    assert not quota.set_entry("*", None)
    assert len(await admitted(quota, events("alpha", 50))) == 50
    # ops keeps its own entry and its empty bucket.
    assert await admitted(quota, events("ops", 1)) == []


@pytest.mark.looptime
async def test_a_capped_sources_count_is_bounded_when_a_count_timeout_is_set(
    store: Store,
) -> None:
    # With Kafka, nothing else bounds this read: a stalled store must answer within the bound.
    memory = store.adapter
    assert isinstance(memory, MemoryStore)
    stalled = asyncio.Event()
    memory.faults.stall["pending_by_source"] = stalled
    table = QuotaTable({"capped": SourceQuota(max_pending=5), "rated": SourceQuota(rate=1.0)})
    quota = SourceQuotas(table, store, Metrics(), monotonic=Clock(), count_timeout=2.0)
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(StoreUnavailable, match="within 2 s"):
        await admitted(quota, events("capped", 1))

    assert loop.time() - started == pytest.approx(2.0, abs=0.1)
    # A source without a cap doesn't read the store at all.
    assert await admitted(quota, events("rated", 1)) == ["rated-0"]
    # The reservation of the failed admission was given back.
    stalled.set()
    assert await admitted(quota, events("capped", 5), store=store) == [
        f"capped-{n}" for n in range(5)
    ]


def identified(event: Event) -> Event:
    """``event`` with the id its dedup key gives, as a submission's is."""
    return replace(
        event, id=dedup_event_id(event.source, event.external_job_id, event.scheduled_at)
    )


async def test_a_batch_the_quotas_refuse_costs_the_store_no_look_up() -> None:
    # What a quota refuses must not cost the store: a refused batch makes no twin look-ups.
    class WallClock:
        def now(self) -> datetime:
            return datetime.now(UTC)

    adapter = MemoryStore()
    store = Store(adapter)
    await store.open()
    quotas = SourceQuotas(QuotaTable({"noisy": SourceQuota(rate=0.001, burst=1)}), store, Metrics())
    service = EventService(
        buffer=InlineIngestBuffer(adapter),
        store=store,
        registry=DeliveryRegistry(),
        clock=WallClock(),
        metrics=Metrics(),
        quotas=quotas,
    )
    first = identified(make_event(source="noisy", external_job_id="first"))
    assert len((await service._accept_batch([(0, first)], [])).accepted) == 1  # the one token
    reads = adapter.faults.calls.get("get", 0)
    batch = [
        (n, identified(make_event(source="noisy", external_job_id=f"n-{n}"))) for n in range(50)
    ]
    result = await service._accept_batch(batch, [])
    assert (len(result.accepted), len(result.rejected)) == (0, 50)
    assert adapter.faults.calls.get("get", 0) == reads
    await store.close()


async def test_a_rate_taken_off_a_source_drops_its_bucket_and_a_new_rate_starts_full(
    store: Store,
) -> None:
    clock = Clock()
    quota = quotas(store, clock, billing=SourceQuota(rate=1.0, burst=2))
    assert len(await admitted(quota, events("billing", 3))) == 2  # the bucket is empty now
    assert quota.bucket_count == 1

    assert quota.set_entry("billing", SourceQuota(max_pending=100))
    assert quota.bucket_count == 0
    assert quota.set_entry("billing", SourceQuota(rate=1.0, burst=2))
    # No time has passed: only a fresh bucket holds tokens.
    assert len(await admitted(quota, events("billing", 3))) == 2


async def test_a_default_made_rate_free_drops_the_bucket_of_every_source_under_it(
    store: Store,
) -> None:
    quota = quotas(store, Clock(), ANY=SourceQuota(rate=1.0, burst=1))
    await admitted(quota, events("alpha", 1) + events("beta", 1) + events("gamma", 1))
    assert quota.bucket_count == 3

    assert quota.set_entry("*", SourceQuota(max_pending=100))
    assert quota.bucket_count == 0


async def test_refusals_name_their_source_and_say_why_in_full(store: Store) -> None:
    long = "tenant-" + "x" * 150  # named in a message by its first 100 characters
    quota = quotas(
        store,
        billing=SourceQuota(max_pending=1),
        ANY=SourceQuota(rate=2.0, burst=1),
    )

    async with quota.admit(events("billing", 2) + events(long, 2)) as admission:
        refusals = [refusal for _, refusal in admission.refused]

    pending, rate = refusals
    assert (pending.source, pending.entry, pending.reason) == (
        "billing",
        "billing",
        QuotaReason.PENDING,
    )
    assert pending.message == (
        "source 'billing' holds its quota of 1 PENDING events; "
        "more are accepted as those are delivered or cancelled"
    )
    assert (rate.source, rate.entry, rate.reason) == (long, "*", QuotaReason.RATE)
    assert rate.message == (
        f"source {long[:100]!r} is over its quota of 2 events/s (bursts of 1); retry in 0.50 s"
    )


async def test_a_long_pending_refusal_names_the_source_by_its_first_100_characters(
    store: Store,
) -> None:
    long = "tenant-" + "y" * 150
    quota = quotas(store, ANY=SourceQuota(max_pending=0))

    async with quota.admit(events(long, 1)) as admission:
        ((_, refusal),) = admission.refused

    assert refusal.source == long
    assert refusal.message.startswith(f"source {long[:100]!r} holds its quota of 0 PENDING")


async def test_busy_sources_buckets_are_swept_again_once_their_number_has_doubled(
    store: Store,
) -> None:
    clock = Clock()
    quota = quotas(store, clock, ANY=SourceQuota(rate=1.0, burst=1))
    first = [make_event(source=f"s{n}") for n in range(MAX_IDLE_BUCKETS)]
    assert len(await admitted(quota, first)) == MAX_IDLE_BUCKETS
    # Every bucket is in use (just emptied): a sweep drops none, and the next one waits until
    # there are twice as many.
    more = [make_event(source=f"t{n}") for n in range(MAX_IDLE_BUCKETS - 1)]
    await admitted(quota, more)
    assert quota.bucket_count == 2 * MAX_IDLE_BUCKETS - 1
    await admitted(quota, [make_event(source="u")])
    assert quota.bucket_count == 2 * MAX_IDLE_BUCKETS
    clock.now += 5.0  # every bucket is full again

    await admitted(quota, [make_event(source="newcomer")])

    assert quota.bucket_count == 1


async def test_only_a_source_under_a_pending_cap_needs_its_pending_events_counted(
    store: Store,
) -> None:
    quota = quotas(store, capped=SourceQuota(max_pending=10), rated=SourceQuota(rate=1.0, burst=5))
    anywhere = quotas(store, ANY=SourceQuota(max_pending=3))

    assert [quota.counts_pending(s) for s in ("capped", "rated", "other")] == [True, False, False]
    assert [anywhere.counts_pending(s) for s in ("alpha", "beta")] == [True, True]
