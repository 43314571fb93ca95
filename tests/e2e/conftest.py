from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.process import TimefuseProcess
from tests.support.receiver import Receiver

# Fast retries and leases so the suite watches whole lifecycles in seconds.
FAST = {
    "TIMEFUSE_RETRY_BASE_MS": "200",
    "TIMEFUSE_RETRY_CAP_MS": "400",
    "SCHEDULER_POLL_INTERVAL_MS": "500",
    "TIMEFUSE_LEASE_SECONDS": "3",
}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def timefuse(tmp_path: Path) -> Iterator[Callable[..., TimefuseProcess]]:
    started: list[TimefuseProcess] = []

    def start(env: dict[str, str] | None = None, command: str = "serve") -> TimefuseProcess:
        process = TimefuseProcess(tmp_path, {**FAST, **(env or {})}, command=command)
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http
