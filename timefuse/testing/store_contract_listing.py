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
# (delivery type, destination): two hosts, one of them on two ports, and a non-URL receiver.
_RECEIVERS = (
    ("http", "https://a.example/orders"),
    ("http", "https://b.example:8443/orders"),
    ("webhook", "http://a.example/refunds"),
    ("queue", "orders"),
)


def _at(base: datetime, millis: int) -> datetime:
    return base + timedelta(milliseconds=millis)


def _listing_order(events: list[Event]) -> list[str]:
    return [event.id for event in sorted(events, key=lambda e: (e.scheduled_at, e.id))]


def _matches(event: Event, query: EventQuery) -> bool:
    # Written from EventQuery's documentation, criterion by criterion.
    host, _, port = event.destination_key.rpartition(":")
    return (
        (query.status is None or event.status is query.status)
        and (query.sources is None or event.source in query.sources)
        and (query.scheduled_from is None or event.scheduled_at >= query.scheduled_from)
        and (query.scheduled_to is None or event.scheduled_at < query.scheduled_to)
        and (query.delivery_type is None or event.delivery_type == query.delivery_type)
        and (query.destination_key is None or event.destination_key == query.destination_key)
        and (
            query.destination_host is None
            or (host, port.isdigit()) == (query.destination_host, True)
        )
        and (
            query.destination_prefix is None
            or event.destination.startswith(query.destination_prefix)
        )
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
        if query.examine_at_most is None:
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
            delivery_type=_RECEIVERS[(i // 7) % len(_RECEIVERS)][0],
            destination=_RECEIVERS[(i // 7) % len(_RECEIVERS)][1],
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

    async def test_pages_through_the_latest_first_and_by_receiver_without_gaps_or_repeats(
        self,
        store: Store,
    ) -> None:
        base = utc_now()
        events = await _insert_many_events(store, base)
        queries_and_limits = [
            (EventQuery(descending=True), 137),
            (EventQuery(status=EventStatus.FAILED, descending=True), 50),
            (EventQuery(scheduled_from=_at(base, 100), scheduled_to=_at(base, 900),
                        descending=True), 999),
            (EventQuery(delivery_type="webhook"), 200),
            (EventQuery(destination_host="a.example", sources=["beta"]), 101),
            (EventQuery(destination_key="b.example:8443", descending=True), 250),
            (EventQuery(destination_prefix="https://", status=EventStatus.PENDING), 77),
            # Bounded pages: fewer than the limit at times, never a gap or a repeat.
            (EventQuery(delivery_type="queue", examine_at_most=300), 100),
            (EventQuery(destination_host="a.example", status=EventStatus.COMPLETED,
                        scheduled_to=_at(base, 600), descending=True, examine_at_most=64), 64),
        ]  # fmt: skip
        for query, limit in queries_and_limits:
            wanted = [event for event in events if _matches(event, query)]
            expected = _listing_order(wanted)
            if query.descending:
                expected.reverse()
            assert expected, f"the test data should match {query}"
            listed = await _page_through(store, query, limit)
            assert len(listed) == len(set(listed)), f"repeats in the listing of {query}"
            assert listed == expected, f"the listing of {query} has gaps or is out of order"

    async def test_listing_filters_by_delivery_type_and_destination(self, store: Store) -> None:
        moment = utc_now()
        receivers = {
            "plain": ("http", "https://hooks.example/a"),
            "port": ("http", "https://hooks.example:8443/b"),
            "other": ("http", "https://hooks.example.org/c"),
            "upper": ("http", "https://HOOKS.example/d"),
            "named": ("hooks.example", "orders"),
            "kafka": ("kafka", "hooks.example"),
        }
        made = {
            name: make_event(
                delivery_type=kind,
                destination=destination,
                scheduled_at=moment + timedelta(seconds=n),
            )
            for n, (name, (kind, destination)) in enumerate(receivers.items())
        }
        await insert_events(store, *made.values())
        cases = {
            # Any port of the host, however the URL spelled it; not another host it prefixes,
            # nor a delivery type of the same name.
            EventQuery(destination_host="hooks.example"): ["plain", "port", "upper"],
            EventQuery(destination_key="hooks.example:443"): ["plain", "upper"],
            EventQuery(destination_key="kafka:hooks.example"): ["kafka"],
            # As written: case counts.
            EventQuery(destination_prefix="https://hooks.example"): ["plain", "port", "other"],
            EventQuery(destination_prefix="https://HOOKS"): ["upper"],
            EventQuery(destination_prefix="order"): ["named"],
            EventQuery(delivery_type="kafka"): ["kafka"],
            EventQuery(delivery_type="http", destination_host="hooks.example.org"): ["other"],
            EventQuery(delivery_type="queue"): [],
        }
        for query, names in cases.items():
            page = await store.list_events(query, 10)
            assert [event.id for event in page.events] == [made[n].id for n in names], query
            assert page.next_cursor is None

    async def test_a_bounded_page_stops_at_its_window_and_its_cursor_goes_on_from_there(
        self,
        store: Store,
    ) -> None:
        base = utc_now()
        events = [
            make_event(
                scheduled_at=base + timedelta(seconds=n),
                source="wanted" if n in (3, 12, 13, 15, 17) else "other",
            )
            for n in range(20)
        ]
        await insert_events(store, *events)
        ids = [event.id for event in events]

        async def page(after: int | None, descending: bool = False) -> tuple[list[int], int | None]:
            """The numbers of the events on the page after event ``after``, and its cursor's."""
            query = EventQuery(sources=["wanted"], examine_at_most=5, descending=descending)
            cursor = None if after is None else Cursor(events[after].scheduled_at, ids[after])
            found = await store.list_events(query, 2, cursor)
            numbers = [ids.index(event.id) for event in found.events]
            if found.next_cursor is None:
                return numbers, None
            at = ids.index(found.next_cursor.event_id)
            assert found.next_cursor.scheduled_at == events[at].scheduled_at
            return numbers, at

        # Five candidates a page; the cursor is the last one looked at, matching or not.
        assert await page(None) == ([3], 4)
        assert await page(4) == ([], 9)
        assert await page(9) == ([12, 13], 14)
        assert await page(14) == ([15, 17], 19)
        assert await page(19) == ([], None)
        assert await page(None, descending=True) == ([17, 15], 15)
        assert await page(15, descending=True) == ([13, 12], 10)
        assert await page(10, descending=True) == ([], 5)
        assert await page(5, descending=True) == ([3], 0)
        assert await page(0, descending=True) == ([], None)
        # More matches than the limit among the candidates: the cursor is the last event's.
        assert await page(11) == ([12, 13], 13)
        assert await page(18, descending=True) == ([17, 15], 15)

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

    async def test_listing_refuses_a_window_smaller_than_its_page(self, store: Store) -> None:
        with pytest.raises(ValueError, match="examine_at_most"):
            await store.list_events(EventQuery(delivery_type="http", examine_at_most=9), 10)
