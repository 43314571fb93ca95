"""How long the console's pages take on a large store, against the same pages on a small one.

Fills two SQLite stores (``--events``, default 1,000,000, and 1% of that) with events spread
over sources, statuses and two months, then asks each page of the console in-process (no
network, no browser: the figure is the server's time) and prints the median of ``--runs``
requests per page, and the ratio large / small. A page whose work grows with the store (a full
scan) shows a ratio near the size ratio; one that reads an index range stays near 1.

    .venv/bin/python benchmarks/console_pages.py [--events 1000000] [--runs 5] [--keep DIR]

``--keep DIR`` keeps the filled databases there and reuses them on the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.config import Settings
from timefuse.domain.status import EventStatus
from timefuse.entrypoints.api import create_app
from timefuse.entrypoints.bootstrap import bootstrap
from timefuse.testing.factories import make_event

SOURCES = [f"source-{n}" for n in range(10)]
# Most events are history; a few are waiting or dead.
STATUSES = [EventStatus.COMPLETED] * 14 + [
    EventStatus.PENDING,
    EventStatus.PENDING,
    EventStatus.DEAD_LETTER,
    EventStatus.CANCELLED,
    EventStatus.FAILED,
]
BATCH = 10_000


async def fill(path: Path, count: int) -> None:
    store = SqliteEventStore(str(path))
    await store.open()
    start = datetime.now(UTC) - timedelta(days=30)
    spread = timedelta(days=60) / count
    made = 0
    while made < count:
        batch = []
        for n in range(made, min(made + BATCH, count)):
            when = start + spread * n
            batch.append(
                make_event(
                    external_job_id=f"job-{n}",
                    source=SOURCES[n % len(SOURCES)],
                    status=STATUSES[n % len(STATUSES)],
                    scheduled_at=when,
                    created_at=when,
                    updated_at=when,
                    payload=b'{"order": %d, "lines": [1, 2, 3]}' % n,
                )
            )
        await store.insert_many(batch)
        made += len(batch)
    await store.close()


def pages(count: int) -> dict[str, str]:
    middle = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S")
    later = (datetime.now(UTC) - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "overview": "/ui/",
        "events, first page": "/ui/events",
        "events, status + source": "/ui/events?status=DEAD_LETTER&source=source-3",
        "events, one day": f"/ui/events?from={middle}&to={later}",
        "search by external id": f"/ui/events?q=job-{count // 2 + 1}",
        "dead letters": "/ui/dead-letters",
        "bulk confirm (counts <= 10,000)": "/ui/dead-letters/redeliver?source=source-3",
        "destinations": "/ui/destinations",
    }


async def measure(path: Path, count: int, runs: int) -> dict[str, float]:
    store = SqliteEventStore(str(path))
    await store.open()
    settings = Settings.from_env({"DATABASE_URL": f"sqlite:///{path}"})
    tf = bootstrap(settings, store=store)
    app = create_app(
        service=tf.service, metrics=tf.metrics, settings=settings, keys=None, admin=tf.admin
    )
    timings: dict[str, float] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        await client.get("/ui/")  # the session cookie
        for name, url in pages(count).items():
            samples = []
            for _ in range(runs):
                began = time.perf_counter()
                response = await client.get(url)
                samples.append(time.perf_counter() - began)
                assert response.status_code in (200, 303), (url, response.status_code)
                # The statistics cache (1 s) would hide the count from the second run on.
                tf.service._statistics.clear()
            timings[name] = statistics.median(samples) * 1000
    await store.close()
    return timings


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the databases here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="timefuse-console-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"small": max(args.events // 100, 1000), "large": args.events}
    figures = {}
    for label, count in sizes.items():
        path = folder / f"events-{count}.db"
        if not path.exists():
            began = time.perf_counter()
            await fill(path, count)
            print(f"filled {count:,} events in {time.perf_counter() - began:.0f} s")
        figures[label] = await measure(path, count, args.runs)
    print(
        f"\n{'page':<34}{sizes['small']:>10,} ev{sizes['large']:>12,} ev   ratio "
        f"(median of {args.runs}, ms)"
    )
    for name in figures["large"]:
        small, large = figures["small"][name], figures["large"][name]
        print(f"{name:<34}{small:>10.1f} ms{large:>12.1f} ms{large / small:>8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
