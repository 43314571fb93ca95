"""The store contract, part one: storing events and reading them back."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from timefuse.domain.event import Event, new_event_id
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
from timefuse.testing.factories import make_event
from timefuse.testing.store_contract_support import (
    insert_and_claim,
    insert_events,
    seed,
    stored_event,
    utc_now,
)

_NO_EVENTS = {
    EventStatus.PENDING: 0,
    EventStatus.PROCESSING: 0,
    EventStatus.COMPLETED: 0,
    EventStatus.FAILED: 0,
    EventStatus.DEAD_LETTER: 0,
    EventStatus.CANCELLED: 0,
}


class EventsContract:
    # -- insert and read ---------------------------------------------------------------------

    async def test_round_trips_every_field_of_an_inserted_event(self, store: Store) -> None:
        now = utc_now()
        event = make_event(
            scheduled_at=(now + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2))),
            next_attempt_at=now + timedelta(hours=1, seconds=7.25),
            payload='{ "text": "café ☃",  "n": 1.50, "list": [ ] }\n'.encode(),
            max_retries=7,
            delivery_window_seconds=30.0,
            retry_backoff_seconds=2.5,
            retry_backoff_max_seconds=600.0,
            extra={"trace_id": "abc123", "tenant": 42},
            created_at=now - timedelta(seconds=3),
            updated_at=now - timedelta(seconds=1),
            destination_key="receiver.example:443",
            http={
                "method": "PUT",
                "headers": {"X-Tenant": "acme", "X-Quote": 'a "b" \\ é'},
                "timeout_seconds": 2.5,
                "success_statuses": [200, 404],
            },
            version=3,
            callback_url="https://client.example/done",
            failure_callback_url="https://client.example/failed",
            parent_id=new_event_id(now),
        )
        await insert_events(store, event)
        stored = await stored_event(store, event)
        assert stored == event
        assert stored.payload == event.payload  # byte for byte: whitespace and all
        assert stored.scheduled_at.utcoffset() is not None

    async def test_round_trips_http_options_in_a_large_batch(self, store: Store) -> None:
        # Large enough for the PostgreSQL adapter's COPY path, which encodes JSON on its own.
        events = [
            make_event(
                payload=b"null",
                http={"method": "POST", "body": f"<n>{n}</n>", "content_type": "text/xml"},
            )
            for n in range(600)
        ]
        await insert_events(store, *events)
        for event in (events[0], events[-1]):
            stored = await stored_event(store, event)
            assert stored.http == event.http
            assert stored.payload == b"null"

    async def test_round_trips_every_field_of_an_event_in_any_state(self, store: Store) -> None:
        now = utc_now()
        event = make_event(
            status=EventStatus.DEAD_LETTER,
            attempts=4,
            retry_count=4,
            last_error="HTTP 503",
            executed_at=now - timedelta(minutes=5),
            claim_count=6,
            retry_backoff_seconds=1e-300,  # a REAL text can't carry exactly
        )
        await seed(store, event)
        assert await stored_event(store, event) == event

    async def test_the_rules_store_only_new_pending_events(self, store: Store) -> None:
        with pytest.raises(ValueError, match="PENDING"):
            await store.insert_many([make_event(status=EventStatus.COMPLETED)])
        with pytest.raises(ValueError, match="claim"):
            await store.insert_many([make_event(locked_by="worker-a")])
        assert await store.count_by_status() == _NO_EVENTS

    async def test_the_rules_give_an_event_without_a_destination_key_its_key(
        self, store: Store
    ) -> None:
        event = make_event(destination="https://Hooks.Example/x", destination_key="")
        await insert_events(store, event)
        assert (await stored_event(store, event)).destination_key == "hooks.example:443"

    async def test_returns_none_for_an_unknown_id(self, store: Store) -> None:
        assert await store.get(new_event_id(utc_now())) is None

    async def test_many_ids_are_read_at_once_and_unknown_ones_left_out(self, store: Store) -> None:
        # Several days apart: on a partitioned store each is read where it lives.
        now = utc_now()
        events = [make_event(scheduled_at=now + timedelta(days=n)) for n in range(3)]
        await insert_events(store, *events)
        ids = [events[2].id, new_event_id(now), events[0].id, events[0].id]
        found = await store.get_many(ids)
        assert sorted(event.id for event in found) == sorted([events[0].id, events[2].id])
        assert {event.id: event for event in found}[events[2].id] == events[2]
        assert await store.get_many([]) == []
        with pytest.raises(ValueError, match="at most"):
            await store.get_many([new_event_id(now) for _ in range(1001)])

    async def test_inserting_nothing_stores_nothing(self, store: Store) -> None:
        assert await store.insert_many([]) == {}
        assert await store.count_by_status() == _NO_EVENTS

    async def test_skips_a_duplicate_id_and_keeps_the_first_event(self, store: Store) -> None:
        (first,) = await insert_events(store, make_event())
        again = make_event(id=first.id, destination="https://elsewhere.example/")
        assert await store.insert_many([again]) == {first.id: first.id}
        assert (await stored_event(store, first)).destination == first.destination

    async def test_deduplicates_by_dedup_key_to_the_stored_id(self, store: Store) -> None:
        (first,) = await insert_events(store, make_event())
        again = make_event(
            source=first.source,
            external_job_id=first.external_job_id,
            scheduled_at=first.scheduled_at.astimezone(timezone(timedelta(hours=-5))),
        )
        assert await store.insert_many([again]) == {again.id: first.id}
        assert await store.get(again.id) is None

    async def test_deduplicates_within_one_batch(self, store: Store) -> None:
        first, other = make_event(), make_event()
        twin = make_event(
            source=first.source,
            external_job_id=first.external_job_id,
            scheduled_at=first.scheduled_at,
        )
        mapping = await store.insert_many([first, twin, other])
        assert mapping == {first.id: first.id, twin.id: first.id, other.id: other.id}
        assert (await store.count_by_status())[EventStatus.PENDING] == 2

    async def test_the_same_job_at_another_time_is_another_event(self, store: Store) -> None:
        first = make_event()
        later = make_event(
            source=first.source,
            external_job_id=first.external_job_id,
            scheduled_at=first.scheduled_at + timedelta(minutes=1),
        )
        await insert_events(store, first, later)

    async def test_get_within_sources_sees_only_those_sources(self, store: Store) -> None:
        (event,) = await insert_events(store, make_event(source="billing"))
        assert await store.get(event.id, sources=["billing", "other"]) == event
        assert await store.get(event.id, sources=["shipping"]) is None
        assert await store.get(event.id, sources=[]) is None

    # -- counts ------------------------------------------------------------------------------

    async def test_counts_events_in_every_status(self, store: Store) -> None:
        assert await store.count_by_status() == _NO_EVENTS
        await insert_and_claim(store)
        future = utc_now() + timedelta(hours=1)
        await insert_events(store, make_event(scheduled_at=future), make_event(scheduled_at=future))
        await seed(
            store,
            make_event(status=EventStatus.COMPLETED),
            make_event(status=EventStatus.CANCELLED),
        )
        assert await store.count_by_status() == _NO_EVENTS | {
            EventStatus.PENDING: 2,
            EventStatus.PROCESSING: 1,
            EventStatus.COMPLETED: 1,
            EventStatus.CANCELLED: 1,
        }

    async def test_counts_only_the_events_of_the_given_sources(self, store: Store) -> None:
        await seed(
            store,
            make_event(source="billing"),
            make_event(source="billing", status=EventStatus.FAILED),
            make_event(source="shipping", status=EventStatus.FAILED),
            make_event(source="other"),
        )
        expected = _NO_EVENTS | {EventStatus.PENDING: 1, EventStatus.FAILED: 2}
        assert await store.count_by_status(sources=["billing", "shipping"]) == expected
        assert sum((await store.count_by_status(sources={"unknown"})).values()) == 0
        assert await store.count_by_status(sources=[]) == _NO_EVENTS
        assert sum((await store.count_by_status()).values()) == 4
        with pytest.raises(TypeError):  # one string is not a collection of sources
            await store.count_by_status(sources="billing")

    # -- by external id ----------------------------------------------------------------------

    async def test_finds_events_by_external_id_most_recent_first(self, store: Store) -> None:
        now = utc_now()
        ages = (3, 1, 2)
        events = [
            make_event(
                external_job_id="job-1",
                scheduled_at=now + timedelta(hours=age),
                created_at=now - timedelta(minutes=age),
            )
            for age in ages
        ]
        await insert_events(store, *events, make_event(external_job_id="job-2"))
        by_age = [events[ages.index(age)].id for age in sorted(ages)]
        assert [e.id for e in await store.find_by_external_id("job-1")] == by_age
        assert [e.id for e in await store.find_by_external_id("job-1", limit=2)] == by_age[:2]
        assert await store.find_by_external_id("job-unknown") == []

    async def test_finds_by_external_id_only_the_events_of_the_given_sources(
        self, store: Store
    ) -> None:
        now = utc_now()

        def job(source: str, age: int) -> Event:
            return make_event(
                external_job_id="job-1",
                source=source,
                scheduled_at=now + timedelta(hours=age),
                created_at=now - timedelta(minutes=age),
            )

        # The other source's events are all newer: a limit applied before the source filter
        # would return only them.
        billing = [job("billing", 10), job("billing", 11)]
        shipping = job("shipping", 12)
        others = [job("other", age) for age in (1, 2, 3)]
        await insert_events(store, *billing, shipping, *others)
        found = await store.find_by_external_id("job-1", limit=2, sources=["billing"])
        assert [event.id for event in found] == [event.id for event in billing]
        both = await store.find_by_external_id("job-1", sources={"billing", "shipping"})
        assert [event.id for event in both] == [event.id for event in (*billing, shipping)]
        assert await store.find_by_external_id("job-1", sources=[]) == []
        assert await store.find_by_external_id("job-1", sources=["unknown"]) == []
        assert len(await store.find_by_external_id("job-1")) == 6
        with pytest.raises(TypeError):  # one string is not a collection of sources
            await store.find_by_external_id("job-1", sources="billing")

    async def test_counts_the_events_due_now_per_delivery_type(self, store: Store) -> None:
        now = utc_now()
        await insert_and_claim(store, scheduled_at=now - timedelta(minutes=5))  # not pending
        await insert_events(
            store,
            make_event(delivery_type="http", scheduled_at=now - timedelta(seconds=5)),
            make_event(delivery_type="http", scheduled_at=now - timedelta(seconds=1)),
            make_event(delivery_type="pigeon", destination="coop", scheduled_at=now),
            make_event(
                delivery_type="pigeon", destination="coop", scheduled_at=now + timedelta(hours=1)
            ),
        )
        await seed(store, make_event(delivery_type="pigeon", status=EventStatus.FAILED))
        assert await store.count_due_by_type() == {"http": 2, "pigeon": 1}

    async def test_an_unknown_event_has_no_attempts(self, store: Store) -> None:
        assert await store.attempts(new_event_id(utc_now())) == []

    async def test_answers_a_ping(self, store: Store) -> None:
        await store.ping()
