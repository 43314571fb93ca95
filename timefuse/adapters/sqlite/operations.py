"""The store's work, as plain functions run on the store's single SQLite thread.

Each function takes the connection and, where it writes, "now" as microseconds: the caller
reads the clock on the SQLite thread, when the work actually runs, not when it was queued.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from timefuse.adapters.sqlite import queries
from timefuse.adapters.sqlite.connection import transaction
from timefuse.adapters.sqlite.listing import sources_term
from timefuse.adapters.sqlite.rows import (
    attempt_json_row,
    event_to_row,
    from_micros,
    json_row_to_event,
    optional_micros,
    row_to_attempt,
    row_to_event,
    to_micros,
)
from timefuse.domain.event import Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus, check_transition
from timefuse.ports.store import (
    AttemptRecord,
    CancelResult,
    OutcomeUpdate,
    RedeliverResult,
    StoreError,
)

# Bound parameters per IN (...) list: far below SQLite's limit (32766, or 999 before 3.32).
_IN_CHUNK = 500


def insert_many(conn: sqlite3.Connection, events: Sequence[Event]) -> dict[str, str]:
    rows = [event_to_row(event) for event in events]
    with transaction(conn):
        inserted = conn.executemany(queries.INSERT_EVENT, rows).rowcount
        if inserted == len(events):
            # The common case: nothing was a duplicate, every id maps to itself.
            return {event.id: event.id for event in events}
        return _resolve_stored_ids(conn, events)


def _resolve_stored_ids(conn: sqlite3.Connection, events: Sequence[Event]) -> dict[str, str]:
    # An event whose id is stored (inserted now, or a duplicate id) maps to itself; any other
    # was skipped for its dedup key and maps to the event holding that key.
    ids = list(dict.fromkeys(event.id for event in events))
    stored: set[str] = set()
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        stored.update(row[0] for row in conn.execute(queries.STORED_IDS.format(marks=marks), chunk))
    resolved: dict[str, str] = {}
    for event in events:
        if event.id in stored:
            resolved[event.id] = event.id
            continue
        key = (event.external_job_id, event.source, to_micros(event.scheduled_at))
        row = conn.execute(queries.ID_BY_DEDUP_KEY, key).fetchone()
        if row is None:
            raise StoreError(f"event {event.id} was neither inserted nor a duplicate")
        resolved[event.id] = row[0]
    return resolved


def claim_due(
    conn: sqlite3.Connection, now: int, worker_id: str, limit: int, lease_micros: int
) -> str:
    """The claimed rows as ``queries.CLAIMED_EVENTS_JSON`` text, for :func:`claimed_events`.

    The text is decoded by the caller, off this thread: Python work here holds the GIL in
    turns with the event loop, and each turn can wait a whole switch interval.
    """
    # Three statements of one result row each, not UPDATE ... RETURNING's row per event (see
    # "Batched statements" in queries.py). BEGIN IMMEDIATE holds the write lock from the
    # first, so the rows found are the rows claimed and the rows read.
    params = {"worker": worker_id, "expires": now + lease_micros, "now": now, "limit": limit}
    with transaction(conn):
        rowids: str = conn.execute(queries.DUE_ROWIDS, params).fetchone()[0]
        if rowids == "[]":
            return rowids
        conn.execute(queries.CLAIM_ROWIDS, {**params, "rowids": rowids})
        claimed: str = conn.execute(queries.CLAIMED_EVENTS_JSON, {"rowids": rowids}).fetchone()[0]
    return claimed


def claimed_events(text: str) -> tuple[list[Event], list[str]]:
    """The events of :func:`claim_due`'s text, and the ids of any to read again with
    :func:`get` (a REAL the text can't carry exactly; see rows.json_row_to_event)."""
    events: list[Event] = []
    reread: list[str] = []
    for row in json.loads(text):
        try:
            events.append(
                json_row_to_event(row, queries.JSON_REAL_POSITIONS, queries.JSON_PAYLOAD_POSITION)
            )
        except ValueError:
            reread.append(row[0])
    return events, reread


def outcome_batches(updates: Sequence[OutcomeUpdate]) -> tuple[str, str]:
    """The attempt and outcome batches of :func:`record_outcomes`, built by the caller off the
    SQLite thread (see :func:`claim_due`)."""
    # Only the first outcome per event can apply (it clears the lease), so later ones for the
    # same event are dropped here instead of leaving history rows for outcomes that didn't.
    # The batched statements also rely on this: each event id appears once in a batch.
    unique: dict[str, OutcomeUpdate] = {}
    for update in updates:
        unique.setdefault(update.event_id, update)
    attempts = [attempt_json_row(u.event_id, u.attempt) for u in unique.values()]
    outcomes = [_outcome_row(u) for u in unique.values()]
    return _json(attempts), _json(outcomes)


def record_outcomes(
    conn: sqlite3.Connection, now: int, worker_id: str, attempts: str, outcomes: str
) -> int:
    with transaction(conn):
        # Attempts first: they see the leases the outcomes are about to clear.
        conn.execute(queries.INSERT_ATTEMPTS_IF_LEASED, {"batch": attempts, "owner": worker_id})
        params = {"batch": outcomes, "owner": worker_id, "now": now}
        return conn.execute(queries.APPLY_OUTCOMES, params).rowcount


def _outcome_row(update: OutcomeUpdate) -> list[Any]:
    """One element of ``queries.APPLY_OUTCOMES``'s batch."""
    return [
        update.event_id,
        # An outcome must end the claim: PROCESSING here would leave an event with no lease,
        # which no claim or lease recovery would ever pick up again.
        check_transition(EventStatus.PROCESSING, EventStatus(update.status)).value,
        update.retry_count,
        update.last_error,
        optional_micros(update.next_attempt_at),
        optional_micros(update.executed_at),
        # The claim the outcome is about: a later claim of the same event has counted more.
        update.attempt.attempt,
    ]


def _json(batch: list[Any]) -> str:
    # allow_nan=False: SQLite's JSON parser rejects NaN/Infinity; fail here, with the value.
    return json.dumps(batch, separators=(",", ":"), allow_nan=False)


def reschedule(
    conn: sqlite3.Connection, now: int, worker_id: str, event_ids: str, due_at: int
) -> int:
    """Put claimed events back to PENDING; ``event_ids`` is :func:`id_batch` text."""
    params = {"event_ids": event_ids, "owner": worker_id, "due_at": due_at, "now": now}
    with transaction(conn):
        return conn.execute(queries.RESCHEDULE_MANY, params).rowcount


def id_batch(event_ids: Sequence[str]) -> str:
    return _json(list(event_ids))


def recover_expired_leases(conn: sqlite3.Connection, now: int) -> int:
    params = {"now": now, "error": LEASE_EXPIRED_ERROR, "outcome": OutcomeKind.RETRIABLE.value}
    with transaction(conn):
        conn.execute(queries.RECORD_EXPIRED_ATTEMPTS, params)
        return conn.execute(queries.RECOVER_EXPIRED_LEASES, params).rowcount


def redeliver(conn: sqlite3.Connection, now: int, event_id: str) -> RedeliverResult:
    # One transaction, like cancel: "not redeliverable" and "not found" describe one moment.
    with transaction(conn):
        if conn.execute(queries.REDELIVER, {"event_id": event_id, "now": now}).rowcount:
            return RedeliverResult.REDELIVERED
        exists = conn.execute(queries.EXISTS, (event_id,)).fetchone() is not None
    return RedeliverResult.NOT_REDELIVERABLE if exists else RedeliverResult.NOT_FOUND


def cancel(conn: sqlite3.Connection, now: int, event_id: str) -> CancelResult:
    # One transaction, so "not pending" and "not found" describe the same moment.
    with transaction(conn):
        if conn.execute(queries.CANCEL, {"event_id": event_id, "now": now}).rowcount:
            return CancelResult.CANCELLED
        exists = conn.execute(queries.EXISTS, (event_id,)).fetchone() is not None
    return CancelResult.NOT_PENDING if exists else CancelResult.NOT_FOUND


def _of_sources(sources: frozenset[str] | None) -> tuple[str, dict[str, Any]]:
    """The ``{sources}`` term of the by-external-id statements, and its parameters."""
    if sources is None:
        return "", {}
    term, names = sources_term(sources)
    return f" AND {term}", names


def cancel_by_external_id(
    conn: sqlite3.Connection, now: int, external_job_id: str, sources: frozenset[str] | None
) -> int:
    if sources is not None and not sources:
        return 0
    term, names = _of_sources(sources)
    params = {"external_job_id": external_job_id, "now": now, **names}
    with transaction(conn):
        return conn.execute(queries.CANCEL_BY_EXTERNAL_ID.format(sources=term), params).rowcount


def get(conn: sqlite3.Connection, event_id: str) -> Event | None:
    row = conn.execute(queries.GET, (event_id,)).fetchone()
    return None if row is None else row_to_event(row)


def find_by_external_id(
    conn: sqlite3.Connection, external_job_id: str, limit: int, sources: frozenset[str] | None
) -> list[Event]:
    if sources is not None and not sources:
        return []
    term, names = _of_sources(sources)
    params = {"external_job_id": external_job_id, "limit": limit, **names}
    rows = conn.execute(queries.FIND_BY_EXTERNAL_ID.format(sources=term), params).fetchall()
    return [row_to_event(row) for row in rows]


def next_due_at(conn: sqlite3.Connection) -> datetime | None:
    value = conn.execute(queries.NEXT_DUE_AT).fetchone()[0]
    return None if value is None else from_micros(value)


def attempts(conn: sqlite3.Connection, event_id: str) -> list[AttemptRecord]:
    return [row_to_attempt(row) for row in conn.execute(queries.ATTEMPTS, (event_id,))]


def delete_terminal_batch(conn: sqlite3.Connection, cutoff: int, batch_size: int) -> int:
    with transaction(conn):
        ids = conn.execute(queries.OLD_TERMINAL_IDS, (cutoff, batch_size)).fetchall()
        if ids:
            conn.executemany(queries.DELETE_ATTEMPTS_OF_EVENT, ids)
            conn.executemany(queries.DELETE_EVENT, ids)
    return len(ids)


def ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()
