"""console: how long the operator console's pages take on a large store and on a small one.

In-process, no network, no browser: the figure is the server's time. Two SQLite stores are
filled, with ``-n`` events and with 1% of that (at least 1,000), spread over ten sources,
mostly finished statuses and two months; each page is asked :data:`SAMPLES` times of each and
the median kept. The ratio large / small says how a page's work grows with the store: near the
size ratio for a full scan, near 1 for an index range. ``--keep DIR`` keeps the filled
databases there and reuses them (a million events take minutes to fill).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from timefuse.bench.options import BenchOptions
from timefuse.bench.processes import BenchError
from timefuse.bench.report import Report, Value
from timefuse.domain.status import EventStatus
from timefuse.service.schedules import ScheduleService
from timefuse.testing.factories import make_event

SAMPLES = 5
# Schedules beside the events, for the schedules pages.
SCHEDULES = 200
SOURCES = [f"source-{n}" for n in range(10)]
# Most events are history; a few are waiting or dead.
STATUSES = [EventStatus.COMPLETED] * 14 + [
    EventStatus.PENDING,
    EventStatus.PENDING,
    EventStatus.DEAD_LETTER,
    EventStatus.CANCELLED,
    EventStatus.FAILED,
]
FILL_BATCH = 10_000
SMALL_SHARE = 100
SMALL_MIN = 1000


def run_console(options: BenchOptions) -> Report:
    return asyncio.run(_run(options))


async def _run(options: BenchOptions) -> Report:
    sizes = {"small": max(options.events // SMALL_SHARE, SMALL_MIN), "large": options.events}
    report = Report(
        "console",
        {"in_process": True, "store": "sqlite"},
        {"events": options.events, "small": sizes["small"], "samples": SAMPLES},
        unit="ms",
    )
    with tempfile.TemporaryDirectory(prefix="timefuse-bench-console-") as tmp:
        folder = Path(options.keep) if options.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        timings: dict[str, dict[str, float]] = {}
        for label, count in sizes.items():
            path = folder / f"events-{count}.db"
            if not path.exists():
                began = time.perf_counter()
                await _fill(path, count)
                report.notes.append(
                    f"filled {count:,} events in {time.perf_counter() - began:.0f} s"
                )
            timings[label] = await _measure(path, count)
    results: dict[str, Value] = {}
    for page in timings["large"]:
        small, large = timings["small"][page], timings["large"][page]
        key = page.replace(" ", "_")
        results[f"{key}_small_s"] = small
        results[f"{key}_large_s"] = large
        results[f"{key}_growth"] = large / small if small > 0 else None
    report.results = results
    return report


async def _fill(path: Path, count: int) -> None:
    from timefuse.adapters.sqlite import SqliteEventStore

    store = SqliteEventStore(str(path))
    await store.open()
    try:
        start = datetime.now(UTC) - timedelta(days=30)
        spread = timedelta(days=60) / count
        for first in range(0, count, FILL_BATCH):
            batch = []
            for n in range(first, min(first + FILL_BATCH, count)):
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
    finally:
        await store.close()


def _pages(count: int) -> dict[str, str]:
    middle = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%S")
    later = (datetime.now(UTC) - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "overview": "/ui/",
        "events first page": "/ui/events",
        "events status and source": "/ui/events?status=DEAD_LETTER&source=source-3",
        "events one day": f"/ui/events?from={middle}&to={later}",
        "events latest first": "/ui/events?order=newest",
        "events by receiver host": "/ui/events?destination=receiver.example&type=http",
        "events by rare receiver": "/ui/events?destination=rare.example",
        "search by external id": f"/ui/events?q=job-{count // 2 + 1}",
        "dead letters": "/ui/dead-letters",
        "bulk confirm": "/ui/dead-letters/redeliver?source=source-3",
        "destinations": "/ui/destinations",
        "schedules": "/ui/schedules",
        "schedule": "/ui/schedules/{schedule}",
    }


async def _measure(path: Path, count: int) -> dict[str, float]:
    from timefuse.adapters.sqlite import SqliteEventStore
    from timefuse.config import ApiSettings, ProcessSettings, Settings, StoreSettings
    from timefuse.entrypoints.api.app import create_app
    from timefuse.entrypoints.bootstrap import bootstrap

    store = SqliteEventStore(str(path))
    await store.open()
    settings = Settings(
        store=StoreSettings(database_url=f"sqlite:///{path}"),
        process=ProcessSettings(plugins=()),  # no external plugin: the pages are measured
    )
    tf = bootstrap(settings, store=store)
    app = create_app(
        service=tf.service,
        metrics=tf.metrics,
        settings=ApiSettings(),
        keys=None,
        admin=tf.admin,
        schedules=tf.schedules,
    )
    client = _AsgiClient(app)
    timings: dict[str, float] = {}
    try:
        if tf.schedules is None:
            raise BenchError("this store keeps no schedules")
        schedule = await _declare_schedules(tf.schedules)
        await client.get("/ui/")  # the session cookie
        for name, url in _pages(count).items():
            url = url.format(schedule=schedule)
            samples = []
            for _ in range(SAMPLES):
                began = time.perf_counter()
                status = await client.get(url)
                samples.append(time.perf_counter() - began)
                if status not in (200, 303):
                    raise BenchError(f"{url} answered {status}")
                # The statistics cache (1 s) would hide the count from the second sample on.
                tf.service._statistics.clear()
            timings[name] = statistics.median(samples)
    finally:
        await store.close()
    return timings


async def _declare_schedules(schedules: ScheduleService) -> str:
    """:data:`SCHEDULES` schedules (declared again by key on a kept store); one's id."""
    template = {
        "delivery_type": "http",
        "destination": "https://receiver.example/tick",
        "payload": b'{"tick": true}',
    }
    last = ""
    for n in range(SCHEDULES):
        fields = {"key": f"tick-{n}", "source": SOURCES[n % len(SOURCES)], "every_seconds": 3600}
        last = (await schedules.declare(fields, template)).record.id
    return last


Message = MutableMapping[str, Any]
Asgi = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class _AsgiClient:
    """GET requests straight into the ASGI app, keeping its cookies: no socket in the way."""

    def __init__(self, app: Asgi) -> None:
        self._app = app
        self._cookies: SimpleCookie = SimpleCookie()

    async def get(self, url: str) -> int:
        parts = urlsplit(url)
        cookie = "; ".join(f"{k}={m.value}" for k, m in self._cookies.items())
        scope: Message = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": [(b"host", b"console")] + ([(b"cookie", cookie.encode())] if cookie else []),
            "client": ("127.0.0.1", 1),
            "server": ("console", 80),
        }
        sent = False
        status = 0

        async def receive() -> Message:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # the client never disconnects mid-request
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"set-cookie":
                        self._cookies.load(value.decode("latin-1"))

        await self._app(scope, receive, send)
        return status
