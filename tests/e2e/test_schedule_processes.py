"""A schedule run by three ``timefuse dispatch`` processes on one PostgreSQL, one of them killed.

The schedule fires every second for 30 s. Whichever process leads maintenance plans it; the
leader is killed with SIGKILL half-way, and another takes the lead once its lease runs out.
Each occurrence's id is derived from (schedule, instant), so the ids the test expects are
known before anything runs: the store must hold exactly those 30 events, each once, and the
receiver must have had each at least once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import pytest_asyncio

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.config import Settings
from timefuse.domain.schedule import ScheduleState, occurrence_id
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap
from timefuse.service.metrics import Metrics
from timefuse.service.store import Store

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

INSTANTS = 30
LEAD_SECONDS = 10


@pytest_asyncio.fixture
async def tf(postgres_dsn: str) -> AsyncIterator[Timefuse]:
    settings = Settings.from_env(
        {"DATABASE_URL": postgres_dsn, "TIMEFUSE_HTTP_ALLOWED_NETWORKS": "127.0.0.0/8"}
    )
    store = Store(PostgresEventStore(postgres_dsn, pool_size=2))
    wired = bootstrap(settings, store=store, metrics=Metrics())
    await store.open()
    yield wired
    await store.close()


def leader(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT holder FROM timefuse_leaders WHERE role = 'maintenance' AND expires_at > now()"
        ).fetchone()
    return None if row is None else str(row[0])


async def test_three_dispatchers_create_each_occurrence_once_across_a_killed_leader(
    tf: Timefuse,
    receiver: Receiver,
    processes: Callable[..., TimefuseProcess],
    postgres_dsn: str,
) -> None:
    assert tf.schedules is not None
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=LEAD_SECONDS)
    instants = [start + timedelta(seconds=n) for n in range(INSTANTS)]
    declared = await tf.schedules.declare(
        {
            "key": "every-second",
            "source": "billing",
            "every_seconds": 1,
            "start_at": start.isoformat(),
            "end_at": instants[-1].isoformat(),
        },
        {"delivery_type": "http", "destination": receiver.url("/tick"), "payload": b"{}"},
    )
    schedule_id = declared.record.id
    expected = {occurrence_id(schedule_id, instant) for instant in instants}
    fleet = {
        f"dispatch-{n}": processes(
            {
                "DATABASE_URL": postgres_dsn,
                "TIMEFUSE_WORKER_ID": f"dispatch-{n}",
                "TIMEFUSE_LEASE_SECONDS": "3",
            },
            command="dispatch",
        )
        for n in range(3)
    }

    def delivered() -> set[str]:
        return {request.event_id for request in receiver.on("/tick")}

    # Half-way through the 30 s, kill whichever process leads (and plans) with SIGKILL.
    assert await receiver.wait_for(lambda: len(delivered() & expected) >= 12, timeout=60)
    victim = leader(postgres_dsn)
    assert victim in fleet
    fleet[victim].kill()
    killed_at = len(delivered() & expected)
    assert killed_at < INSTANTS, "the leader must die before the schedule is over"

    assert await receiver.wait_for(lambda: delivered() >= expected, timeout=90), (
        f"missing {len(expected - delivered())} occurrences"
    )
    successor = leader(postgres_dsn)
    assert successor in fleet
    assert successor != victim

    page = await tf.store.schedule_occurrences(schedule_id, 1000)
    assert sorted(event.scheduled_at for event in page.events) == instants
    assert {event.id for event in page.events} == expected
    # Nothing else of the schedule's source made it into the store either.
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT external_job_id) FROM events WHERE source = 'billing'"
        ).fetchone()
    assert row == (INSTANTS, INSTANTS)
    record = await tf.store.get_schedule(schedule_id)
    assert record is not None
    assert (record.schedule.runs, record.state) == (INSTANTS, ScheduleState.ENDED)
    duplicates = len(receiver.on("/tick")) - INSTANTS
    print(f"\noccurrences delivered before the kill: {killed_at}; redelivered: {duplicates}")
