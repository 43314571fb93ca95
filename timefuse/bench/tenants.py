"""tenant-pages: a rare tenant's page and statistics against an unfiltered page, as the store grows.

In-process, no deployment. Two stores are filled, with ``-n`` events (default 300,000) and
with a tenth of that, from ten busy sources and one rare source holding 0.1% of the events
(at least 30), spread over the coming six days in mostly finished statuses. Through the rule
layer every service uses, each store is asked :data:`SAMPLES` times for each read and the
median kept: the first unfiltered page, the rare source's first page, its next page, its
dead letters, its statistics (also the PENDING count a quota is checked against), and the
statistics of every source. Pages hold 100 events.

Two ratios per read: the rare source's time over the unfiltered page's, on the large store
(near 1: a tenant's page costs what any page costs), and each read's growth from the small
store to the large (near 1 for index ranges and kept counts; near the size ratio, 10, for a
scan). SQLite in a temporary file, or ``--backend postgresql``: databases made for the run on
a private server (or on ``--database-url``'s), analysed after the fill, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from timefuse.bench.options import BenchOptions
from timefuse.bench.report import Report, Value
from timefuse.bench.store import _adapter, _database
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventQuery
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

SAMPLES = 7
PAGE = 100
SMALL_SHARE = 10
SMALL_MIN = 300
RARE = "rare-tenant"
BUSY = [f"busy-{n}" for n in range(10)]
RARE_EVERY = 1000
RARE_MIN = 30
FILL_BATCH = 5000
SPAN = timedelta(days=6)
# Mostly history, a few waiting or dead, as a store that has run a while holds.
STATUSES = [EventStatus.COMPLETED] * 14 + [
    EventStatus.PENDING,
    EventStatus.PENDING,
    EventStatus.DEAD_LETTER,
    EventStatus.CANCELLED,
    EventStatus.FAILED,
]

Read = Callable[[Store], Awaitable[object]]


def run_tenant_pages(options: BenchOptions) -> Report:
    return asyncio.run(_run(options))


async def _run(options: BenchOptions) -> Report:
    sizes = {"small": max(options.events // SMALL_SHARE, SMALL_MIN), "large": options.events}
    timings: dict[str, dict[str, float]] = {}
    report: Report | None = None
    for label, count in sizes.items():
        async with _database(options) as (url, target):
            if report is None:
                parameters: dict[str, Value] = {
                    "events": options.events,
                    "small": sizes["small"],
                    "page": PAGE,
                    "samples": SAMPLES,
                }
                report = Report("tenant-pages", target, parameters, unit="ms")
            store = Store(_adapter(url))
            await store.open()
            try:
                began = time.perf_counter()
                rare = await _fill(store, count)
                if url.startswith("postgresql"):
                    await _analyse(url)
                report.notes.append(
                    f"{label}: {count:,} events ({rare} of {RARE}) filled in "
                    f"{time.perf_counter() - began:.0f} s"
                )
                timings[label] = await _measure(store)
            finally:
                await store.close()
    assert report is not None
    report.results = _results(timings)
    return report


async def _fill(store: Store, count: int) -> int:
    """``count`` events; the rare source's are every :data:`RARE_EVERY`-th. How many are rare."""
    start = datetime.now(UTC) + timedelta(hours=1)
    step = SPAN / count
    every = min(RARE_EVERY, max(count // RARE_MIN, 1))
    rare = 0
    for first in range(0, count, FILL_BATCH):
        batch = []
        for n in range(first, min(first + FILL_BATCH, count)):
            when = start + step * n
            source = RARE if n % every == every // 2 else BUSY[n % len(BUSY)]
            rare += source == RARE
            batch.append(
                make_event(
                    external_job_id=f"job-{n}",
                    source=source,
                    status=STATUSES[(n // len(BUSY)) % len(STATUSES)],
                    scheduled_at=when,
                    created_at=when,
                    updated_at=when,
                    payload=b'{"order": %d, "lines": [1, 2, 3]}' % n,
                )
            )
        # Straight into the adapter: test data in finished statuses, past the rules that let
        # only new PENDING events in.
        await store.adapter.insert_many(batch)
    return rare


async def _analyse(url: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE")


def _reads() -> dict[str, Read]:
    rare = EventQuery(sources=[RARE])

    async def next_page(store: Store) -> object:
        first = await store.list_events(rare, PAGE // 10)
        return await store.list_events(rare, PAGE, first.next_cursor)

    return {
        "unfiltered page": lambda store: store.list_events(EventQuery(), PAGE),
        "rare page": lambda store: store.list_events(rare, PAGE),
        "rare next page": next_page,
        "rare dead letters": lambda store: store.list_events(
            EventQuery(sources=[RARE], status=EventStatus.DEAD_LETTER), PAGE
        ),
        "rare statistics": lambda store: store.count_by_status(sources=[RARE]),
        "all statistics": lambda store: store.count_by_status(),
    }


async def _measure(store: Store) -> dict[str, float]:
    timings: dict[str, float] = {}
    for name, read in _reads().items():
        await read(store)  # warm: the first call prepares statements and fills caches
        samples = []
        for _ in range(SAMPLES):
            began = time.perf_counter()
            await read(store)
            samples.append(time.perf_counter() - began)
        timings[name] = statistics.median(samples)
    return timings


def _results(timings: dict[str, dict[str, float]]) -> dict[str, Value]:
    results: dict[str, Value] = {}
    large, small = timings["large"], timings["small"]
    unfiltered = large["unfiltered page"]
    for name in large:
        key = name.replace(" ", "_")
        results[f"{key}_s"] = large[name]
        results[f"{key}_small_store_s"] = small[name]
        results[f"{key}_growth"] = large[name] / small[name] if small[name] > 0 else None
        if name.startswith("rare") and name != "rare statistics":
            results[f"{key}_vs_unfiltered"] = large[name] / unfiltered if unfiltered else None
    return results
