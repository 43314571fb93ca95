"""The event store contract suite, run against PostgresEventStore on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.testing.store_contract import *  # noqa: F403
from timefuse.testing.store_contract_ops import *  # noqa: F403


@pytest_asyncio.fixture
async def event_store(postgres_dsn: str) -> AsyncIterator[PostgresEventStore]:
    store = PostgresEventStore(postgres_dsn, pool_size=4)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
