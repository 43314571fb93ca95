"""Physical baselines, measured in the same run as the scenario they are compared with."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from timefuse.bench.report import Baseline
from timefuse.domain.event import Event
from timefuse.testing.factories import make_event

Send = Callable[[int], Coroutine[Any, Any, bool]]

PAYLOAD = b'{"run": "baseline", "seq": 0, "pad": "' + b"x" * 200 + b'"}'


async def drive(send: Send, requests: int, concurrency: int) -> tuple[float, int]:
    """One task per request under a semaphore, as the dispatcher runs deliveries.

    Returns the wall time and the number of sends that failed.
    """
    semaphore = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[bool]] = set()
    failures = 0

    def finished(task: asyncio.Task[bool]) -> None:
        nonlocal failures
        tasks.discard(task)
        semaphore.release()
        if task.cancelled() or task.exception() is not None or not task.result():
            failures += 1

    started = time.perf_counter()
    for i in range(requests):
        await semaphore.acquire()
        task = asyncio.create_task(send(i))
        tasks.add(task)
        task.add_done_callback(finished)
    while tasks:
        await asyncio.wait(set(tasks))
    return time.perf_counter() - started, failures


async def raw_http(url: str, requests: int, concurrency: int) -> Baseline:
    """Bare aiohttp POSTs of a webhook-sized body to ``url``, ``concurrency`` at a time."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(i: int) -> bool:
            headers = {"Content-Type": "application/json", "webhook-id": f"baseline-{i}"}
            async with session.post(url, data=PAYLOAD, headers=headers) as response:
                await response.read()
                return response.status < 300

        await drive(post, min(requests, 1000), concurrency)  # warm-up: open the connections
        seconds, failures = await drive(post, requests, concurrency)
    return Baseline(
        name="raw aiohttp POST",
        rate_per_s=requests / seconds,
        count=requests,
        seconds=seconds,
        errors=failures,
        detail=f"one session, {concurrency} concurrent, same receiver",
    )


def _events(count: int, destination: str) -> list[Event]:
    due = datetime.now(UTC) + timedelta(days=30)
    return [
        make_event(
            external_job_id=f"baseline-{i}",
            source="timefuse-bench-baseline",
            scheduled_at=due,
            destination=destination,
            payload=PAYLOAD,
        )
        for i in range(count)
    ]


async def raw_insert(store_url: str | None, count: int, batch: int = 1000) -> Baseline:
    """The store's ``insert_many`` called directly, in batches of ``batch``.

    ``store_url`` None means a SQLite file in a temporary directory.
    """
    from timefuse.adapters.system.clock import SystemClock
    from timefuse.config import StoreSettings
    from timefuse.entrypoints.bootstrap import build_store

    with tempfile.TemporaryDirectory(prefix="timefuse-bench-") as tmp:
        url = store_url or f"sqlite:///{Path(tmp) / 'baseline.db'}"
        store = build_store(StoreSettings.from_env({"DATABASE_URL": url}), SystemClock())
        await store.open()
        try:
            events = _events(count, "http://127.0.0.1:9/hook")
            started = time.perf_counter()
            for start in range(0, count, batch):
                await store.insert_many(events[start : start + batch])
            seconds = time.perf_counter() - started
        finally:
            await store.close()
    kind = url.partition(":")[0]
    return Baseline(
        name=f"raw {kind} insert_many",
        rate_per_s=count / seconds,
        count=count,
        seconds=seconds,
        detail=f"the store adapter called directly, {batch} events per transaction"
        + ("" if store_url else ", temporary database"),
    )
