"""The store contract, part five: listings (keyset pages)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from timefuse.domain.cursor import Cursor
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventPage, EventQuery
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import insert_events, seed, utc_now

_MANY = 10_000
_INSERT_BATCH = 1_000
_SOURCES = ("alpha", "beta", "gamma")
_STATUSES = tuple(EventStatus)


def _at(base: datetime, millis: int) -> datetime:
    return base + timedelta(milliseconds=millis)


def _listing_order(events: list[Event]) -> list[str]:
    return [event.id for event in sorted(events, key=lambda e: (e.scheduled_at, e.id))]


def _matches(event: Event, query: EventQuery) -> bool:
    return (
        (query.status is None or event.status is query.status)
        and (query.sources is None or event.source in query.sources)
        and (query.scheduled_from is None or event.scheduled_at >= query.scheduled_from)
        and (query.scheduled_to is None or event.scheduled_at < query.scheduled_to)
    )


async def _page_through(store: Store, query: EventQuery, limit: int) -> list[str]:
    """Every id the listing returns, page by page, the cursor travelling as a client's text."""
    ids: list[str] = []
    after: Cursor | None = None
    while True:
        page = await store.list_events(query, limit, after)
        assert len(page.events) <= limit
        ids.extend(event.id for event in page.events)
        if page.next_cursor is None:
            return ids
        assert len(page.events) == limit, "a page followed by another must be full"
        last = page.events[-1]
        assert page.next_cursor == Cursor(last.scheduled_at, last.id)
        after = Cursor.decode(page.next_cursor.encode())


async def _insert_many_events(store: Store, base: datetime) -> list[Event]:
    # 1,000 distinct instants for 10,000 events: every instant is shared by ten events, whose
    # ids are unrelated to their place in time, so the id tie-break is exercised throughout.
    # Every status occurs with every source.
    events = [
        make_event(
            scheduled_at=_at(base, (i * 7919) % 1000),
            status=_STATUSES[i % len(_STATUSES)],
            source=_SOURCES[(i // len(_STATUSES)) % len(_SOURCES)],
        )
        for i in range(_MANY)
    ]
    for start in range(0, _MANY, _INSERT_BATCH):
        await seed(store, *events[start : start + _INSERT_BATCH])
    return events


class ListingContract:
    async def test_pages_through_ten_thousand_events_without_gaps_or_repeats(
        self,
        store: Store,
    ) -> None:
        base = utc_now()
        events = await _insert_many_events(store, base)
        queries_and_limits = [
            (EventQuery(), 137),
            (EventQuery(status=EventStatus.DEAD_LETTER), 50),
            (EventQuery(sources=["alpha", "gamma"], scheduled_from=_at(base, 100)), 1000),
            (EventQuery(sources={"beta"}, scheduled_to=_at(base, 900)), 333),
            (
                EventQuery(
                    status=EventStatus.PENDING,
                    sources=("alpha", "beta"),
                    scheduled_from=_at(base, 250),
                    scheduled_to=_at(base, 750),
                ),
                41,
            ),
        ]
        for query, limit in queries_and_limits:
            expected = _listing_order([event for event in events if _matches(event, query)])
            assert expected, f"the test data should match {query}"
            listed = await _page_through(store, query, limit)
            assert len(listed) == len(set(listed)), f"repeats in the listing of {query}"
            assert listed == expected, f"the listing of {query} has gaps or is out of order"

    async def test_events_scheduled_at_the_same_instant_are_ordered_by_id(
        self,
        store: Store,
    ) -> None:
        moment = utc_now()
        events = await insert_events(store, *(make_event(scheduled_at=moment) for _ in range(5)))
        first = await store.list_events(EventQuery(), 2)
        second = await store.list_events(EventQuery(), 2, first.next_cursor)
        third = await store.list_events(EventQuery(), 2, second.next_cursor)
        pages = [[event.id for event in page.events] for page in (first, second, third)]
        expected = sorted(event.id for event in events)
        assert pages == [expected[0:2], expected[2:4], expected[4:5]]
        assert third.next_cursor is None

    async def test_a_page_that_reaches_the_end_has_no_cursor(self, store: Store) -> None:
        assert await store.list_events(EventQuery(), 10) == EventPage([], None)
        await insert_events(store, make_event(), make_event(), make_event())
        page = await store.list_events(EventQuery(), 3)
        assert (len(page.events), page.next_cursor) == (3, None)
        page = await store.list_events(EventQuery(), 2)
        assert page.next_cursor is not None
        rest = await store.list_events(EventQuery(), 2, page.next_cursor)
        assert (len(rest.events), rest.next_cursor) == (1, None)

    async def test_the_scheduled_window_includes_its_start_and_excludes_its_end(
        self,
        store: Store,
    ) -> None:
        start = utc_now()
        end = start + timedelta(minutes=1)
        tick = timedelta(microseconds=1)
        before, first, last, after = (
            make_event(scheduled_at=moment) for moment in (start - tick, start, end - tick, end)
        )
        await insert_events(store, before, first, last, after)
        query = EventQuery(scheduled_from=start, scheduled_to=end)
        page = await store.list_events(query, 10)
        assert [event.id for event in page.events] == [first.id, last.id]

    async def test_listing_filters_by_status_and_source(self, store: Store) -> None:
        wanted = make_event(status=EventStatus.FAILED, source="billing")
        await seed(
            store,
            wanted,
            make_event(status=EventStatus.FAILED, source="shipping"),
            make_event(status=EventStatus.COMPLETED, source="billing"),
        )
        query = EventQuery(status=EventStatus.FAILED, sources=["billing", "unknown"])
        assert (await store.list_events(query, 10)).events == [wanted]

    async def test_an_empty_source_list_lists_nothing(self, store: Store) -> None:
        await insert_events(store, make_event())
        assert await store.list_events(EventQuery(sources=[]), 10) == EventPage([], None)

    async def test_a_cursor_resumes_after_its_position_when_its_event_no_longer_matches(
        self,
        store: Store,
    ) -> None:
        later = utc_now() + timedelta(hours=1)
        events = [make_event(scheduled_at=later + timedelta(seconds=s)) for s in range(4)]
        await insert_events(store, *events)
        pending = EventQuery(status=EventStatus.PENDING)
        first = await store.list_events(pending, 2)
        # The page's last event leaves the listing (cancelled) before the next page is asked for.
        await store.cancel(events[1].id)
        rest = await store.list_events(pending, 2, first.next_cursor)
        assert [event.id for event in rest.events] == [events[2].id, events[3].id]

    async def test_listing_refuses_a_limit_below_one(self, store: Store) -> None:
        with pytest.raises(ValueError, match="limit"):
            await store.list_events(EventQuery(), 0)
