"""An operator's action on a PENDING event that a concurrent PATCH moves to another partition.

Events are partitioned by ``scheduled_at``, so a PATCH changing it moves the row. A cancel
(or a move of the next attempt) whose snapshot still shows the row where it was waits for the
PATCH's row lock; once the PATCH commits, PostgreSQL fails the statement with SQLSTATE 40001
instead of following the row. Run again, with a fresh snapshot, the action finds the row where
it now is: the caller gets its answer, not a 503.

The interleaving is made deterministic by holding the move open in a transaction until the
action waits for its lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.integration.postgres.conftest import Db, partition_of
from timefuse.domain.event import Event
from timefuse.domain.status import EventStatus
from timefuse.ports.store import CancelResult, MoveDueResult
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.postgres

WAITING_FOR_A_ROW_LOCK = """
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
"""

Action = Callable[[Store, Event], Awaitable[object]]


async def _cancel(store: Store, event: Event) -> object:
    return await store.cancel(event.id)


async def _cancel_by_external_id(store: Store, event: Event) -> object:
    return await store.cancel_by_external_id(event.external_job_id)


async def _move_due(store: Store, event: Event) -> object:
    now = datetime.now(UTC)
    return await store.move_due(event.id, now + timedelta(hours=2), now)


ACTIONS: dict[str, tuple[Action, object, EventStatus]] = {
    "cancel": (_cancel, CancelResult.CANCELLED, EventStatus.CANCELLED),
    "cancel by external id": (_cancel_by_external_id, 1, EventStatus.CANCELLED),
    "move the next attempt": (_move_due, MoveDueResult.MOVED, EventStatus.PENDING),
}


@pytest.mark.parametrize(("action", "answer", "status"), ACTIONS.values(), ids=ACTIONS.keys())
async def test_an_action_meeting_a_row_moved_by_a_patch_acts_on_it_where_it_now_is(
    pg_store: Store,
    postgres_dsn: str,
    db: Db,
    action: Action,
    answer: object,
    status: EventStatus,
) -> None:
    now = datetime.now(UTC)
    # Three days ago (the DEFAULT partition), moved to tomorrow's.
    event = make_event(scheduled_at=now - timedelta(days=3))
    await pg_store.insert_many([event])
    before = partition_of(db, "events", event.id)
    tomorrow = now + timedelta(days=1)

    async with await psycopg.AsyncConnection.connect(postgres_dsn) as mover:
        # The PATCH's move, held open: the action's snapshot shows the row where it was.
        await mover.execute(
            "UPDATE events SET scheduled_at = %s WHERE id = %s", (tomorrow, event.id)
        )
        await mover.execute(
            "UPDATE event_ids SET scheduled_at = %s WHERE id = %s", (tomorrow, event.id)
        )
        acting = asyncio.create_task(action(pg_store, event))
        await _until_a_statement_waits_for_a_row_lock(db, acting)
        await mover.commit()
        result = await asyncio.wait_for(acting, timeout=30)

    assert partition_of(db, "events", event.id) != before
    assert result == answer
    stored = await pg_store.get(event.id)
    assert stored is not None
    assert (stored.status, stored.scheduled_at) == (status, tomorrow)


async def _until_a_statement_waits_for_a_row_lock(db: Db, acting: asyncio.Task[object]) -> None:
    async with asyncio.timeout(30):
        while True:
            if acting.done():
                raise AssertionError(f"the action ended before it waited: {acting.result()}")
            row = db.execute(WAITING_FOR_A_ROW_LOCK).fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(0.01)  # polling the server's activity, not waiting for time
