from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.support.process import TimefuseProcess
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.service.store import Store

# Fast retries and leases so the suite watches whole lifecycles in seconds.
FAST = {
    "TIMEFUSE_RETRY_BASE_MS": "200",
    "TIMEFUSE_RETRY_CAP_MS": "400",
    "SCHEDULER_POLL_INTERVAL_MS": "500",
    "TIMEFUSE_LEASE_SECONDS": "3",
}


@pytest.fixture
def timefuse(processes: Callable[..., TimefuseProcess]) -> Callable[..., TimefuseProcess]:
    """Starts ``timefuse`` with the fast retry and lease settings above."""

    def start(env: dict[str, str] | None = None, command: str = "serve") -> TimefuseProcess:
        return processes({**FAST, **(env or {})}, command=command)

    return start


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http


@pytest.fixture
async def store(postgres_dsn: str) -> AsyncIterator[Store]:
    """The run's PostgreSQL database, opened (and so migrated) before any process starts."""
    pg = Store(PostgresEventStore(postgres_dsn, pool_size=4))
    await pg.open()
    yield pg
    await pg.close()
