"""The store's filtered work: listings, counts per status, bulk redelivery.

Their SQL is assembled from the criteria given: a term such as ``(:from IS NULL OR
scheduled_at >= :from)`` would keep SQLite from using the bound as an index range, so absent
criteria are left out of the text instead. There are few combinations, so the connection's
statement cache still holds them all.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from timefuse.adapters.sqlite import queries
from timefuse.adapters.sqlite.connection import transaction
from timefuse.adapters.sqlite.rows import (
    EVENT_COLUMN_NAMES,
    from_micros,
    optional_micros,
    row_to_event,
    to_micros,
)
from timefuse.domain.cursor import Cursor
from timefuse.domain.status import EventStatus
from timefuse.ports.store import EventPage, EventQuery

_COLUMNS = ", ".join(EVENT_COLUMN_NAMES)


@dataclass(slots=True)
class _Filter:
    terms: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, term: str, **params: Any) -> None:
        self.terms.append(term)
        self.params.update(params)

    def where(self) -> str:
        return " AND ".join(self.terms) if self.terms else "1"


def sources_term(sources: frozenset[str]) -> tuple[str, dict[str, Any]]:
    # Sorted, so the same set always gives the same text and parameters.
    names = {f"source_{i}": source for i, source in enumerate(sorted(sources))}
    return f"source IN ({', '.join(f':{name}' for name in names)})", names


def _event_filter(
    status: EventStatus | None,
    sources: frozenset[str] | None,
    scheduled_from: int | None,
    scheduled_to: int | None,
) -> _Filter:
    found = _Filter()
    if status is not None:
        found.add("status = :status", status=EventStatus(status).value)
    if sources is not None:
        term, names = sources_term(sources)
        found.add(term, **names)
    if scheduled_from is not None:
        found.add("scheduled_at >= :scheduled_from", scheduled_from=scheduled_from)
    if scheduled_to is not None:
        found.add("scheduled_at < :scheduled_to", scheduled_to=scheduled_to)
    return found


def _candidates(query: EventQuery, after: Cursor | None) -> _Filter:
    """The terms an index range answers: status, the scheduled window, the cursor."""
    lower = optional_micros(query.scheduled_from)
    upper = optional_micros(query.scheduled_to)
    position: tuple[int, str] | None = None
    if after is not None:
        after_at = to_micros(after.scheduled_at)
        # Of two bounds on the same side only the tighter goes into the text: one bound is
        # one index seek. A cursor outside the window excludes nothing the window doesn't.
        if not query.descending and (lower is None or after_at >= lower):
            lower, position = None, (after_at, after.event_id)
        elif query.descending and (upper is None or after_at < upper):
            upper, position = None, (after_at, after.event_id)
    found = _event_filter(query.status, None, lower, upper)
    if position is not None:
        found.add(
            f"(scheduled_at, id) {'<' if query.descending else '>'} (:after_at, :after_id)",
            after_at=position[0],
            after_id=position[1],
        )
    return found


def _checked(query: EventQuery) -> _Filter:
    """The terms checked on each candidate."""
    found = _Filter()
    if query.sources is not None:
        term, names = sources_term(frozenset(query.sources))
        found.add(term, **names)
    if query.delivery_type is not None:
        found.add("delivery_type = :delivery_type", delivery_type=query.delivery_type)
    if query.destination_key is not None:
        found.add("destination_key = :destination_key", destination_key=query.destination_key)
    if query.destination_host is not None:
        host = query.destination_host + ":"
        # substr counts characters, as Python's len does; a port's first digit follows.
        found.add(
            "substr(destination_key, 1, :host_length) = :host"
            " AND substr(destination_key, :host_length + 1, 1) BETWEEN '0' AND '9'",
            host=host,
            host_length=len(host),
        )
    if query.destination_prefix is not None:
        found.add(
            "substr(destination, 1, :prefix_length) = :prefix",
            prefix=query.destination_prefix,
            prefix_length=len(query.destination_prefix),
        )
    return found


def list_events(
    conn: sqlite3.Connection, query: EventQuery, limit: int, after: Cursor | None
) -> EventPage:
    if query.sources is not None and not query.sources:
        return EventPage([], None)
    candidates, checked = _candidates(query, after), _checked(query)
    # Each index holds the listing order after its equality prefix, so a page is one range
    # scan (backwards when descending) that stops after limit + 1 rows; pinned, as a new
    # database has no statistics.
    index = "events_schedule" if query.status is None else "events_status_schedule"
    order = "scheduled_at DESC, id DESC" if query.descending else "scheduled_at, id"
    window = query.examine_at_most if checked.terms else None
    if window is None:
        rows = _matching(conn, index, order, candidates, checked, limit)
        return _page(rows, limit, None)
    # One read transaction: the window's end and its matches come from one snapshot.
    conn.execute("BEGIN")
    try:
        # Where the window ends: an index-only walk over its candidates.
        sql = (
            f"SELECT scheduled_at, id FROM events INDEXED BY {index}"
            f" WHERE {candidates.where()} ORDER BY {order} LIMIT 1 OFFSET :skip"
        )
        end = conn.execute(sql, {**candidates.params, "skip": window - 1}).fetchone()
        if end is not None:
            # The same range, stopped at the window's end.
            side = ">=" if query.descending else "<="
            candidates.add(
                f"scheduled_at {side} :end_at AND (scheduled_at, id) {side} (:end_at, :end_id)",
                end_at=end[0],
                end_id=end[1],
            )
        rows = _matching(conn, index, order, candidates, checked, limit)
    finally:
        conn.execute("COMMIT")
    return _page(rows, limit, None if end is None else Cursor(from_micros(end[0]), end[1]))


def _matching(
    conn: sqlite3.Connection,
    index: str,
    order: str,
    candidates: _Filter,
    checked: _Filter,
    limit: int,
) -> list[Any]:
    where = " AND ".join(candidates.terms + checked.terms) or "1"
    sql = f"SELECT {_COLUMNS} FROM events INDEXED BY {index} WHERE {where} ORDER BY {order}"
    # One row more than the page tells whether another page follows.
    params = {**candidates.params, **checked.params, "limit": limit + 1}
    return conn.execute(sql + " LIMIT :limit", params).fetchall()


def _page(rows: list[Any], limit: int, window_end: Cursor | None) -> EventPage:
    events = [row_to_event(row) for row in rows[:limit]]
    if len(rows) > limit:
        last = events[-1]
        return EventPage(events, Cursor(last.scheduled_at, last.id))
    return EventPage(events, window_end)


def count_by_status(
    conn: sqlite3.Connection, sources: frozenset[str] | None
) -> dict[EventStatus, int]:
    counts = dict.fromkeys(EventStatus, 0)
    if sources is not None and not sources:
        return counts
    found = _event_filter(None, sources, None, None)
    sql = f"SELECT status, COUNT(*) FROM events WHERE {found.where()} GROUP BY status"
    for status, count in conn.execute(sql, found.params):
        counts[EventStatus(status)] = count
    return counts


def redeliver_matching(
    conn: sqlite3.Connection,
    now: int,
    status: EventStatus,
    sources: frozenset[str] | None,
    scheduled: tuple[int | None, int | None],
    limit: int,
) -> int:
    if sources is not None and not sources:
        return 0
    found = _event_filter(status, sources, *scheduled)
    sql = (
        f"UPDATE events {queries.REDELIVER_SET} WHERE rowid IN ("
        f"SELECT rowid FROM events INDEXED BY events_status_schedule WHERE {found.where()}"
        " ORDER BY scheduled_at, id LIMIT :limit)"
    )
    with transaction(conn):
        return conn.execute(sql, {**found.params, "now": now, "limit": limit}).rowcount
