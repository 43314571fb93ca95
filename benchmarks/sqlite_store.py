"""Throughput of SqliteEventStore: inserts in 1000-event batches, claim+record in 500s."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from timefuse.adapters.sqlite import SqliteEventStore
from timefuse.domain.status import EventStatus
from timefuse.testing.factories import make_event, make_outcome

BATCHES = int(sys.argv[1]) if len(sys.argv) > 1 else 50
PAYLOAD = b'{"order_id": 123456, "action": "remind", "note": "' + b"x" * 200 + b'"}'


def batch(n: int, due: datetime) -> list:
    return [
        make_event(scheduled_at=due - timedelta(microseconds=i), payload=PAYLOAD) for i in range(n)
    ]


async def main() -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        store = SqliteEventStore(str(Path(tmp) / "bench.db"))
        await store.open()
        now = datetime.now(UTC)
        batches = [batch(1000, now - timedelta(seconds=b)) for b in range(BATCHES)]
        start = time.perf_counter()
        for events in batches:
            await store.insert_many(events)
        took = time.perf_counter() - start
        total = 1000 * BATCHES
        print(
            f"insert_many: {total} events in 1000-event batches: {took:.2f} s, "
            f"{total / took:,.0f} events/s ({took / BATCHES * 1000:.1f} ms/batch)"
        )

        dup_start = time.perf_counter()
        await store.insert_many(batches[0])
        print(
            "insert_many of a fully duplicate 1000 batch: "
            f"{(time.perf_counter() - dup_start) * 1000:.1f} ms"
        )

        claimed_total = 0
        start = time.perf_counter()
        claim_time = record_time = 0.0
        while True:
            t0 = time.perf_counter()
            claimed = await store.claim_due("bench", 500, 60.0)
            t1 = time.perf_counter()
            if not claimed:
                break
            updates = [make_outcome(e, "bench", EventStatus.COMPLETED) for e in claimed]
            t2 = time.perf_counter()
            applied = await store.record_outcomes("bench", updates)
            t3 = time.perf_counter()
            assert applied == len(claimed)
            claim_time += t1 - t0
            record_time += t3 - t2
            claimed_total += len(claimed)
        took = time.perf_counter() - start
        n = claimed_total // 500
        print(
            f"claim_due+record_outcomes: {claimed_total} events in 500-event batches: "
            f"{took:.2f} s wall incl. building outcomes, "
            f"store time {claim_time + record_time:.2f} s -> "
            f"{claimed_total / (claim_time + record_time):,.0f} events/s "
            f"(claim {claim_time / n * 1000:.1f} ms, "
            f"record {record_time / n * 1000:.1f} ms per batch)"
        )
        start = time.perf_counter()
        deleted = await store.delete_terminal_before(datetime.now(UTC) + timedelta(minutes=1))
        took = time.perf_counter() - start
        print(f"delete_terminal_before: {deleted} events (10k batches): {took:.2f} s")
        await store.close()


asyncio.run(main())
