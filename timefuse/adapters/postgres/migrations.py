"""Applying the versioned SQL files of ``timefuse/migrations/postgres`` in order, once."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from psycopg import errors

from timefuse.adapters.postgres import queries
from timefuse.adapters.postgres.connection import Connection
from timefuse.domain.destination import destination_key

# Any fixed number, the same in every process: pg_advisory_xact_lock serialises migrate()
# calls across processes, so two starting at once apply each migration exactly once.
MIGRATION_LOCK_KEY = 0x74696D6566_01

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# The runner's own bookkeeping, created before any migration runs; schema.sql repeats it.
CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS timefuse_schema_version (
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT timefuse_schema_version_pkey PRIMARY KEY (version)
)
"""
CURRENT_VERSION = "SELECT COALESCE(max(version), 0) FROM timefuse_schema_version"
RECORD_VERSION = "INSERT INTO timefuse_schema_version (version, name) VALUES (%s, %s)"

# A migration that locks a table a live claim or write already holds, while that one waits for
# a lock the migration took, is chosen as a deadlock's victim now and then: it is applied again,
# from the start (its transaction was rolled back), this many times in all.
MIGRATION_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir() -> Traversable:
    return files("timefuse").joinpath("migrations", "postgres")


def load_migrations() -> list[Migration]:
    """Every migration file, in version order."""
    found: list[Migration] = []
    for entry in migrations_dir().iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"PostgreSQL migrations must be numbered 1..n, found {versions}")
    return found


def schema_snapshot() -> str:
    """``schema.sql``: the schema every migration produces, in one file, for reading and tests."""
    return migrations_dir().joinpath("schema.sql").read_text(encoding="utf-8")


async def schema_version(conn: Connection) -> int:
    """The version the database's schema is at; 0 when timefuse never migrated it."""
    cursor = await conn.execute("SELECT to_regclass('timefuse_schema_version') IS NOT NULL")
    row = await cursor.fetchone()
    if not (row and row[0]):
        return 0
    cursor = await conn.execute(CURRENT_VERSION)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def apply_migrations(conn: Connection, *, target: int | None = None) -> list[str]:
    """Apply the migrations the database lacks (up to ``target``), in one transaction (tried
    again from the start when PostgreSQL aborts it as a deadlock's victim).

    Returns the names of those applied. DDL is transactional in PostgreSQL, so a failing
    migration leaves the schema as it was.
    """
    migrations = [m for m in load_migrations() if target is None or m.version <= target]
    attempt = 1
    while True:
        try:
            return await _apply(conn, migrations)
        except errors.DeadlockDetected:
            if attempt == MIGRATION_ATTEMPTS:
                raise
        await asyncio.sleep(0.1 * attempt)
        attempt += 1


async def _apply(conn: Connection, migrations: list[Migration]) -> list[str]:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(CREATE_VERSION_TABLE)
        current = await schema_version(conn)
        applied: list[str] = []
        for migration in migrations:
            if migration.version <= current:
                continue
            await conn.execute(migration.sql.encode())
            await conn.execute(RECORD_VERSION, (migration.version, migration.name))
            applied.append(migration.name)
    return applied


async def fill_destination_keys(conn: Connection) -> int:
    """Give the live events stored before destination keys existed their key (SQL can't
    compute it: :func:`timefuse.domain.destination.destination_key` does); how many."""
    if await schema_version(conn) < _DESTINATION_KEYS_VERSION:
        return 0
    filled = 0
    while True:
        rows = await (await conn.execute(queries.MISSING_DESTINATION_KEYS)).fetchall()
        if not rows:
            return filled
        await conn.execute(
            queries.SET_DESTINATION_KEYS,
            {
                "ids": [row[0] for row in rows],
                "scheduled": [row[1] for row in rows],
                "keys": [destination_key(row[2], row[3]) or "?" for row in rows],
            },
        )
        filled += len(rows)


# The migration that added events.destination_key.
_DESTINATION_KEYS_VERSION = 4
