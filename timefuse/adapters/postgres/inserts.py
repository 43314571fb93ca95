"""insert_many's work: one statement for the batch, then the ids of what it skipped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import psycopg
from psycopg.rows import TupleRow

from timefuse.adapters.postgres import queries
from timefuse.adapters.postgres.connection import Connection, notify_due
from timefuse.adapters.postgres.errors import run_again_while
from timefuse.adapters.postgres.rows import copy_row, event_arrays
from timefuse.domain.event import Event
from timefuse.ports.store import StoreError, StoreUnavailable

_T = TypeVar("_T")

# From this many events, insert_many sends them by COPY rather than as array parameters.
# benchmarks/postgres_store.py puts the break-even between 250 and 1000 events: arrays win
# small batches (one round trip fewer), COPY wins 1000-event ones by some 10-15%.
COPY_MIN_BATCH = 500
# A write refused because its period's partition is being attached right now is tried again
# this often, this many times (the attach takes milliseconds).
ATTACH_RETRY_SECONDS = 0.05
ATTACH_RETRIES = 40


async def past_attaching_partitions(write: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``write`` (a whole transaction that inserts events) again while it meets a
    partition being attached right now."""
    return await run_again_while(write, attaching, tries=ATTACH_RETRIES, pause=ATTACH_RETRY_SECONDS)


def attaching(exc: StoreUnavailable) -> bool:
    """Whether ``exc`` is an insert refused by a partition being attached (its fence)."""
    return isinstance(exc.__cause__, psycopg.errors.CheckViolation)


async def insert_events(conn: Connection, events: Sequence[Event]) -> dict[str, str]:
    """Insert ``events`` in the caller's transaction; every submitted id -> the stored id."""
    # The first of several submissions of one id is the one inserted.
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.id, event)
    batch = list(unique.values())
    outcome = await _run_insert(conn, batch)
    inserted = {event_id: due for event_id, due in outcome if due is not None}
    orphans = [event_id for event_id, due in outcome if due is None]
    if orphans:
        await conn.execute(queries.FORGET_IDS, {"ids": orphans})
    stored = {event_id: event_id for event_id in inserted}
    skipped = [event for event in batch if event.id not in inserted]
    if skipped:
        stored.update(await _resolve_stored_ids(conn, skipped))
    if inserted:
        # Once per batch, delivered at commit; listeners keep the earliest time.
        await notify_due(conn, min(inserted.values()))
    return {event.id: stored[event.id] for event in events}


async def _run_insert(conn: Connection, events: Sequence[Event]) -> list[TupleRow]:
    """Run the insert statement; rows of (reserved id, next_attempt_at if inserted)."""
    if len(events) < COPY_MIN_BATCH:
        cursor = await conn.execute(queries.INSERT_EVENTS, event_arrays(events))
        return await cursor.fetchall()
    async with conn.cursor() as cursor:
        async with cursor.copy(queries.COPY_TO_STAGING) as copy:
            copy.set_types(queries.COPY_TYPES)
            for event in events:
                await copy.write_row(copy_row(event))
        await cursor.execute(queries.INSERT_EVENTS_FROM_STAGING)
        return await cursor.fetchall()


async def _resolve_stored_ids(conn: Connection, events: Sequence[Event]) -> dict[str, str]:
    params = {
        "id": [event.id for event in events],
        "source": [event.source for event in events],
        "external_job_id": [event.external_job_id for event in events],
        "scheduled_at": [event.scheduled_at for event in events],
    }
    cursor = await conn.execute(queries.RESOLVE_STORED_IDS, params)
    resolved = {submitted: stored for submitted, stored in await cursor.fetchall() if stored}
    for event in events:
        if event.id not in resolved:
            raise StoreError(f"event {event.id} was neither inserted nor a duplicate")
    return resolved
