"""store: the event store alone, through the rule layer every service uses, against its driver.

In-process, no deployment. N events due over the last ten minutes (to one receiver, or spread
over ``--receivers``) are inserted in batches of 1,000, then claimed in batches of
``SCHEDULER_BATCH_SIZE`` (500) and completed until none is due; then retention deletes them.
On a store that shares limits across processes (PostgreSQL), the same again with the claims
a dispatcher makes there: within a cap of 100 per receiver, 100 at a time (the figures
``shared_*``). On PostgreSQL the claims hear due notifications as a dispatcher's do (so they
read the due index from the floor a dispatcher keeps). The baseline, in the same run, is the
bare driver on a minimal table (no dedup key, attempts, counters or partitions): inserts in
the same batches, then a claim-and-complete loop of the same size.

SQLite: a file in a temporary directory, with the adapter's durability (WAL,
``synchronous=FULL``). PostgreSQL (``--backend postgresql``): a database made for the run on a
private server started from the binaries on the machine, or on ``--database-url``'s server,
dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from timefuse.bench.options import BenchOptions
from timefuse.bench.report import Baseline, Report
from timefuse.bench.stats import rate
from timefuse.domain.event import Event, new_event_id
from timefuse.domain.status import EventStatus
from timefuse.ports.store import ClaimRequest, DestinationRule, SharedLimits
from timefuse.service.store import Store
from timefuse.testing.factories import make_outcome

INSERT_BATCH = 1000
CLAIM_BATCH = 500
# Shared claims: the default cap per receiver, and claims of as many (a dispatcher's claim is
# bounded by its free room; with one receiver, by the receiver's cap).
SHARED_CAP = 100
WORKER = "bench-store"
PAYLOAD_PAD = "x" * 160


def due_events(
    count: int, ahead: timedelta = timedelta(0), sources: int = 50, receivers: int = 1
) -> list[Event]:
    """``count`` events due over the ten minutes before now + ``ahead``, from ``sources``
    sources (the ingest topic's records are keyed by source), to ``receivers`` receivers in
    turn."""
    now = datetime.now(UTC)
    events = []
    for n in range(count):
        at = now + ahead - timedelta(minutes=10) * (1 - n / count)
        payload = f'{{"n": {n}, "pad": "{PAYLOAD_PAD}"}}'.encode()
        source = f"timefuse-bench-{n % sources}"
        host = "r.example" if receivers == 1 else f"r{n % receivers}.example"
        events.append(
            Event(id=new_event_id(now), external_job_id=f"job-{n}", source=source,
                  scheduled_at=at, delivery_type="http", destination=f"https://{host}/h",
                  payload=payload, next_attempt_at=at, created_at=now, updated_at=now)
        )  # fmt: skip
    return events


def _batches(items: Sequence[Event], size: int) -> Iterator[Sequence[Event]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_store(options: BenchOptions) -> Report:
    return asyncio.run(_run(options))


async def _run(options: BenchOptions) -> Report:
    events = due_events(options.events, receivers=options.receivers)
    async with _database(options) as (url, target):
        report = Report(
            "store",
            target,
            {
                "events": options.events,
                "receivers": options.receivers,
                "insert_batch": INSERT_BATCH,
                "claim_batch": CLAIM_BATCH,
            },
        )
        raw_url = url if url.startswith("postgresql") else url.replace("timefuse.db", "raw.db")
        raw_insert, raw_claim = await _raw(raw_url, events)
        store = Store(_adapter(url))
        await store.open()
        try:
            figures = await _through_the_store(store, events)
            shared = None
            if store.capabilities.limits_sharer is not None:
                _vacuum(url)  # the first pass's dead rows don't weigh on the second
                again = due_events(options.events, receivers=options.receivers)
                shared = await _through_the_store(store, again, shared=True)
        finally:
            await store.close()
    count = len(events)
    report.baseline = Baseline(
        name=f"raw {target['store']} claim and complete",
        rate_per_s=rate(count, raw_claim),
        count=count,
        seconds=raw_claim,
        detail=f"the bare driver on a minimal table, batches of {CLAIM_BATCH}",
    )
    report.rate_key = "claim_complete_rate_per_s"
    insert_rate = rate(count, figures["insert_s"])
    raw_insert_rate = rate(count, raw_insert)
    report.results = {
        "insert_rate_per_s": insert_rate,
        "raw_insert_rate_per_s": raw_insert_rate,
        "insert_ratio": insert_rate / raw_insert_rate if raw_insert_rate else None,
        "claim_complete_rate_per_s": rate(figures["completed"], figures["claim_complete_s"]),
        "mean_claim_s": figures["claim_s"] / max(figures["claims"], 1),
        "mean_outcome_write_s": figures["write_s"] / max(figures["claims"], 1),
        "claims": figures["claims"],
        "retention_rate_per_s": rate(figures["deleted"], figures["retention_s"]),
    }
    if shared is not None:
        report.results.update(
            {
                "shared_claim_complete_rate_per_s": rate(
                    shared["completed"], shared["claim_complete_s"]
                ),
                "shared_mean_claim_s": shared["claim_s"] / max(shared["claims"], 1),
                "shared_mean_outcome_write_s": shared["write_s"] / max(shared["claims"], 1),
                "shared_claims": shared["claims"],
            }
        )
    report.errors = 0
    for name, done in (("", figures), ("shared claims: ", shared)):
        if done is None:
            continue
        errors = (count - done["completed"]) + (count - done["deleted"])
        report.errors += errors
        if errors:
            report.notes.append(
                f"{name}completed {done['completed']:,} and deleted {done['deleted']:,}"
                f" of {count:,}"
            )
    return report


async def _through_the_store(
    store: Store, events: list[Event], *, shared: bool = False
) -> dict[str, Any]:
    """Insert, claim and complete, delete. ``shared``: claims as a dispatcher makes them on a
    store that shares limits (a cap per receiver, claims of as many)."""
    started = time.perf_counter()
    for batch in _batches(events, INSERT_BATCH):
        await store.insert_many(batch)
    inserted = time.perf_counter() - started
    claims = completed = 0
    claim_s = write_s = 0.0
    request = ClaimRequest(worker=WORKER, limit=CLAIM_BATCH, lease_seconds=60.0)
    if shared:
        limits = SharedLimits(default=DestinationRule(concurrency=SHARED_CAP))
        request = ClaimRequest(worker=WORKER, limit=SHARED_CAP, lease_seconds=60.0, shared=limits)
    async with _hearing_due_events(store):
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            claimed = await store.claim(request)
            t1 = time.perf_counter()
            if claimed is None or not claimed.events:
                break
            updates = [make_outcome(e, WORKER, EventStatus.COMPLETED) for e in claimed.events]
            t2 = time.perf_counter()
            completed += len(await store.record_outcomes(updates))
            claim_s += t1 - t0
            write_s += time.perf_counter() - t2
            claims += 1
        claim_complete = time.perf_counter() - started
    started = time.perf_counter()
    deleted = await store.delete_terminal_before(datetime.now(UTC) + timedelta(minutes=1))
    return {
        "insert_s": inserted,
        "claim_complete_s": claim_complete,
        "claim_s": claim_s,
        "write_s": write_s,
        "claims": claims,
        "completed": completed,
        "deleted": deleted,
        "retention_s": time.perf_counter() - started,
    }


@contextlib.asynccontextmanager
async def _hearing_due_events(store: Store) -> AsyncIterator[None]:
    """A store shared by processes (PostgreSQL) hearing due notifications while it claims, as
    a dispatcher's does (its claims then read the due index from a floor: see
    ``timefuse.adapters.postgres.due_floor``); any other store as it is."""
    watcher = store.capabilities.due_watcher
    if watcher is None or not store.capabilities.shared:
        yield
        return
    listening, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(watcher.watch_due(lambda _due: listening.set(), stop))
    try:
        await asyncio.wait_for(listening.wait(), 10.0)  # the "look now" of connecting
        yield
    finally:
        stop.set()
        await task


def _vacuum(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) events")


def _adapter(url: str) -> Any:
    from timefuse.adapters.system.clock import SystemClock
    from timefuse.config import StoreSettings
    from timefuse.entrypoints.bootstrap import build_store

    return build_store(StoreSettings.from_env({"DATABASE_URL": url}), SystemClock())


@contextlib.asynccontextmanager
async def _database(options: BenchOptions) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    if options.backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="timefuse-bench-store-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'timefuse.db'}"
            yield url, {"store": "sqlite", "database": "temporary file"}
        return
    from timefuse.bench.pgserver import PrivateServer, Server

    server = Server(options.database_url) if options.database_url else PrivateServer.start()
    name = f"bench_store_{uuid.uuid4().hex[:8]}"
    try:
        url = server.create_database(name)
        try:
            yield url, {"store": "postgresql", "server": server.version()}
        finally:
            server.drop_database(name)
    finally:
        server.close()


async def _raw(url: str, events: list[Event]) -> tuple[float, float]:
    if url.startswith("sqlite:"):
        return await asyncio.to_thread(_raw_sqlite, url.removeprefix("sqlite:///"), events)
    return await _raw_postgres(url, events)


_RAW_SCHEMA = """
CREATE TABLE bench_events (
    id TEXT PRIMARY KEY, scheduled_at TEXT NOT NULL, next_attempt_at TEXT NOT NULL,
    status TEXT NOT NULL, payload BLOB NOT NULL, locked_by TEXT, lock_expires_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, updated_at TEXT NOT NULL
);
CREATE INDEX bench_events_due ON bench_events (next_attempt_at) WHERE status = 'PENDING';
"""
_RAW_SQLITE_CLAIM = """
UPDATE bench_events
   SET status = 'PROCESSING', locked_by = ?, attempts = attempts + 1,
       lock_expires_at = ?, updated_at = ?
 WHERE id IN (SELECT id FROM bench_events
               WHERE status = 'PENDING' AND next_attempt_at <= ?
               ORDER BY next_attempt_at LIMIT ?)
RETURNING id, scheduled_at, next_attempt_at, payload, attempts
"""


def _raw_sqlite(path: str, events: list[Event]) -> tuple[float, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # the adapter's durability
        conn.executescript(_RAW_SCHEMA)
        started = time.perf_counter()
        for batch in _batches(events, INSERT_BATCH):
            rows = [
                (e.id, e.scheduled_at.isoformat(), e.next_attempt_at.isoformat(), "PENDING",
                 e.payload, e.updated_at.isoformat())
                for e in batch
            ]  # fmt: skip
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO bench_events (id, scheduled_at, next_attempt_at, status, payload, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        inserted = time.perf_counter() - started
        started = time.perf_counter()
        while True:
            now = datetime.now(UTC)
            conn.execute("BEGIN IMMEDIATE")
            claimed = conn.execute(
                _RAW_SQLITE_CLAIM,
                (WORKER, (now + timedelta(seconds=60)).isoformat(), now.isoformat(),
                 now.isoformat(), CLAIM_BATCH),
            ).fetchall()  # fmt: skip
            conn.execute("COMMIT")
            if not claimed:
                break
            conn.execute("BEGIN")
            conn.executemany(
                "UPDATE bench_events SET status = 'COMPLETED', locked_by = NULL, "
                "lock_expires_at = NULL, updated_at = ? WHERE id = ? AND locked_by = ?",
                [(now.isoformat(), row[0], WORKER) for row in claimed],
            )
            conn.execute("COMMIT")
        return inserted, time.perf_counter() - started
    finally:
        conn.close()


_PG_SCHEMA = """
CREATE TABLE bench_events (
    id text PRIMARY KEY, scheduled_at timestamptz NOT NULL, next_attempt_at timestamptz NOT NULL,
    status text NOT NULL, payload bytea NOT NULL, locked_by text, lock_expires_at timestamptz,
    attempts integer NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL
);
CREATE INDEX bench_events_due ON bench_events (next_attempt_at) WHERE status = 'PENDING';
"""
_PG_COPY = (
    "COPY bench_events (id, scheduled_at, next_attempt_at, status, payload, updated_at)"
    " FROM STDIN (FORMAT BINARY)"
)
_PG_TYPES = ["text", "timestamptz", "timestamptz", "text", "bytea", "timestamptz"]
_PG_CLAIM = """
UPDATE bench_events
   SET status = 'PROCESSING', locked_by = %(worker)s, attempts = attempts + 1,
       lock_expires_at = now() + interval '60 seconds', updated_at = now()
 WHERE id IN (SELECT id FROM bench_events
               WHERE status = 'PENDING' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id, scheduled_at, next_attempt_at, payload, attempts
"""
_PG_COMPLETE = """
UPDATE bench_events SET status = 'COMPLETED', locked_by = NULL, lock_expires_at = NULL,
       updated_at = now()
 WHERE id = ANY(%(ids)s) AND locked_by = %(worker)s
"""


async def _raw_postgres(url: str, events: list[Event]) -> tuple[float, float]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(_PG_SCHEMA.encode())
        started = time.perf_counter()
        for batch in _batches(events, INSERT_BATCH):
            async with conn.transaction(), conn.cursor().copy(_PG_COPY) as copy:
                copy.set_types(_PG_TYPES)
                for e in batch:
                    await copy.write_row(
                        (e.id, e.scheduled_at, e.next_attempt_at, "PENDING", e.payload,
                         e.updated_at)
                    )  # fmt: skip
        inserted = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE bench_events")
        params: dict[str, Any] = {"worker": WORKER, "limit": CLAIM_BATCH}
        started = time.perf_counter()
        while rows := await (await conn.execute(_PG_CLAIM, params)).fetchall():
            await conn.execute(_PG_COMPLETE, {"ids": [row[0] for row in rows], "worker": WORKER})
        return inserted, time.perf_counter() - started
