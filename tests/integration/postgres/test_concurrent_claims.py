"""Claims across processes: four claimers, 20,000 due events, each claimed exactly once."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.postgres.conftest import Db, counted_by_scan
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

EVENTS = 20_000
CLAIMERS = 4
REPO = Path(__file__).resolve().parents[3]


async def test_four_claimer_processes_claim_each_event_exactly_once(
    pg_store: Store, postgres_dsn: str, db: Db, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    # Due over the last ~2 days: some in today's partition, the rest in DEFAULT.
    events = [make_event(scheduled_at=now - timedelta(seconds=10 * i)) for i in range(EVENTS)]
    for start in range(0, EVENTS, 1000):
        await pg_store.insert_many(events[start : start + 1000])

    start_at = time.time() + 3.0  # every process is connected by then
    outputs = [tmp_path / f"claimer-{n}.txt" for n in range(CLAIMERS)]
    claimers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.postgres.claimer",
            postgres_dsn, f"claimer-{n}", str(start_at), str(out),
            cwd=REPO,
        )
        for n, out in enumerate(outputs)
    ]  # fmt: skip
    for claimer in claimers:
        assert await asyncio.wait_for(claimer.wait(), timeout=240) == 0

    per_claimer = [out.read_text().split() for out in outputs]
    claims = Counter(event_id for ids in per_claimer for event_id in ids)
    assert [event_id for event_id, n in claims.items() if n > 1] == []
    assert set(claims) == {event.id for event in events}
    assert all(ids for ids in per_claimer), "every claimer should have won some batches"
    counts = await pg_store.count_by_status()
    assert counts[EventStatus.COMPLETED] == EVENTS
    assert counts == counted_by_scan(db)
    assert db.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM event_attempts"
    ).fetchone() == (EVENTS, EVENTS)
    assert db.execute("SELECT max(attempts) FROM events").fetchone() == (1,)
