"""SQLite's errors as the store port sees them: only what the row itself breaks is refused;
what describes the moment (a lock, a read-only or unreachable file) is "unavailable"; anything
else stays a plain store error, which no caller may blame on the row."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from timefuse.adapters.sqlite.errors import translate, wrap_exceptions
from timefuse.ports.store import StoreError, StoreRefused, StoreUnavailable


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE t (a TEXT PRIMARY KEY NOT NULL CHECK (length(a) < 100))")
        conn.execute("INSERT INTO t VALUES ('taken')")
    finally:
        conn.close()
    return path


def raised(action: Callable[[], object]) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        action()
    return caught.value


def insert(path: Path, value: object, timeout: float = 5.0) -> None:
    conn = sqlite3.connect(path, timeout, isolation_level=None)
    try:
        conn.execute("INSERT INTO t VALUES (?)", (value,))
    finally:
        conn.close()


def test_a_read_only_file_is_unavailable(database: Path) -> None:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        error = raised(lambda: conn.execute("INSERT INTO t VALUES ('new')"))
    finally:
        conn.close()
    translated = translate(error)
    assert type(translated) is StoreUnavailable
    assert str(translated) == "SQLite: attempt to write a readonly database"


def test_a_file_another_process_holds_locked_is_unavailable(database: Path) -> None:
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        error = raised(lambda: insert(database, "new", timeout=0))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert type(translate(error)) is StoreUnavailable


def test_a_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    error = raised(lambda: sqlite3.connect(tmp_path / "missing" / "events.db"))
    assert type(translate(error)) is StoreUnavailable


def test_an_extended_code_counts_as_its_primary_code() -> None:
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = sqlite3.SQLITE_IOERR_FSYNC
    assert type(translate(error)) is StoreUnavailable


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("taken", "UNIQUE constraint failed: t.a"),
        (None, "NOT NULL constraint failed: t.a"),
        ("x" * 200, "CHECK constraint failed"),
    ],
)
def test_a_constraint_the_row_breaks_is_refused(database: Path, value: object, reason: str) -> None:
    translated = translate(raised(lambda: insert(database, value)))
    assert type(translated) is StoreRefused
    assert reason in str(translated)


def test_a_value_too_big_for_sqlite_is_refused(database: Path) -> None:
    conn = sqlite3.connect(database, isolation_level=None)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10)
    try:
        error = raised(lambda: conn.execute("INSERT INTO t VALUES (?)", ("x" * 50,)))
    finally:
        conn.close()
    assert type(translate(error)) is StoreRefused


def test_a_missing_table_is_neither_unavailable_nor_the_rows_fault(database: Path) -> None:
    conn = sqlite3.connect(database)
    try:
        error = raised(lambda: conn.execute("INSERT INTO missing VALUES (1)"))
    finally:
        conn.close()
    translated = translate(error)
    assert type(translated) is StoreError
    assert not isinstance(translated, StoreRefused | StoreUnavailable)


def test_wrapped_errors_are_raised_translated_with_the_drivers_error_as_cause(
    database: Path,
) -> None:
    with pytest.raises(StoreRefused) as caught, wrap_exceptions():
        insert(database, "taken")
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
