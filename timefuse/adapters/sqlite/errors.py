"""Translation of sqlite3 errors into the store port's exceptions, done here and only here."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from timefuse.ports.store import StoreError, StoreUnavailable

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
    }
)


def translate(exc: sqlite3.Error) -> StoreError:
    # Extended codes (SQLITE_IOERR_FSYNC, SQLITE_BUSY_SNAPSHOT...) keep the primary code in
    # their low byte.
    code = getattr(exc, "sqlite_errorcode", None)
    message = f"SQLite: {exc}"
    if code is not None and code & 0xFF in _TRANSIENT_CODES:
        return StoreUnavailable(message)
    return StoreError(message)


@contextmanager
def wrap_exceptions() -> Iterator[None]:
    """Re-raise any :class:`sqlite3.Error` as :class:`StoreUnavailable` or :class:`StoreError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc) from exc
