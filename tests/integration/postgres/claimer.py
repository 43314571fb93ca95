"""A dispatcher-like claimer process, for test_concurrent_claims.

``python -m tests.integration.postgres.claimer DSN WORKER START_AT OUT``: waits until the epoch
time START_AT (so all claimers start together), then claims batches and writes back a success
for each until nothing is due, and writes the ids it claimed to OUT, one a line.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from timefuse.adapters.postgres import PostgresEventStore
from timefuse.service.store import Store
from timefuse.testing.factories import make_outcome
from timefuse.testing.store_contract_support import claim

BATCH = 500
EMPTY_CLAIMS_TO_STOP = 3


async def claim_until_done(dsn: str, worker: str, start_at: float) -> list[str]:
    store = Store(PostgresEventStore(dsn, pool_size=2, migrate_on_open=False))
    await store.open()
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        claimed: list[str] = []
        empty = 0
        while empty < EMPTY_CLAIMS_TO_STOP:
            batch = await claim(store, worker, BATCH, 60.0)
            if not batch:
                empty += 1
                await asyncio.sleep(0.05)
                continue
            empty = 0
            claimed.extend(event.id for event in batch)
            outcomes = [make_outcome(event, worker) for event in batch]
            assert await store.record_outcomes(outcomes) == {event.id for event in batch}
        return claimed
    finally:
        await store.close()


def main() -> None:
    dsn, worker, start_at, out = sys.argv[1:5]
    claimed = asyncio.run(claim_until_done(dsn, worker, float(start_at)))
    Path(out).write_text("".join(f"{event_id}\n" for event_id in claimed))


if __name__ == "__main__":
    main()
