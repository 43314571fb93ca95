"""The ``event_store`` fixture of the store contract suite, once per adapter.

To run the suite against another adapter, add an entry to ``STORE_FACTORIES``: a function
that builds an unopened store over empty storage, asking ``request`` for any fixture it needs
(a temporary directory, a database URL). Test bodies don't change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.ports.store import EventStore

StoreFactory = Callable[[pytest.FixtureRequest], EventStore]


def _sqlite(request: pytest.FixtureRequest) -> EventStore:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    # A directory that doesn't exist yet: the store creates it.
    return SqliteEventStore(str(tmp_path / "store" / "timefuse.db"))


def _postgres(request: pytest.FixtureRequest) -> EventStore:
    # A fresh database on the session's server (tests/conftest.py), so tests don't share rows.
    return PostgresEventStore(request.getfixturevalue("postgres_dsn"), pool_size=4)


STORE_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest_asyncio.fixture(params=sorted(STORE_FACTORIES))
async def event_store(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    store = STORE_FACTORIES[request.param](request)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
