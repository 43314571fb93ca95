"""The store contract, part seven: one source's counts and listings among many sources.

The counts of a source (its statistics, and the PENDING count its quota is checked against)
must follow every change an event goes through, whatever the adapter keeps them in; a listing
of some sources must hold exactly their events, however the adapter finds them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimRef, EventQuery
from timefuse.service.store import Store
from timefuse.testing.factories import make_event, make_outcome
from timefuse.testing.store_contract_support import (
    PAST_SHORT_LEASE,
    SHORT_LEASE,
    StoreTime,
    claim,
    insert_events,
    seed,
    utc_now,
)


async def _all_events(store: Store) -> list[Event]:
    """Every stored event, read through the unfiltered listing, page by page."""
    found: list[Event] = []
    after: Cursor | None = None
    while True:
        page = await store.list_events(EventQuery(), 100, after)
        found.extend(page.events)
        if page.next_cursor is None:
            return found
        after = page.next_cursor


async def _assert_counts_match_the_events(store: Store, sources: list[str]) -> None:
    events = await _all_events(store)
    for source in sources:
        expected = Counter(event.status for event in events if event.source == source)
        counted = await store.count_by_status(sources=[source])
        assert counted == {status: expected[status] for status in EventStatus}, source
    expected = Counter(event.status for event in events if event.source in sources)
    counted = await store.count_by_status(sources=sources)
    assert counted == {status: expected[status] for status in EventStatus}
    # The PENDING counts of many sources in one read, as a batch's quotas ask for them.
    pending = Counter(e.source for e in events if e.status is EventStatus.PENDING)
    asked = [*sources, "absent"]
    assert await store.pending_by_source(asked) == {source: pending[source] for source in asked}


class TenantsContract:
    async def test_a_sources_counts_follow_every_change_of_its_events(
        self, store: Store, store_time: StoreTime
    ) -> None:
        sources = ["billing", "shipping", "rare"]
        now = utc_now()
        due = [make_event(source=s, scheduled_at=now - timedelta(seconds=10)) for s in sources * 3]
        await insert_events(store, *due)
        # A resubmission of a stored job stores nothing, so counts nothing.
        twin = make_event(
            source=due[0].source,
            external_job_id=due[0].external_job_id,
            scheduled_at=due[0].scheduled_at,
        )
        assert await store.insert_many([twin]) == {twin.id: due[0].id}
        later = make_event(source="rare", scheduled_at=now + timedelta(hours=1))
        await insert_events(store, later)
        await _assert_counts_match_the_events(store, sources)

        claimed = await claim(store, "worker-a", limit=len(due), lease=30.0)
        assert len(claimed) == len(due)
        await _assert_counts_match_the_events(store, sources)

        ends = [EventStatus.COMPLETED, EventStatus.PENDING, EventStatus.DEAD_LETTER]
        outcomes = [
            make_outcome(event, status=ends[n % len(ends)]) for n, event in enumerate(claimed[:6])
        ]
        assert await store.record_outcomes(outcomes) == {event.id for event in claimed[:6]}
        await _assert_counts_match_the_events(store, sources)

        assert await store.hand_back([ClaimRef.of(claimed[6])]) == 1
        await store.cancel(later.id)
        dead = next(o.event_id for o in outcomes if o.status is EventStatus.DEAD_LETTER)
        await store.redeliver(dead, utc_now())
        await _assert_counts_match_the_events(store, sources)

        # A claim whose lease expires goes back to PENDING.
        expiring = make_event(source="shipping", scheduled_at=now - timedelta(seconds=20))
        await insert_events(store, expiring)
        assert [e.id for e in await claim(store, "worker-b", 1, SHORT_LEASE)] == [expiring.id]
        await store_time.advance(PAST_SHORT_LEASE)
        assert await store.recover_expired_leases() == 1
        await _assert_counts_match_the_events(store, sources)

    async def test_retention_takes_deleted_events_out_of_their_sources_counts(
        self, store: Store
    ) -> None:
        old = utc_now() - timedelta(days=30)
        await seed(
            store,
            *(
                make_event(source="gone", status=EventStatus.COMPLETED, updated_at=old)
                for _ in "ab"
            ),
            make_event(source="kept", status=EventStatus.FAILED, updated_at=old),
            make_event(source="kept"),
        )
        assert await store.delete_terminal_before(utc_now() - timedelta(days=7)) == 3
        assert sum((await store.count_by_status(sources=["gone"])).values()) == 0
        kept = await store.count_by_status(sources=["kept"])
        assert (kept[EventStatus.PENDING], sum(kept.values())) == (1, 1)
        assert await store.list_events(EventQuery(sources=["gone"]), 10) == (
            await store.list_events(EventQuery(sources=[]), 10)
        )

    async def test_a_rare_sources_listing_holds_its_events_among_many_others(
        self, store: Store
    ) -> None:
        base = utc_now()
        crowd = [
            make_event(source="big", scheduled_at=base + timedelta(milliseconds=n),
                       status=list(EventStatus)[n % len(EventStatus)])
            for n in range(600)
        ]  # fmt: skip
        # The rare source's events sit between the crowd's, in every status, two at one instant.
        rare = [
            make_event(source="rare", scheduled_at=base + timedelta(milliseconds=100 * n),
                       status=list(EventStatus)[n % len(EventStatus)])
            for n in range(6)
        ]  # fmt: skip
        rare.append(make_event(source="rare", scheduled_at=base + timedelta(milliseconds=300)))
        await seed(store, *crowd, *rare)
        order = sorted(rare, key=lambda e: (e.scheduled_at, e.id))
        for limit in (1, 2, 3, 100):
            listed: list[str] = []
            after: Cursor | None = None
            while True:
                page = await store.list_events(EventQuery(sources=["rare"]), limit, after)
                listed.extend(event.id for event in page.events)
                if page.next_cursor is None:
                    break
                after = page.next_cursor
            assert listed == [event.id for event in order], f"pages of {limit}"
        for status in EventStatus:
            query = EventQuery(status=status, sources=["rare", "absent"])
            page = await store.list_events(query, 10)
            assert page.events == [e for e in order if e.status is status], status
        window = EventQuery(
            sources=["rare"],
            scheduled_from=base + timedelta(milliseconds=100),
            scheduled_to=base + timedelta(milliseconds=400),
        )
        listed_window = (await store.list_events(window, 10)).events
        assert listed_window == [e for e in order if 100 <= _millis(e, base) < 400]

    async def test_redelivering_a_sources_dead_letters_touches_no_other_source(
        self, store: Store
    ) -> None:
        now = utc_now()
        await seed(
            store,
            *(make_event(source="big", status=EventStatus.DEAD_LETTER) for _ in range(5)),
            *(make_event(source="rare", status=EventStatus.DEAD_LETTER) for _ in range(2)),
        )
        count = await store.redeliver_dead_letters(
            sources=["rare"], scheduled_from=None, scheduled_to=None, now=now
        )
        assert count == 2
        rare = await store.count_by_status(sources=["rare"])
        big = await store.count_by_status(sources=["big"])
        assert (rare[EventStatus.PENDING], rare[EventStatus.DEAD_LETTER]) == (2, 0)
        assert (big[EventStatus.PENDING], big[EventStatus.DEAD_LETTER]) == (0, 5)


def _millis(event: Event, base: datetime) -> float:
    return (event.scheduled_at - base) / timedelta(milliseconds=1)
