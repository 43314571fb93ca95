"""The event store contract, run against every adapter: in memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from timefuse.adapters.memory import MemoryStore
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.ports.store import StoreAdapter
from timefuse.testing.store_contract import StoreContract
from timefuse.testing.store_contract_shared import SharedLimitsContract
from timefuse.testing.store_contract_support import ShiftedClock


class TestMemoryStore(StoreContract, SharedLimitsContract):
    @pytest.fixture
    def store_time(self) -> ShiftedClock:
        return ShiftedClock()

    @pytest.fixture
    async def adapter(self, store_time: ShiftedClock) -> AsyncIterator[StoreAdapter]:
        store = MemoryStore(clock=store_time, shared_limits=True)
        await store.open()
        yield store
        await store.close()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_time(self) -> ShiftedClock:
        return ShiftedClock()

    @pytest.fixture
    async def adapter(
        self, store_time: ShiftedClock, tmp_path: Path
    ) -> AsyncIterator[StoreAdapter]:
        # A directory that doesn't exist yet: the store creates it.
        store = SqliteEventStore(str(tmp_path / "store" / "timefuse.db"), clock=store_time)
        await store.open()
        yield store
        await store.close()


@pytest.mark.postgres
class TestPostgresStore(StoreContract, SharedLimitsContract):
    @pytest.fixture
    async def adapter(self, postgres_dsn: str) -> AsyncIterator[StoreAdapter]:
        # A fresh database on the session's server (tests/conftest.py): no shared rows.
        store = PostgresEventStore(postgres_dsn, pool_size=4)
        await store.open()
        yield store
        await store.close()
