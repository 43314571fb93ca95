"""Wake-ups across processes: LISTEN for the notifications inserts send on ``timefuse_due``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import psycopg
import structlog
from psycopg.rows import TupleRow

from timefuse.adapters.postgres.connection import KEEPALIVES
from timefuse.adapters.postgres.queries import DUE_CHANNEL

log = structlog.get_logger("timefuse.postgres")

Notify = Callable[[datetime | None], None]

# How often the listening loop looks at the stop event while no notification arrives.
STOP_CHECK_SECONDS = 0.5
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)


def parse_due(payload: str) -> datetime | None:
    """The due time a notification carries; ``None`` (meaning "look now") if it has none."""
    if not payload:
        return None
    try:
        return datetime.fromisoformat(payload)
    except ValueError:
        return None


async def watch_due(
    url: str, notify: Notify, stop: asyncio.Event, listening: Callable[[bool], None]
) -> None:
    """Call ``notify`` for every notification on the due channel until ``stop`` is set.

    Listens on a dedicated connection and reconnects when it breaks. ``notify(None)`` follows
    every (re)connection, since notifications sent while nobody listened are lost.
    ``listening(True)`` follows each LISTEN, ``listening(False)`` each loss of it.
    """
    failures = 0
    while not stop.is_set():
        try:
            # Keepalives: a half-open connection (a failover, a cut network) is found within
            # about 30 s instead of never, since this connection only ever reads.
            connect = psycopg.AsyncConnection.connect(url, autocommit=True, **KEEPALIVES)
            async with await connect as conn:
                await conn.execute(f"LISTEN {DUE_CHANNEL}")
                failures = 0
                listening(True)
                try:
                    notify(None)
                    await _relay(conn, notify, stop)
                finally:
                    listening(False)
        except psycopg.Error as exc:
            delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
            failures += 1
            log.warning("listening for due events failed; reconnecting", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


async def _relay(
    conn: psycopg.AsyncConnection[TupleRow], notify: Notify, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        async for notification in conn.notifies(timeout=STOP_CHECK_SECONDS):
            notify(parse_due(notification.payload))
