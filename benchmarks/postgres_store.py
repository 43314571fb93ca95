"""How close PostgresEventStore comes to bare psycopg, and what its design choices cost.

Prints figures, asserts nothing. On one PostgreSQL server (its own, from
tests/support/postgres_server.py, unless ``--dsn`` names one), each section in a fresh database:

1. baseline: raw psycopg on a minimal table (no partitions, ids, attempts or counters):
   binary COPY of N events in batches, then a claim (UPDATE ... SKIP LOCKED ... RETURNING)
   and complete loop;
2. the store through its port: insert_many in batches, then claim_due + record_outcomes;
3. insert_many's statement fed by unnest arrays (parameters in text or binary format)
   against COPY into a temp staging table followed by the same INSERT ... SELECT, for
   batches of 1 to ``--insert-batch`` events;
4. the claim statement's planning and execution time with few partitions and with 400, and
   the join-shaped claim the store does not use.

    .venv/bin/python benchmarks/postgres_store.py [--dsn URL] [--events 100000]
        [--payload-bytes 200] [--insert-batch 1000] [--claim-batch 500] [--rounds 3]
        [--claim-table-events 50000] [--sections 1234]

Sections 1-3 report the median of ``--rounds`` rounds. The test server runs with fsync and
synchronous_commit off: the figures measure CPU and round trips, not disk flushes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from timefuse.adapters.postgres import PostgresEventStore, connection, queries
from timefuse.adapters.postgres.inserts import COPY_MIN_BATCH
from timefuse.adapters.postgres.partitions import create_partitions, period_start
from timefuse.adapters.postgres.rows import EVENT_COLUMNS, copy_row, event_arrays
from timefuse.domain.event import Event, new_event_id
from timefuse.testing.factories import make_outcome

Conn = psycopg.AsyncConnection[Any]

BASELINE_SCHEMA = """
CREATE TABLE bench_events (
    id text PRIMARY KEY, scheduled_at timestamptz NOT NULL, next_attempt_at timestamptz NOT NULL,
    status text NOT NULL, payload bytea NOT NULL, locked_by text, lock_expires_at timestamptz,
    attempts integer NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL
);
CREATE INDEX bench_events_due ON bench_events (next_attempt_at) WHERE status = 'PENDING';
"""
BASELINE_COPY = (
    "COPY bench_events (id, scheduled_at, next_attempt_at, status, payload, updated_at)"
    " FROM STDIN (FORMAT BINARY)"
)
BASELINE_TYPES = ["text", "timestamptz", "timestamptz", "text", "bytea", "timestamptz"]
BASELINE_CLAIM = """
UPDATE bench_events
   SET status = 'PROCESSING', locked_by = %(worker)s, attempts = attempts + 1,
       lock_expires_at = now() + interval '60 seconds', updated_at = now()
 WHERE id IN (SELECT id FROM bench_events
               WHERE status = 'PENDING' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id, scheduled_at, next_attempt_at, payload, attempts
"""
BASELINE_COMPLETE = """
UPDATE bench_events SET status = 'COMPLETED', locked_by = NULL, lock_expires_at = NULL,
       updated_at = now()
 WHERE id = ANY(%(ids)s) AND locked_by = %(worker)s
"""
# The claim as a join on (id, scheduled_at): the shape the store avoids (see queries.py).
JOIN_CLAIM = f"""
UPDATE events AS e
   SET status = 'PROCESSING', locked_by = %(worker)s, attempts = e.attempts + 1,
       lock_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
  FROM (SELECT id, scheduled_at FROM events
         WHERE status = 'PENDING' AND next_attempt_at <= now()
         ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS due
 WHERE e.id = due.id AND e.scheduled_at = due.scheduled_at
RETURNING {", ".join(f"e.{name}" for name, _ in EVENT_COLUMNS)}
"""


def due_events(
    count: int, payload_bytes: int, span: timedelta = -timedelta(minutes=10)
) -> list[Event]:
    """Events spread from now over ``span`` (by default due over the last ten minutes)."""
    now = datetime.now(UTC)
    filler = "x" * max(0, payload_bytes - 40)
    events = []
    for n in range(count):
        at = now + span * (n / count)
        events.append(
            Event(id=new_event_id(now), external_job_id=f"job-{n}", source="bench",
                  scheduled_at=at, delivery_type="http", destination="https://r.example/h",
                  payload=f'{{"n": {n}, "pad": "{filler}"}}'.encode(), next_attempt_at=at,
                  created_at=now, updated_at=now)
        )  # fmt: skip
    return events


def batches(items: Sequence[Event], size: int) -> Iterator[Sequence[Event]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def support_module() -> ModuleType:
    """tests/support/postgres_server.py, importable when this file runs as a script."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.support import postgres_server

    return postgres_server


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str, label: str) -> Any:
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(server_dsn, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield support_module().with_dbname(server_dsn, name)
    finally:
        await drop_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    # FORCE can't end an autovacuum worker for a non-superuser: wait for it to finish.
    drop = sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
    for attempt in range(20):
        try:
            async with await psycopg.AsyncConnection.connect(server_dsn, autocommit=True) as admin:
                await admin.execute(drop)
            return
        except psycopg.errors.InsufficientPrivilege:
            await asyncio.sleep(0.25 * (attempt + 1))
    print(f"   (could not drop database {name}; left behind)")


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} events/s ({seconds:6.2f} s)"


# --- 1. baseline ------------------------------------------------------------------------------


async def baseline(dsn: str, events: list[Event], args: argparse.Namespace) -> tuple[float, float]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(BASELINE_SCHEMA.encode())
        started = time.perf_counter()
        for batch in batches(events, args.insert_batch):
            async with conn.transaction(), conn.cursor().copy(BASELINE_COPY) as copy:
                copy.set_types(BASELINE_TYPES)
                for e in batch:
                    row = (
                        e.id,
                        e.scheduled_at,
                        e.next_attempt_at,
                        "PENDING",
                        e.payload,
                        e.updated_at,
                    )
                    await copy.write_row(row)
        inserted = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE bench_events")
        started = time.perf_counter()
        params = {"worker": "bench", "limit": args.claim_batch}
        while rows := await (await conn.execute(BASELINE_CLAIM, params)).fetchall():
            await conn.execute(
                BASELINE_COMPLETE, {"ids": [row[0] for row in rows], "worker": "bench"}
            )
        return inserted, time.perf_counter() - started


# --- 2. the store -------------------------------------------------------------------------------


async def through_the_port(
    dsn: str, events: list[Event], args: argparse.Namespace
) -> tuple[float, float]:
    store = PostgresEventStore(dsn, pool_size=2)
    await store.open()
    try:
        started = time.perf_counter()
        for batch in batches(events, args.insert_batch):
            await store.insert_many(batch)
        inserted = time.perf_counter() - started
        await analyze(dsn)
        started = time.perf_counter()
        while claimed := await store.claim_due("bench", args.claim_batch, 60.0):
            await store.record_outcomes("bench", [make_outcome(e, "bench") for e in claimed])
        return inserted, time.perf_counter() - started
    finally:
        await store.close()


async def analyze(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("VACUUM ANALYZE")


# --- 3. unnest against COPY + INSERT ... SELECT -----------------------------------------------

# The array statement with its parameters in text format (the store sends them in binary).
INSERT_EVENTS_TEXT = queries.INSERT_EVENTS.replace(")b::", ")s::")


async def insert_by_arrays(conn: Conn, batch: Sequence[Event], query: str) -> None:
    async with conn.transaction():
        await conn.execute(query, event_arrays(batch))
        await conn.execute(queries.NOTIFY_DUE, {"payload": batch[0].next_attempt_at.isoformat()})


async def insert_by_copy(conn: Conn, batch: Sequence[Event]) -> None:
    async with conn.transaction():
        async with conn.cursor().copy(queries.COPY_TO_STAGING) as copy:
            copy.set_types(queries.COPY_TYPES)
            for event in batch:
                await copy.write_row(copy_row(event))
        await conn.execute(queries.INSERT_EVENTS_FROM_STAGING)
        await conn.execute(queries.NOTIFY_DUE, {"payload": batch[0].next_attempt_at.isoformat()})


async def insert_strategy(dsn: str, events: Sequence[Event], size: int, strategy: str) -> float:
    """Seconds to insert ``events`` in batches of ``size``, by one of the insert statements."""
    await PostgresEventStore(dsn).migrate()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SET TIME ZONE 'UTC'")
        await conn.execute(queries.CREATE_STAGING)
        started = time.perf_counter()
        for batch in batches(events, size):
            if strategy == "copy":
                await insert_by_copy(conn, batch)
            else:
                query = INSERT_EVENTS_TEXT if strategy == "arrays-text" else queries.INSERT_EVENTS
                await insert_by_arrays(conn, batch, query)
        return time.perf_counter() - started


async def strategy_section(server: str, events: list[Event], args: argparse.Namespace) -> None:
    strategies = ("arrays-text", "arrays", "copy")
    print("\n3. insert statements (events/s, median of rounds; fresh database each)")
    print(f"   {'batch':>6} " + " ".join(f"{name:>12}" for name in strategies))
    for size in sorted({1, 10, 100, 500, args.insert_batch}):
        sample = events[: min(len(events), size * 200, 50_000)]
        rates: dict[str, list[float]] = {name: [] for name in strategies}
        for _ in range(args.rounds):
            for name in strategies:
                async with fresh_database(server, "ins") as dsn:
                    rates[name].append(len(sample) / await insert_strategy(dsn, sample, size, name))
        medians = (statistics.median(rates[name]) for name in strategies)
        print(f"   {size:>6} " + " ".join(f"{value:>12,.0f}" for value in medians))
    print(f"   (the store uses arrays below {COPY_MIN_BATCH} events, COPY from there on)")


# --- 4. claim planning with few and many partitions ---------------------------------------------


async def claim_timings(dsn: str, query: str, limit: int, runs: int = 15) -> tuple[float, float]:
    """Median planning and execution time (ms) of ``query``, each run rolled back."""
    plans, execs = [], []
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        params = {"worker": "bench", "lease": 60.0, "limit": limit}
        for _ in range(runs):
            cursor = await conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + query.encode(), params)
            row = await cursor.fetchone()
            assert row is not None
            plan = row[0][0]
            plans.append(plan["Planning Time"])
            execs.append(plan["Execution Time"])
            await conn.rollback()
    return statistics.median(plans), statistics.median(execs)


async def store_claim_latency(dsn: str, limit: int, runs: int = 25) -> float:
    """Steady-state wall time (ms) of claim_due through the store: the median of the last 10
    of ``runs`` claims (psycopg prepares a statement on its 5th use, and the server may then
    switch to a generic plan), each claim released again."""
    store = PostgresEventStore(dsn, pool_size=1)
    await store.open()
    try:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            claimed = await store.claim_due("bench", limit, 60.0)
            times.append((time.perf_counter() - started) * 1000)
            await store.release("bench", [e.id for e in claimed])
        return statistics.median(times[-10:])
    finally:
        await store.close()


@contextlib.contextmanager
def server_default_plans() -> Iterator[None]:
    """Stores opened inside leave plan_cache_mode at the server's default (auto)."""
    original = connection.configure

    async def configure(conn: Conn) -> None:
        await original(conn)
        await conn.execute("RESET plan_cache_mode")

    connection.configure = configure
    try:
        yield
    finally:
        connection.configure = original


async def fill_partitions_database(dsn: str, events: list[Event], extra_days: int) -> int:
    """Store ``events``, add ``extra_days`` older daily partitions; returns the partitions."""
    store = PostgresEventStore(dsn)
    await store.open()
    for batch in batches(events, 1000):
        await store.insert_many(batch)
    await store.close()
    today = period_start(datetime.now(UTC), "day")
    days = [today - timedelta(days=n) for n in range(1, extra_days + 1)]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await create_partitions(conn, [(day, day + timedelta(days=1)) for day in days])
        await conn.execute("VACUUM ANALYZE")
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def partition_section(server: str, events: list[Event], args: argparse.Namespace) -> None:
    print(f"\n4. claims of {args.claim_batch}, {len(events):,} events, half due (median ms)")
    print(f"   {'partitions':>10} {'plan':>8} {'exec':>8} {'claim_due':>10} {'auto':>8}")
    for extra_days in (0, 392):
        async with fresh_database(server, "parts") as dsn:
            count = await fill_partitions_database(dsn, events, extra_days)
            plan, run = await claim_timings(dsn, queries.CLAIM_DUE, args.claim_batch)
            latency = await store_claim_latency(dsn, args.claim_batch)
            with server_default_plans():
                auto = await store_claim_latency(dsn, args.claim_batch)
            print(f"   {count:>10} {plan:8.2f} {run:8.2f} {latency:10.2f} {auto:8.2f}")
            if not extra_days:
                plan, run = await claim_timings(dsn, JOIN_CLAIM, args.claim_batch)
                print(f"   {count:>10} {plan:8.2f} {run:8.2f}   join-shaped claim (not used)")
    print("   plan/exec: EXPLAIN ANALYZE of the claim statement (planned afresh); claim_due:")
    print("   wall time through the store (one generic plan per prepared statement); auto: the")
    print("   same with the server's default plan_cache_mode, which may re-plan on every call")


async def baseline_and_port(
    server: str, events: list[Event], args: argparse.Namespace
) -> list[float]:
    """Median seconds of: raw insert, raw claim loop, insert_many, claim_due loop."""
    seconds: list[list[float]] = [[], [], [], []]
    for _ in range(args.rounds):
        async with fresh_database(server, "raw") as dsn:
            raw = await baseline(dsn, events, args)
        async with fresh_database(server, "store") as dsn:
            port = await through_the_port(dsn, events, args)
        for values, value in zip(seconds, (*raw, *port), strict=True):
            values.append(value)
    return [statistics.median(values) for values in seconds]


# --- main -----------------------------------------------------------------------------------------


async def run(server: str, args: argparse.Namespace) -> None:
    async with await psycopg.AsyncConnection.connect(server) as conn:
        cursor = await conn.execute(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')"
        )
        print("server:", await cursor.fetchone())
    print(
        f"{args.events:,} events, {args.payload_bytes}-byte payloads, insert batches of "
        f"{args.insert_batch}, claims of {args.claim_batch}, median of {args.rounds} rounds"
    )
    events = due_events(max(args.events, args.claim_table_events), args.payload_bytes)
    if "1" in args.sections or "2" in args.sections:
        await port_section(server, events[: args.events], args)
    if "3" in args.sections:
        await strategy_section(server, events[: args.events], args)
    if "4" in args.sections:
        # Half due now, half spread over the partitions of the coming week.
        due = events[: args.claim_table_events // 2]
        ahead = due_events(
            args.claim_table_events - len(due), args.payload_bytes, timedelta(days=7)
        )
        await partition_section(server, [*due, *ahead], args)


async def port_section(server: str, events: list[Event], args: argparse.Namespace) -> None:
    raw, raw_claim, port, port_claim = await baseline_and_port(server, events, args)
    n = len(events)
    print("\n1. baseline (raw psycopg, minimal table)")
    print("   insert (binary COPY)     ", rate(n, raw))
    print("   claim + complete         ", rate(n, raw_claim))
    print("2. PostgresEventStore (port)")
    print("   insert_many              ", rate(n, port), f" ratio {raw / port:.2f}")
    print(
        "   claim_due + outcomes     ", rate(n, port_claim), f" ratio {raw_claim / port_claim:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server (its user needs CREATEDB)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=200)
    parser.add_argument("--insert-batch", type=int, default=1000)
    parser.add_argument("--claim-batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--claim-table-events", type=int, default=50_000, help="due events in section 4's tables"
    )
    parser.add_argument("--sections", default="1234", help="which sections to run, e.g. 34")
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(run(args.dsn, args))
        return
    with support_module().postgres_server() as server:
        asyncio.run(run(server.dsn, args))


if __name__ == "__main__":
    main()
