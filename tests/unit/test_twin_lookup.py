"""Finding the stored events a batch's items repeat (timefuse.service.submission.TwinLookup)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from timefuse.domain.event import Event
from timefuse.ports.store import StoreUnavailable
from timefuse.service.store import Store
from timefuse.service.submission import LOOKUP_PAUSE_SECONDS, LOOKUP_SECONDS, TwinLookup
from timefuse.testing.factories import make_event


class _Store:
    """``get`` and ``get_many`` over a dict; down (every read fails) when told."""

    def __init__(self, events: list[Event]) -> None:
        self.events = {event.id: event for event in events}
        self.down = False
        self.reads = 0

    async def get(self, event_id: str, **_: Any) -> Event | None:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.events.get(event_id)

    async def get_many(self, event_ids: list[str]) -> list[Event]:
        self.reads += 1
        if self.down:
            raise StoreUnavailable("connection refused")
        return [self.events[event_id] for event_id in event_ids if event_id in self.events]


def _lookup(store: _Store, *, tolerant: bool, now: list[float]) -> TwinLookup:
    return TwinLookup(cast(Store, store), tolerant=tolerant, monotonic=lambda: now[0])


async def test_the_stored_ones_among_many_ids_are_found_in_one_read() -> None:
    stored = [make_event() for _ in range(20)]
    store = _Store(stored)
    ids = [event.id for event in stored[:15]] + ["019-none-a", "019-none-b", stored[0].id]

    found = await _lookup(store, tolerant=False, now=[0.0]).find_many(ids)

    assert set(found) == {event.id for event in stored[:15]}
    assert store.reads == 1


async def test_a_store_error_reaches_the_caller_as_itself_without_a_buffer() -> None:
    store = _Store([make_event()])
    store.down = True

    with pytest.raises(StoreUnavailable):
        await _lookup(store, tolerant=False, now=[0.0]).find_many(["a", "b", "c"])


async def test_with_a_buffer_a_down_store_finds_nothing_and_pauses_the_lookups() -> None:
    event = make_event()
    store = _Store([event])
    store.down = True
    now = [0.0]
    lookup = _lookup(store, tolerant=True, now=now)

    assert await lookup.find_many([event.id, "other"]) == {}
    store.down = False
    reads = store.reads
    assert await lookup.find_many([event.id]) == {}  # paused: not even asked
    assert store.reads == reads
    now[0] += 60
    assert set(await lookup.find_many([event.id])) == {event.id}


class _StalledStore(_Store):
    """Reads that never answer (a store hanging on a lock or a dead connection)."""

    async def get(self, event_id: str, **_: Any) -> Event | None:
        self.reads += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def get_many(self, event_ids: list[str]) -> list[Event]:
        self.reads += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.looptime
async def test_with_a_buffer_a_store_that_does_not_answer_is_given_up_on_after_the_bound() -> None:
    store = _StalledStore([])
    lookup = _lookup(store, tolerant=True, now=[0.0])
    loop = asyncio.get_running_loop()

    started = loop.time()
    # Bounded here too, so a lookup that waits forever fails the test instead of hanging it.
    assert await asyncio.wait_for(lookup.find_many(["a", "b"]), 10 * LOOKUP_SECONDS) == {}
    assert loop.time() - started == pytest.approx(LOOKUP_SECONDS)


async def test_many_lookups_resume_exactly_when_the_pause_ends() -> None:
    event = make_event()
    store = _Store([event])
    store.down = True
    now = [100.0]
    lookup = _lookup(store, tolerant=True, now=now)

    assert await lookup.find_many([event.id]) == {}
    store.down = False
    now[0] = 100.0 + LOOKUP_PAUSE_SECONDS

    assert await lookup.find_many([event.id]) == {event.id: event}
