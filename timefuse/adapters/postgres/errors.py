"""Translation of psycopg errors into the store port's exceptions, done here and only here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from timefuse.ports.store import StoreError, StoreUnavailable


def translate(exc: psycopg.Error) -> StoreError:
    # OperationalError covers what describes the moment rather than the request: no
    # connection, server shutting down, pool timeout or closed pool (psycopg_pool's
    # exceptions derive from it), lock or statement timeouts, deadlocks and serialization
    # failures, too many connections. InterfaceError is a connection psycopg already knows is
    # broken. The same call may succeed later, so callers may answer 503 and retry.
    message = f"PostgreSQL: {exc}"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(message)
    return StoreError(message)


@contextmanager
def wrap_exceptions() -> Iterator[None]:
    """Re-raise any :class:`psycopg.Error` as :class:`StoreUnavailable` or :class:`StoreError`."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc
