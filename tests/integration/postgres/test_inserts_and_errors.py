"""Inserting under concurrency, and how failures reach callers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import psycopg_pool
import pytest

from tests.integration.postgres.conftest import Db, counted_by_scan, partition_of
from tests.support.postgres_server import free_port, postgres_url
from timefuse.adapters.postgres import PostgresEventStore
from timefuse.adapters.postgres import inserts as postgres_inserts
from timefuse.adapters.postgres.errors import translate
from timefuse.adapters.postgres.inserts import COPY_MIN_BATCH
from timefuse.adapters.postgres.partitions import period_start
from timefuse.ports.store import StoreError, StoreRefused, StoreUnavailable
from timefuse.service.store import Store
from timefuse.testing.factories import make_event

pytestmark = pytest.mark.postgres


async def test_concurrent_submissions_of_the_same_jobs_store_each_job_once(
    pg_store: Store, postgres_dsn: str, db: Db
) -> None:
    originals = [make_event() for _ in range(300)]
    twins = [
        make_event(source=e.source, external_job_id=e.external_job_id, scheduled_at=e.scheduled_at)
        for e in originals
    ]
    other = PostgresEventStore(postgres_dsn, migrate_on_open=False)
    await other.open()
    try:
        # Many small batches from two pools, so the two sides interleave on the dedup index.
        results = await asyncio.gather(
            *(pg_store.insert_many(originals[i : i + 10]) for i in range(0, 300, 10)),
            *(other.insert_many(twins[i : i + 10]) for i in range(0, 300, 10)),
        )
    finally:
        await other.close()
    mapping = {submitted: stored for result in results for submitted, stored in result.items()}
    for original, twin in zip(originals, twins, strict=True):
        assert mapping[original.id] == mapping[twin.id]
        assert mapping[original.id] in (original.id, twin.id)
    stored_ids = {mapping[e.id] for e in originals}
    assert db.execute("SELECT count(*) FROM events").fetchone() == (300,)
    # No id is left reserved for an event that was skipped.
    rows = db.execute("SELECT id FROM event_ids").fetchall()
    assert {row[0] for row in rows} == stored_ids
    assert (await pg_store.count_by_status()) == counted_by_scan(db)


@pytest.mark.parametrize("size", [3, COPY_MIN_BATCH + 5], ids=["arrays", "copy"])
async def test_a_batch_resolves_every_kind_of_duplicate(pg_store: Store, db: Db, size: int) -> None:
    stored = make_event()
    await pg_store.insert_many([stored])
    same_id = make_event(id=stored.id, scheduled_at=stored.scheduled_at + timedelta(days=2))
    same_key = make_event(
        source=stored.source,
        external_job_id=stored.external_job_id,
        scheduled_at=stored.scheduled_at,
    )
    fresh = [make_event() for _ in range(size)]
    twin = make_event(
        source=fresh[0].source,
        external_job_id=fresh[0].external_job_id,
        scheduled_at=fresh[0].scheduled_at,
    )
    mapping = await pg_store.insert_many([same_id, same_key, *fresh, twin, fresh[1]])
    assert mapping == {
        stored.id: stored.id,
        same_key.id: stored.id,
        **{event.id: event.id for event in fresh},
        twin.id: fresh[0].id,
    }
    assert [await pg_store.get(event.id) for event in (stored, *fresh)] == [stored, *fresh]
    assert db.execute("SELECT count(*) FROM event_ids").fetchone() == (size + 1,)
    assert await pg_store.count_by_status() == counted_by_scan(db)


@pytest.mark.parametrize("size", [1, COPY_MIN_BATCH], ids=["arrays", "copy"])
async def test_a_payload_round_trips_as_raw_bytes(pg_store: Store, size: int) -> None:
    events = [make_event(payload=b'\x00\xff{"not": "utf-8"}\xfe  \n') for _ in range(size)]
    events[0].extra = {"trace": "abc", "n": [1, 2.5, None]}
    await pg_store.insert_many(events)
    assert [await pg_store.get(event.id) for event in events] == events


async def test_a_store_that_cannot_connect_is_unavailable() -> None:
    store = PostgresEventStore(postgres_url("nobody", "x", "127.0.0.1", free_port(), "nowhere"))
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_a_store_that_is_not_open_is_unavailable(postgres_dsn: str) -> None:
    store = PostgresEventStore(postgres_dsn)
    with pytest.raises(StoreUnavailable):
        await store.count_by_status(None)


async def test_a_lost_connection_fails_one_call_and_the_pool_recovers(
    pg_store: Store, postgres_dsn: str
) -> None:
    await pg_store.ping()
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    failures = 0
    for _ in range(5):
        try:
            await pg_store.ping()
        except StoreUnavailable:
            failures += 1
    assert failures <= 1  # the pool held one idle connection
    await pg_store.ping()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # The moment or the deployment: the same call may succeed later.
        (psycopg.OperationalError("connection refused"), StoreUnavailable),
        (psycopg_pool.PoolTimeout("no connection in 10s"), StoreUnavailable),
        (psycopg.errors.LockNotAvailable("lock timeout"), StoreUnavailable),
        (psycopg.errors.DeadlockDetected("deadlock"), StoreUnavailable),
        (psycopg.InterfaceError("the connection is closed"), StoreUnavailable),
        (psycopg.errors.ReadOnlySqlTransaction("read-only transaction"), StoreUnavailable),
        (psycopg.errors.InsufficientPrivilege("permission denied"), StoreUnavailable),
        (psycopg.errors.UndefinedTable("no events table"), StoreUnavailable),
        (psycopg.errors.AdminShutdown("terminating connection"), StoreUnavailable),
        # The values sent: sending them again fails the same way.
        (psycopg.errors.UniqueViolation("duplicate key"), StoreRefused),
        (psycopg.errors.InvalidDatetimeFormat("bad time"), StoreRefused),
        (psycopg.errors.ProgramLimitExceeded("index row too big"), StoreRefused),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), StoreRefused),
    ],
)
def test_driver_errors_become_port_errors(error: psycopg.Error, expected: type) -> None:
    translated = translate(error)
    assert isinstance(translated, StoreError)
    assert type(translated) is expected


def _check_violation(db: Db, statement: str, params: tuple[object, ...]) -> psycopg.Error:
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        db.execute(statement, params)
    return caught.value


async def test_a_check_violation_on_the_default_partition_is_unavailable_elsewhere_refused(
    pg_store: Store, db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between the two steps of a partition's creation DEFAULT refuses the period's rows
    # (partitions.create_partitions): such a row is fine, and goes in once the partition is
    # attached. A check a row breaks anywhere else is the row's own fault.
    lower = period_start(datetime.now(UTC), "day") + timedelta(days=20)
    upper = lower + timedelta(days=1)
    waiting = make_event(scheduled_at=lower + timedelta(hours=1))
    today = make_event()
    await pg_store.insert_many([waiting, today])
    assert partition_of(db, "events", waiting.id) == "events_default"
    assert partition_of(db, "events", today.id) != "events_default"
    db.execute(
        "ALTER TABLE events_default ADD CONSTRAINT timefuse_creating_test CHECK"
        f" (scheduled_at < '{lower.isoformat()}' OR scheduled_at >= '{upper.isoformat()}')"
        " NOT VALID"
    )
    fenced = _check_violation(
        db, "UPDATE events SET retry_count = retry_count WHERE id = %s", (waiting.id,)
    )
    assert fenced.diag.table_name == "events_default"
    assert type(translate(fenced)) is StoreUnavailable
    broken = _check_violation(db, "UPDATE events SET status = 'BOGUS' WHERE id = %s", (today.id,))
    assert broken.diag.table_name == partition_of(db, "events", today.id)
    assert type(translate(broken)) is StoreRefused
    # What an ingest consumer sees of an insert into the fenced period, once the store is
    # done waiting for the attach: "unavailable", so the record is retried, not dead-lettered.
    monkeypatch.setattr(postgres_inserts, "ATTACH_RETRIES", 2)
    with pytest.raises(StoreUnavailable):
        await pg_store.insert_many([make_event(scheduled_at=lower + timedelta(hours=2))])


SECRET = "card-4111-1111-1111-1111"


@pytest.mark.parametrize(
    "statement",
    [
        # A check violation: "DETAIL: Failing row contains (..., <payload>)".
        "INSERT INTO refused (n, payload) VALUES (-1, %s)",
        # A unique violation: "DETAIL: Key (payload)=(<payload>) already exists."
        "INSERT INTO refused (n, payload) VALUES (1, %s)",
    ],
    ids=["check", "unique"],
)
def test_a_refusal_keeps_the_rows_values_out_of_its_message(db: Db, statement: str) -> None:
    db.execute("CREATE TEMP TABLE refused (n int CHECK (n > 0), payload text UNIQUE)")
    db.execute("INSERT INTO refused VALUES (1, %s)", (SECRET,))
    with pytest.raises(psycopg.Error) as caught:
        db.execute(statement, (SECRET,))
    # PostgreSQL quotes the row in its DETAIL: what the translation must leave out.
    assert SECRET in (caught.value.diag.message_detail or "")
    translated = translate(caught.value)
    assert isinstance(translated, StoreRefused)
    assert SECRET not in str(translated)
    assert str(translated).startswith("PostgreSQL: ")
    assert caught.value.diag.message_primary in str(translated)


def test_a_refusal_without_diagnostics_drops_the_detail_of_its_text() -> None:
    # An error built by the driver itself carries no diagnostics, only its text.
    error = psycopg.errors.CheckViolation(
        f'new row violates check constraint "c"\nDETAIL:  Failing row contains ({SECRET}).'
    )
    translated = translate(error)
    assert SECRET not in str(translated)
    assert 'violates check constraint "c"' in str(translated)
