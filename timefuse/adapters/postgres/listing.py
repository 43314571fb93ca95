"""The store's filtered work: listings, counts per status, bulk redelivery of dead letters.

Their SQL is assembled from the criteria given, absent ones left out of the text: a term such
as ``(%(from)s IS NULL OR scheduled_at >= %(from)s)`` can neither bound an index range nor
prune partitions. There are few combinations, so each connection keeps a prepared statement
for every one in use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql

from timefuse.adapters.postgres import queries
from timefuse.adapters.postgres.connection import Connection
from timefuse.adapters.postgres.rows import aware, row_to_event
from timefuse.domain.cursor import Cursor
from timefuse.domain.event import EVENT_COLUMN_NAMES
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventPage, EventQuery

_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMN_NAMES))

# Each index holds the listing order after its equality prefix (events_schedule, or
# events_status_schedule with a status), so a page is one range scan per partition from the
# cursor, merged in order and stopped after limit + 1 rows.
_LIST = "SELECT {columns} FROM events WHERE {where} ORDER BY {order} LIMIT %(limit)s"
# Where a bounded page's window ends: the candidates' index entries only (see EventQuery).
_WINDOW_END = (
    "SELECT scheduled_at, id FROM events WHERE {where} ORDER BY {order} OFFSET %(skip)s LIMIT 1"
)

# The earliest matching events first, locked, then updated by id within their scheduled_at range
# (the pattern of queries.CLAIM_DUE: the partitions holding them are found at run time).
_REDELIVER_MATCHING = f"""
WITH chosen AS (
    SELECT id, scheduled_at FROM events
     WHERE {{where}}
     ORDER BY scheduled_at, id
     LIMIT %(limit)s
       FOR UPDATE
)
UPDATE events AS e {queries.REDELIVER_SET}
 WHERE e.id = ANY(ARRAY(SELECT id FROM chosen))
   AND e.scheduled_at >= (SELECT min(scheduled_at) FROM chosen)
   AND e.scheduled_at <= (SELECT max(scheduled_at) FROM chosen)
   AND {{status}}
"""


@dataclass(slots=True)
class _Filter:
    terms: list[sql.Composable] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, term: str | sql.Composable, **params: Any) -> None:
        self.terms.append(sql.SQL(term) if isinstance(term, str) else term)
        self.params.update(params)

    def where(self) -> sql.Composable:
        return sql.SQL(" AND ").join(self.terms) if self.terms else sql.SQL("true")


def _event_filter(
    status: EventStatus | None,
    sources: frozenset[str] | None,
    scheduled_from: datetime | None,
    scheduled_to: datetime | None,
) -> _Filter:
    found = _Filter()
    if status is not None:
        # A literal, not a parameter: the store's sessions plan each statement once for any
        # parameters (connection.configure), and only a written-out status lets that plan
        # weigh how rare the status is (and take events_status_schedule for dead letters).
        found.add(sql.SQL("status = {}").format(sql.Literal(EventStatus(status).value)))
    if sources is not None:
        found.add("source = ANY(%(sources)s::text[])", sources=sorted(sources))
    if scheduled_from is not None:
        found.add("scheduled_at >= %(scheduled_from)s", scheduled_from=aware(scheduled_from))
    if scheduled_to is not None:
        found.add("scheduled_at < %(scheduled_to)s", scheduled_to=aware(scheduled_to))
    return found


def _candidates(query: EventQuery, after: Cursor | None) -> _Filter:
    """The terms an index range answers: status, the scheduled window, the cursor."""
    lower, upper = query.scheduled_from, query.scheduled_to
    if after is not None:
        # Of two bounds on the same side only the tighter goes in: a cursor outside the
        # window excludes nothing the window doesn't.
        if not query.descending and (lower is None or after.scheduled_at >= lower):
            lower = None
        elif query.descending and (upper is None or after.scheduled_at < upper):
            upper = None
        else:
            after = None
    found = _event_filter(query.status, None, lower, upper)
    if after is not None:
        # The plain bound prunes partitions and starts each index range; the row comparison
        # places the page strictly after the cursor (ids compare by code point: COLLATE "C").
        side = "<" if query.descending else ">"
        found.add(
            f"scheduled_at {side}= %(after_at)s"
            f" AND (scheduled_at, id) {side} (%(after_at)s, %(after_id)s)",
            after_at=after.scheduled_at,
            after_id=after.event_id,
        )
    return found


def _checked(query: EventQuery) -> _Filter:
    """The terms checked on each candidate."""
    found = _Filter()
    if query.sources is not None:
        found.add("source = ANY(%(sources)s::text[])", sources=sorted(query.sources))
    if query.delivery_type is not None:
        found.add("delivery_type = %(delivery_type)s", delivery_type=query.delivery_type)
    if query.destination_key is not None:
        found.add("destination_key = %(destination_key)s", destination_key=query.destination_key)
    if query.destination_host is not None:
        host = query.destination_host + ":"
        # left() and substr() count characters, as Python's len does; a port's digit follows.
        found.add(
            "left(destination_key, %(host_length)s) = %(host)s"
            ' AND substr(destination_key, %(host_length)s + 1, 1) COLLATE "C"'
            " BETWEEN '0' AND '9'",
            host=host,
            host_length=len(host),
        )
    if query.destination_prefix is not None:
        found.add(
            "left(destination, %(prefix_length)s) = %(prefix)s",
            prefix=query.destination_prefix,
            prefix_length=len(query.destination_prefix),
        )
    return found


async def list_events(
    conn: Connection, query: EventQuery, limit: int, after: Cursor | None
) -> EventPage:
    if query.sources is not None and not query.sources:
        return EventPage([], None)
    candidates, checked = _candidates(query, after), _checked(query)
    order = "scheduled_at DESC, id DESC" if query.descending else "scheduled_at, id"
    window = query.examine_at_most if checked.terms else None
    end = None
    if window is not None:
        # Where the window ends: an index-only walk over its candidates. A change between
        # this and the page's statement moves the end at most as far as any keyset page moves.
        statement = sql.SQL(_WINDOW_END).format(where=candidates.where(), order=sql.SQL(order))
        cursor = await conn.execute(statement, {**candidates.params, "skip": window - 1})
        end = await cursor.fetchone()
        if end is not None:
            side = ">=" if query.descending else "<="
            candidates.add(
                f"scheduled_at {side} %(end_at)s"
                f" AND (scheduled_at, id) {side} (%(end_at)s, %(end_id)s)",
                end_at=end[0],
                end_id=end[1],
            )
    terms = [*candidates.terms, *checked.terms]
    where = sql.SQL(" AND ").join(terms) if terms else sql.SQL("true")
    statement = sql.SQL(_LIST).format(columns=_COLUMNS, where=where, order=sql.SQL(order))
    params = {**candidates.params, **checked.params, "limit": limit + 1}
    # One row more than the page tells whether another page follows.
    async with conn.cursor(binary=True) as cursor:
        await cursor.execute(statement, params)
        rows = await cursor.fetchall()
    events = [row_to_event(row) for row in rows[:limit]]
    if len(rows) > limit:
        last = events[-1]
        return EventPage(events, Cursor(last.scheduled_at, last.id))
    return EventPage(events, None if end is None else Cursor(aware(end[0]), end[1]))


async def count_by_status(
    conn: Connection, sources: frozenset[str] | None
) -> dict[EventStatus, int]:
    counts = dict.fromkeys(EventStatus, 0)
    if sources is not None and not sources:
        return counts
    if sources is None:
        cursor = await conn.execute(queries.COUNT_BY_STATUS)
    else:
        cursor = await conn.execute(
            queries.COUNT_BY_STATUS_OF_SOURCES, {"sources": sorted(sources)}
        )
    for status, count in await cursor.fetchall():
        counts[EventStatus(status)] = int(count)
    return counts


async def redeliver_matching(
    conn: Connection,
    now: datetime,
    status: EventStatus,
    sources: frozenset[str] | None,
    scheduled: tuple[datetime | None, datetime | None],
    limit: int,
) -> int:
    """Redeliver up to ``limit`` events in ``status`` in one statement; the caller's transaction."""
    if sources is not None and not sources:
        return 0
    found = _event_filter(status, sources, *scheduled)
    statement = sql.SQL(_REDELIVER_MATCHING).format(
        where=found.where(),
        status=sql.SQL("e.status = {}").format(sql.Literal(EventStatus(status).value)),
    )
    cursor = await conn.execute(statement, {**found.params, "now": aware(now), "limit": limit})
    return cursor.rowcount
