"""``timefuse bench schedules``: S schedules firing every minute, on SQLite and PostgreSQL.

For each store the bench starts its own ``timefuse serve`` (a temporary SQLite file; a fresh
database on the PostgreSQL of ``--database-url``, else on a private server it starts), declares
S schedules with ``cron = "* * * * *"`` (or ``*/E * * * * *`` with ``--every E``) through the
API, and watches the instants that follow for ``--duration`` seconds. Every occurrence's id
is derived from (schedule, instant), so the ids to expect are known in advance. It reports,
per store:

- how many occurrences were created, missing, or stored twice (read from the store);
- creation lateness: ``created_at`` minus the instant (negative: created ahead, by the
  planner's lookahead);
- delivery lateness: arrival at the receiver minus the instant, and deliveries repeated;
- the serve process's CPU over the window.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import msgspec
import psycopg

from timefuse.bench.api import SOURCE, sum_samples
from timefuse.bench.options import BenchOptions
from timefuse.bench.pgserver import PrivateServer, Server
from timefuse.bench.processes import BenchError, ReceiverProcess, ServeProcess
from timefuse.bench.procfs import cpu_seconds
from timefuse.bench.progress import Progress
from timefuse.bench.report import Report, Value
from timefuse.bench.stats import percentile
from timefuse.domain.schedule import occurrence_id

PATH = "/api/v1/schedules"
EVERY_MINUTE = "* * * * *"
# Yearly, on a date the run doesn't reach (unless it runs across New Year).
IDLE_CRON = "0 0 1 1 *"
# Seconds between the last declaration and the first instant watched, at least.
SETTLE_SECONDS = 10.0
# Arrivals are awaited this long after the last instant before the rest count as missing.
STALL_SECONDS = 60.0
POLL_SECONDS = 0.5

_encoder = msgspec.json.Encoder()


@dataclass
class Window:
    """The instants watched, and each expected occurrence's instant by id."""

    instants: list[datetime]
    expected: dict[str, datetime] = field(default_factory=dict)


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def cron_every(seconds: int) -> str:
    """The cron expression firing every ``seconds`` (a divisor of 60), on whole multiples."""
    return EVERY_MINUTE if seconds == 60 else f"*/{seconds} * * * * *"


def _next_instant(after: float, every: int) -> datetime:
    return datetime.fromtimestamp(math.ceil(after / every) * every, UTC).replace(microsecond=0)


def window_of(ids: list[str], declared_at: float, duration: float, every: int = 60) -> Window:
    first = _next_instant(declared_at + SETTLE_SECONDS, every)
    count = max(1, int(duration // every))
    instants = [first + timedelta(seconds=every * n) for n in range(count)]
    window = Window(instants)
    for schedule_id in ids:
        for instant in instants:
            window.expected[occurrence_id(schedule_id, instant)] = instant
    return window


async def declare_all(
    session: aiohttp.ClientSession,
    base_url: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
    label: str,
) -> list[str]:
    """POST each schedule, ``concurrency`` at a time; their ids, in order."""
    ids = [""] * len(bodies)
    semaphore = asyncio.Semaphore(concurrency)
    progress = Progress(label, len(bodies))
    done = 0

    async def one(index: int) -> None:
        nonlocal done
        async with semaphore:
            data = _encoder.encode(bodies[index])
            async with session.post(base_url + PATH, data=data) as response:
                text = await response.read()
                if response.status not in (200, 201):
                    raise BenchError(f"POST {PATH} answered {response.status}: {text[:300]!r}")
            ids[index] = msgspec.json.decode(text)["data"]["id"]
            done += 1
            progress.update(done)

    try:
        await asyncio.gather(*(one(i) for i in range(len(bodies))))
    finally:
        progress.close()
    return ids


def schedule_body(key: str, cron: str, destination: str) -> dict[str, Any]:
    return {
        "key": key,
        "source": SOURCE,
        "cron": cron,
        "event": {"delivery_type": "http", "destination": destination, "payload": {"k": key}},
    }


@dataclass
class Arrivals:
    first: dict[str, float] = field(default_factory=dict)
    repeated: int = 0
    outside: int = 0


async def watch(receiver: ReceiverProcess, window: Window) -> Arrivals:
    """Arrivals until every expected occurrence came, or none for a while after the last."""
    arrivals = Arrivals()
    deadline = _epoch(window.instants[-1]) + STALL_SECONDS
    progress = Progress("occurrences delivered", len(window.expected))
    try:
        while len(arrivals.first) < len(window.expected) and time.time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            for event_id, at in await receiver.take():
                if event_id not in window.expected:
                    arrivals.outside += 1
                elif event_id in arrivals.first:
                    arrivals.repeated += 1
                else:
                    arrivals.first[event_id] = at
            progress.update(len(arrivals.first))
    finally:
        progress.close()
    # Late repeats of what arrived (a retry, a lease expiry) are counted too.
    await asyncio.sleep(2.0)
    for event_id, _ in await receiver.take():
        if event_id in arrivals.first:
            arrivals.repeated += 1
    return arrivals


# What the store holds for the window: (id, instant, created_at) of every event there, as
# epoch seconds.
StoredRows = list[tuple[str, float, float, str]]


def sqlite_rows(path: str, window: Window) -> StoredRows:
    micros = [int(_epoch(instant)) * 1_000_000 for instant in window.instants]
    marks = ", ".join("?" * len(micros))
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT id, scheduled_at, created_at, external_job_id FROM events "
            f"WHERE source = ? AND scheduled_at IN ({marks})",
            [SOURCE, *micros],
        ).fetchall()
    return [(i, s / 1e6, c / 1e6, x) for i, s, c, x in rows]


def _sqlite_rows_of(serve: ServeProcess, window: Window) -> StoredRows:
    return sqlite_rows(str(serve.workdir / "timefuse.db"), window)


def _postgres_rows_of(dsn: str, serve: ServeProcess, window: Window) -> StoredRows:
    return postgres_rows(dsn, window)


def postgres_rows(dsn: str, window: Window) -> StoredRows:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, scheduled_at, created_at, external_job_id FROM events "
            "WHERE source = %s AND scheduled_at = ANY(%s)",
            (SOURCE, window.instants),
        ).fetchall()
    return [(i, s.timestamp(), c.timestamp(), x) for i, s, c, x in rows]


def figures(
    window: Window, stored: StoredRows, arrivals: Arrivals, schedules: int
) -> dict[str, Value]:
    expected = window.expected
    created = [row for row in stored if row[0] in expected]
    created_late = sorted(row[2] - row[1] for row in created)
    delivered_late = sorted(
        at - _epoch(expected[event_id]) for event_id, at in arrivals.first.items()
    )
    return {
        "schedules": schedules,
        "instants": len(window.instants),
        "occurrences_expected": len(expected),
        "occurrences_created": len(created),
        "occurrences_missing": len(expected) - len({row[0] for row in created}),
        "stored_twice": len(stored) - len({(row[3], row[1]) for row in stored}),
        "stored_unexpected": len(stored) - len(created),
        "created_lateness_p50_s": percentile(created_late, 50),
        "created_lateness_p99_s": percentile(created_late, 99),
        "created_lateness_max_s": created_late[-1] if created_late else math.nan,
        "delivered": len(arrivals.first),
        "delivered_lateness_p50_s": percentile(delivered_late, 50),
        "delivered_lateness_p99_s": percentile(delivered_late, 99),
        "delivered_lateness_max_s": delivered_late[-1] if delivered_late else math.nan,
        "delivered_twice": arrivals.repeated,
    }


@dataclass
class StoreUnderTest:
    name: str
    env: dict[str, str]
    rows: Callable[[ServeProcess, Window], StoredRows]
    close: Callable[[], None] = lambda: None


def _stores(options: BenchOptions, run_id: str) -> tuple[list[StoreUnderTest], Server | None]:
    stores: list[StoreUnderTest] = []
    server: Server | None = None
    for name in options.stores:
        if name == "sqlite":
            # DATABASE_URL empty: the serve's default, ./timefuse.db in its own temporary
            # directory, whatever the environment names.
            stores.append(
                StoreUnderTest("sqlite", {"DATABASE_URL": "", "DB_HOST": ""}, _sqlite_rows_of)
            )
            continue
        if server is None:
            url = options.database_url
            server = Server(url) if url else PrivateServer.start()
        database = f"timefuse_bench_schedules_{run_id}"
        dsn = server.create_database(database)
        stores.append(
            StoreUnderTest(
                "postgres",
                {"DATABASE_URL": dsn},
                functools.partial(_postgres_rows_of, dsn),
                functools.partial(server.drop_database, database),
            )
        )
    return stores, server


async def measure(options: BenchOptions, store: StoreUnderTest) -> tuple[dict[str, Value], int]:
    """One store's figures, and its errors."""
    receiver = ReceiverProcess(options.receiver_host)
    serve = ServeProcess(store.env, None, options.serve_log)
    session = aiohttp.ClientSession(
        headers={"Content-Type": "application/json"},
        connector=aiohttp.TCPConnector(limit=options.concurrency * 2),
        timeout=aiohttp.ClientTimeout(total=300),
    )
    try:
        await receiver.start()
        serve.start()
        await serve.wait_ready()
        destination = receiver.url("/tick")
        if options.idle:
            idle = [schedule_body(f"idle-{n}", IDLE_CRON, destination) for n in range(options.idle)]
            label = f"{store.name}: idle schedules declared"
            await declare_all(session, serve.base_url, idle, options.concurrency, label)
        bodies = [
            schedule_body(f"bench-{n}", cron_every(options.every), destination)
            for n in range(options.events)
        ]
        began = time.time()
        label = f"{store.name}: schedules declared"
        ids = await declare_all(session, serve.base_url, bodies, options.concurrency, label)
        declared_s = time.time() - began
        window = window_of(ids, time.time(), options.duration, options.every)
        pid = serve.pid
        cpu_before, cpu_from = (cpu_seconds(pid) if pid else math.nan), time.time()
        arrivals = await watch(receiver, window)
        cpu = (cpu_seconds(pid) - cpu_before) if pid else math.nan
        cpu_percent = 100.0 * cpu / max(time.time() - cpu_from, 1e-9)
        stored = store.rows(serve, window)
        async with session.get(serve.base_url + "/metrics") as response:
            metrics = sum_samples(await response.text())
    except aiohttp.ClientError as exc:
        reason = f"{store.name}: cannot talk to timefuse serve: {exc}\n{serve.log_tail()}"
        raise BenchError(reason) from None
    finally:
        await session.close()
        await receiver.close()
        serve.stop()
        store.close()
    found = figures(window, stored, arrivals, options.events)
    found["declared_per_s"] = options.events / declared_s if declared_s > 0 else math.nan
    found["serve_cpu_percent"] = round(cpu_percent, 1)
    lag_count = metrics.get("timefuse_schedule_materialisation_lag_seconds_count", 0.0)
    lag_sum = metrics.get("timefuse_schedule_materialisation_lag_seconds_sum", 0.0)
    found["planning_lag_mean_s"] = lag_sum / lag_count if lag_count else math.nan
    found["plan_conflicts"] = int(metrics.get("timefuse_schedule_plan_conflicts_total", 0.0))
    errors = int(found["occurrences_missing"] or 0) + int(found["stored_twice"] or 0)
    errors += len(window.expected) - len(arrivals.first)
    return found, errors


async def _run(options: BenchOptions) -> Report:
    run_id = f"{int(time.time())}"
    stores, server = _stores(options, run_id)
    report = Report(
        scenario="schedules",
        target={"self_hosted": True, "stores": ",".join(s.name for s in stores)},
        parameters={
            "schedules": options.events,
            "idle": options.idle or None,
            "cron": cron_every(options.every),
            "duration_s": options.duration,
        },
        rate_key="",
        unit="schedules/s",
    )
    try:
        for store in stores:
            found, errors = await measure(options, store)
            report.results.update({f"{store.name}_{key}": value for key, value in found.items()})
            report.errors += errors
    finally:
        if server is not None:
            server.close()
    report.notes.append(
        "lateness = created_at (or arrival at the receiver) minus the instant; negative: "
        "created before its instant, by the planner's lookahead"
    )
    return report


def run_schedules(options: BenchOptions) -> Report:
    return asyncio.run(_run(options))
