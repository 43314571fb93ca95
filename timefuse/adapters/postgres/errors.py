"""Translation of psycopg errors into the store port's exceptions, done here and only here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg

from timefuse.ports.store import StoreError, StoreRefused, StoreUnavailable

# SQLSTATE classes that blame the values sent: a data exception (a value the type can't hold,
# a NUL in text), an integrity constraint the row breaks, a program limit (an index row too
# big). Sending the same values again fails the same way.
_VALUES_AT_FAULT = ("22", "23", "54")
CHECK_VIOLATION = "23514"
SERIALIZATION_FAILURE = "40001"

_T = TypeVar("_T")


def translate(exc: psycopg.Error) -> StoreError:
    """The port's exception for ``exc``.

    Only errors about the values sent are :class:`StoreRefused`. Everything else describes the
    moment or the deployment (no connection, a read-only or failed-over primary, a missing
    privilege or table, a lock or statement timeout, a partition being created), which the
    same call may get past later: :class:`StoreUnavailable`, so nothing is dead-lettered or
    answered as the client's fault for it.
    """
    message = f"PostgreSQL: {_without_detail(exc)}"
    state = exc.sqlstate or ""
    if state == CHECK_VIOLATION and _about_default_partition(exc):
        # An insert into a period whose partition is being attached right now (see
        # partitions.create_partitions): the row is fine, it goes in once the attach commits.
        return StoreUnavailable(message)
    if state[:2] in _VALUES_AT_FAULT or (not state and isinstance(exc, psycopg.DataError)):
        return StoreRefused(message)
    return StoreUnavailable(message)


def lost_to_a_moved_row(exc: StoreError) -> bool:
    """Whether ``exc`` is a statement's lost race with an update that moved a row it was
    about to lock to another partition (a PATCH of ``scheduled_at``).

    At READ COMMITTED on the primary that is what a serialization failure (40001) means;
    the statement run again takes a fresh snapshot and finds the row where it now is.
    """
    cause = exc.__cause__
    return isinstance(cause, psycopg.Error) and cause.sqlstate == SERIALIZATION_FAILURE


def _about_default_partition(exc: psycopg.Error) -> bool:
    table = getattr(exc.diag, "table_name", None) or ""
    return table.endswith("_default")


def _without_detail(exc: psycopg.Error) -> str:
    # The primary message only: PostgreSQL's DETAIL may quote the row (a payload, say), and
    # the message ends up in logs, answers and dead-letter headers.
    primary = getattr(exc.diag, "message_primary", None)
    return primary or str(exc).split("\nDETAIL:", 1)[0]


@contextmanager
def wrap_exceptions() -> Iterator[None]:
    """Re-raise any :class:`psycopg.Error` as the store port's exception for it."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


async def run_again_while(
    work: Callable[[], Awaitable[_T]],
    passing: Callable[[StoreUnavailable], bool],
    *,
    tries: int,
    pause: float = 0.0,
) -> _T:
    """``work`` (a statement or a whole transaction), run again, ``pause`` seconds apart and
    ``tries`` times at most, while it fails with a :class:`StoreUnavailable` that ``passing``
    says is a passing moment (a race the same work wins when run again)."""
    for tries_left in reversed(range(tries)):
        try:
            return await work()
        except StoreUnavailable as exc:
            if not tries_left or not passing(exc):
                raise
        if pause:
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")
