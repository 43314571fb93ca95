"""Opening the SQLite database: durability settings, schema and migrations, transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from timefuse.adapters.sqlite import queries
from timefuse.ports.store import StoreError

# The version schema.sql writes into schema_version; bump both together, and add the
# migration from the previous version to MIGRATIONS.
SCHEMA_VERSION = 6

# The script that brings a database at version n - 1 to version n, keyed by n.
MIGRATIONS = {
    2: "0002_listing_redelivery_lease_history.sql",
    3: "0003_claims_and_workers.sql",
    4: "0004_schedules.sql",
    5: "0005_request_control.sql",
    6: "0006_source_listing_and_counts.sql",
}

# UPDATE ... FROM (the batched outcomes) arrived in SQLite 3.33, RETURNING in 3.35; the JSON
# functions the batched statements use are compiled into CPython's sqlite3 in any of these.
MINIMUM_SQLITE = (3, 35, 0)

# How long a statement waits for another process's write lock before SQLITE_BUSY. Inside one
# process the single writer thread never contends with itself; this covers a second process
# (an operator's `timefuse` command) opening the same file.
BUSY_TIMEOUT_MS = 5_000

MEMORY = ":memory:"


def connect(path: str) -> sqlite3.Connection:
    """A configured connection with the schema in place; owned by the calling thread."""
    if sqlite3.sqlite_version_info < MINIMUM_SQLITE:
        raise StoreError(
            f"SQLite {sqlite3.sqlite_version} is too old: timefuse needs 3.35 or later"
        )
    if path != MEMORY:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the sqlite3 module opens no implicit transactions; every write
    # transaction below is an explicit BEGIN IMMEDIATE.
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    try:
        _configure(conn, in_memory=path == MEMORY)
        _prepare_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, *, in_memory: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if not in_memory and str(mode).lower() != "wal":
        # WAL fails on filesystems without shared memory (most network mounts), which is
        # also where fsync can't be trusted: refuse rather than run with weaker guarantees.
        raise StoreError(f"SQLite could not enable WAL mode (got {mode!r}); use a local disk")
    # "Accepted means durable". In WAL mode, synchronous=NORMAL does not fsync the WAL on each
    # commit: a commit survives a crash of the process but may be lost on power failure or an
    # OS crash. FULL fsyncs the WAL at every commit, so a committed insert, and the 202 sent
    # after it, survive both. Batched inserts keep this to one fsync per batch.
    conn.execute("PRAGMA synchronous = FULL")
    # 64 MiB page cache (negative = KiB) for the one connection: the dedup key index takes
    # inserts at random places, and once it outgrows the cache every batch rereads its pages.
    # Memory is only taken as pages are used.
    conn.execute("PRAGMA cache_size = -65536")


def _prepare_schema(conn: sqlite3.Connection) -> None:
    # One write transaction for the check and the DDL (SQLite's DDL is transactional): two
    # processes opening the same file at once can't both create or migrate it, and a failed
    # migration leaves the file at its old version.
    with transaction(conn):
        version = _stored_version(conn)
        if version is None:
            _run_script(conn, "schema.sql")
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"the SQLite database has schema version {version}, newer than this "
                f"timefuse's {SCHEMA_VERSION}: upgrade timefuse to open it"
            )
        else:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                _run_script(conn, MIGRATIONS[target])
        version = _stored_version(conn)
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"the SQLite database has schema version {version}; "
            f"this timefuse expects {SCHEMA_VERSION}"
        )


def _stored_version(conn: sqlite3.Connection) -> int | None:
    if conn.execute(queries.SCHEMA_VERSION_TABLE).fetchone() is None:
        return None
    version: int | None = conn.execute(queries.SCHEMA_VERSION).fetchone()[0]
    return version


def _run_script(conn: sqlite3.Connection, name: str) -> None:
    script = (files("timefuse") / "migrations" / "sqlite" / name).read_text("utf-8")
    # executescript() would commit the open transaction first, so the script runs one
    # statement at a time inside it.
    for statement in _split_statements(script):
        conn.execute(statement)


def _split_statements(script: str) -> list[str]:
    """The statements of an SQL script, each with the comment lines before it."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    leftover = [line for line in pending.splitlines() if line.strip()]
    if any(not line.lstrip().startswith("--") for line in leftover):
        raise StoreError(f"the SQL script ends in an incomplete statement: {pending!r}")
    return statements


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that holds the write lock from its first statement.

    BEGIN IMMEDIATE takes the lock up front: a deferred transaction that reads and then
    writes can fail with SQLITE_BUSY at the write without the busy handler being consulted.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
