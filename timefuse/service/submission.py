"""What a submission is answered: the id the event has, and whether it was already there.

Ids are derived from the dedup key (:func:`timefuse.domain.dedup.dedup_event_id`), so the
answer is the same whether the API writes to the store or to Kafka: a resubmission, a retry
after a 503 or a timeout, and two identical items of one batch all get the one id the event
has in the store, and none of them can make a second event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.ingest import BufferUnavailable
from timefuse.ports.store import StoreError
from timefuse.service.store import MAX_GET_MANY, Store

T = TypeVar("T")

# With Kafka in front of the store, a submission looks for its stored twin for at most this
# long, then goes on without: the buffer exists to take submissions while the store is down.
LOOKUP_SECONDS = 0.5
# After a lookup failed, submissions skip it for this long instead of each waiting it out.
LOOKUP_PAUSE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Accepted:
    """What became of one submitted event.

    :param id: the id the event has in the store, or will have once it is stored.
    :param status: its status in the store; ``PENDING`` for an event this submission made.
    :param duplicate: an event with this id or dedup key was stored already: this
        submission changed nothing, and ``status`` is that event's.
    :param stored: the event is in the store now; ``False`` while it waits in the Kafka
        buffer for the ingest consumer (reads answer 404 until then).
    """

    id: str
    status: EventStatus
    duplicate: bool
    stored: bool


def distinct(events: Iterable[Event]) -> list[Event]:
    """The first event of each id, in order: identical items of one batch are one event."""
    seen: dict[str, Event] = {}
    for event in events:
        seen.setdefault(event.id, event)
    return list(seen.values())


def duplicate_of(twin: Event) -> Accepted:
    """The answer to a submission of an event the store already holds: that event's state."""
    return Accepted(twin.id, twin.status, duplicate=True, stored=True)


def accepted_new(event_id: str, *, stored: bool) -> Accepted:
    return Accepted(event_id, EventStatus.PENDING, duplicate=False, stored=stored)


class TwinLookup:
    """Finds the stored event a submission repeats, by its (derived) id.

    :param tolerant: the store may be down while submissions are still accepted (a Kafka
        buffer in front of it): then a lookup that fails or takes longer than
        :data:`LOOKUP_SECONDS` finds nothing, and lookups pause for a while. Without it a
        store error goes to the caller (the submission itself would fail the same way).
    """

    def __init__(
        self,
        store: Store,
        *,
        tolerant: bool,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._tolerant = tolerant
        self._monotonic = monotonic
        self._paused_until = 0.0

    async def find_many(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """The stored events among ``event_ids``, by id (the items of a batch or a group);
        the whole lookup bounded by :data:`LOOKUP_SECONDS` when tolerant."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}
        if not self._tolerant:
            return await self._get_many(ids)
        if self._monotonic() < self._paused_until:
            return {}
        try:
            return await asyncio.wait_for(self._get_many(ids), LOOKUP_SECONDS)
        except (StoreError, TimeoutError):
            self._paused_until = self._monotonic() + LOOKUP_PAUSE_SECONDS
            return {}

    async def _get_many(self, ids: list[str]) -> dict[str, Event]:
        # One read per batch (a store error is the caller's: it answers 503 as for one event).
        found: dict[str, Event] = {}
        for start in range(0, len(ids), MAX_GET_MANY):
            for event in await self._store.get_many(ids[start : start + MAX_GET_MANY]):
                found[event.id] = event
        return found


async def within(seconds: float | None, work: Awaitable[T]) -> T:
    """``work``'s result, or :class:`BufferUnavailable` (a 503) once ``seconds`` have passed.

    A submission that times out may still be stored; ids derived from the dedup key make the
    client's retry harmless.
    """
    if seconds is None:
        return await work
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise BufferUnavailable(
            f"the event store did not confirm the submission within {seconds:g} s"
        ) from None
