"""Translation of sqlite3 errors into the store port's exceptions, done here and only here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from timefuse.ports.store import StoreError, StoreRefused, StoreUnavailable

# Primary result codes that describe the moment, not the request: another process holds the
# lock past busy_timeout, the file can't be opened now, the disk is full or failing. The same
# call may succeed later, so callers may answer 503 and retry.
_TRANSIENT_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_NOMEM,
    }
)


def translate(exc: sqlite3.Error) -> StoreError:
    # Extended codes (SQLITE_IOERR_FSYNC, SQLITE_BUSY_SNAPSHOT...) keep the primary code in
    # their low byte.
    code = getattr(exc, "sqlite_errorcode", None)
    message = f"SQLite: {exc}"
    if code is not None and code & 0xFF in _TRANSIENT_CODES:
        return StoreUnavailable(message)
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        # A constraint the row breaks, a value SQLite can't hold: the values are at fault.
        return StoreRefused(message)
    return StoreError(message)


@contextmanager
def wrap_exceptions() -> Iterator[None]:
    """Re-raise any :class:`sqlite3.Error` as the store port's exception for it."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc) from exc
