"""An operator's cleanup through the admin API of a real ``timefuse serve`` on PostgreSQL: it
waits for a retention pass already running instead of answering 0."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from tests.support.process import TimefuseProcess
from timefuse.adapters.postgres.retention import RETENTION_LOCK_KEY
from timefuse.domain.status import EventStatus
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

Start = Callable[..., TimefuseProcess]


async def test_a_cleanup_asked_while_retention_runs_waits_for_it_and_counts_what_it_deleted(
    store: Store, timefuse: Start, postgres_dsn: str
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    await store.adapter.insert_many(
        [make_event(status=EventStatus.COMPLETED, updated_at=long_ago) for _ in range(3)]
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as other:
        # A pass running (before the process starts: its own first pass must not take them).
        other.execute("SELECT pg_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
        tf = timefuse({"DATABASE_URL": postgres_dsn})
        async with httpx.AsyncClient(timeout=30) as client:
            asked = asyncio.create_task(
                client.post(f"{tf.base_url}/api/v1/events/admin/cleanup?days=7")
            )
            done, _ = await asyncio.wait({asked}, timeout=1.0)
            assert not done, "the cleanup answered while another pass held retention"
            other.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))
            answer = await asyncio.wait_for(asked, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["deleted"] == 3
