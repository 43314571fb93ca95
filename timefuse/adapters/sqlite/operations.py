"""The store's work, as plain functions run on the store's single SQLite thread.

Each function takes the connection and, where it writes, "now" as microseconds: the caller
reads the clock on the SQLite thread, when the work actually runs, not when it was queued.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from timefuse.adapters.sqlite import queries
from timefuse.adapters.sqlite.connection import transaction
from timefuse.adapters.sqlite.listing import sources_term
from timefuse.adapters.sqlite.rows import (
    event_to_row,
    from_micros,
    json_row_to_event,
    micros_of_seconds,
    optional_micros,
    row_to_attempt,
    row_to_event,
    to_micros,
)
from timefuse.domain.callback import lease_expiry_callback
from timefuse.domain.destination import destination_key
from timefuse.domain.event import AMENDED_COLUMN_NAMES, EVENT_COLUMN_NAMES, Event
from timefuse.domain.lease import LEASE_EXPIRED_ERROR
from timefuse.domain.outcome import OutcomeKind
from timefuse.domain.status import EventStatus
from timefuse.ports.store import (
    AmendBasis,
    AmendResult,
    AttemptRecord,
    CancelResult,
    ClaimRef,
    ClaimRequest,
    DueFilter,
    MoveDueResult,
    OutcomeUpdate,
    RedeliverResult,
    StoreError,
    WorkerBeat,
    WorkerRecord,
)

# Bound parameters per IN (...) list: far below SQLite's limit (32766, or 999 before 3.32).
_IN_CHUNK = 500
# A claim within budgets looks at this many due rows per event it may take.
SCAN_FACTOR = 4


def dumps(batch: Any) -> str:
    # allow_nan=False: SQLite's JSON parser rejects NaN/Infinity; fail here, with the value.
    return json.dumps(batch, separators=(",", ":"), allow_nan=False)


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


def due_terms(due: DueFilter) -> tuple[str, dict[str, Any]]:
    """The due filter's terms for the ``{filters}`` of the due statements, and parameters."""
    terms, params = "", {}
    if due.delivery_types is not None:
        terms += queries.TYPES_TERM
        params["types"] = dumps(sorted(due.delivery_types))
    excluded = sorted(key for key in due.excluded_destinations if "\x1f" not in key)
    held = sorted(key for key in due.excluded_destinations if "\x1f" in key)
    if excluded:
        terms += queries.EXCLUDED_TERM
        params["excluded"] = dumps(excluded)
    if held:
        terms += queries.HELD_TERM
        params["held"] = dumps(held)
    return terms, params


def claim(conn: sqlite3.Connection, now: int, request: ClaimRequest) -> str:
    """The claimed rows as ``queries.CLAIMED_EVENTS_JSON`` text, for :func:`claimed_events`.

    The text is decoded by the caller, off this thread: Python work here holds the GIL in
    turns with the event loop, and each turn can wait a whole switch interval.
    """
    terms, params = due_terms(request.due)
    params.update(
        worker=request.worker,
        expires=now + micros_of_seconds(request.lease_seconds),
        now=now,
        limit=request.limit,
    )
    if request.budgets or request.default_budget is not None:
        statement = queries.DUE_ROWIDS_IN_BUDGETS.format(filters=terms)
        params["scan"] = request.limit * SCAN_FACTOR
        params["budgets"] = dumps([[key, value] for key, value in request.budgets.items()])
        params["default_budget"] = request.default_budget
    else:
        statement = queries.DUE_ROWIDS.format(filters=terms)
    # BEGIN IMMEDIATE holds the write lock from the first statement, so the rows found are
    # the rows claimed and the rows read.
    with transaction(conn):
        rowids: str = conn.execute(statement, params).fetchone()[0]
        if rowids == "[]":
            return rowids
        conn.execute(queries.CLAIM_ROWIDS, {**params, "rowids": rowids})
        claimed: str = conn.execute(queries.CLAIMED_EVENTS_JSON, {"rowids": rowids}).fetchone()[0]
    return claimed


def claimed_events(text: str) -> tuple[list[Event], list[str]]:
    """The events of :func:`claim`'s text, and the ids of any to read again with :func:`get`
    (a REAL the text can't carry exactly; see rows.json_row_to_event)."""
    events: list[Event] = []
    reread: list[str] = []
    for row in json.loads(text):
        try:
            events.append(json_row_to_event(row))
        except ValueError:
            reread.append(row[0])
    return events, reread


def next_due_at(conn: sqlite3.Connection, due: DueFilter) -> datetime | None:
    terms, params = due_terms(due)
    value = conn.execute(queries.NEXT_DUE_AT.format(filters=terms), params).fetchone()[0]
    return None if value is None else from_micros(value)


def count_due_by_type(conn: sqlite3.Connection, now: int) -> dict[str, int]:
    return dict(conn.execute(queries.DUE_BY_TYPE, {"now": now}).fetchall())


def outcome_batch(updates: Sequence[OutcomeUpdate]) -> str:
    """The JSON batch of ``queries.OUTCOME_FIELDS`` rows (built on the event loop)."""
    rows = []
    for update in updates:
        record = update.attempt
        delay = update.retry_delay_seconds
        rows.append(
            [
                update.ref.event_id,
                update.ref.claim,
                update.ref.worker,
                update.status.value,
                update.retry_count,
                update.last_error,
                None if delay is None else micros_of_seconds(delay),
                optional_micros(update.executed_at),
                record.attempt,
                to_micros(record.started_at),
                record.duration_ms,
                OutcomeKind(record.outcome).value,
                record.status_code,
                record.error,
            ]
        )
    return dumps(rows)


def callback_rows(updates: Sequence[OutcomeUpdate]) -> dict[str, tuple[Any, ...]]:
    """The rows of the updates' callbacks, by the id of the event each reports on (built on
    the event loop, like :func:`outcome_batch`)."""
    return {
        update.event_id: event_to_row(update.callback)
        for update in updates
        if update.callback is not None
    }


def record_outcomes(
    conn: sqlite3.Connection,
    now: int,
    batch: str,
    callbacks: Mapping[str, tuple[Any, ...]],
) -> frozenset[str]:
    with transaction(conn):
        # Which apply, then their attempts: all three see the claims the outcomes end.
        (held,) = conn.execute(queries.HELD_OUTCOME_IDS_JSON, {"batch": batch}).fetchone()
        conn.execute(queries.INSERT_ATTEMPTS_IF_HELD, {"batch": batch})
        conn.execute(queries.APPLY_OUTCOMES, {"batch": batch, "now": now})
        applied = frozenset(json.loads(held))
        if callbacks:
            # The notices of the outcomes that applied, with them; one already stored (its id
            # or dedup key) stays as it is.
            rows = [row for event_id, row in callbacks.items() if event_id in applied]
            conn.executemany(queries.INSERT_EVENT, rows)
    return applied


def ref_batch(refs: Sequence[ClaimRef]) -> str:
    return dumps([[ref.event_id, ref.claim, ref.worker] for ref in refs])


def hand_back(conn: sqlite3.Connection, now: int, refs: str, delay: int) -> int:
    params = {"refs": refs, "due_at": now + delay, "now": now}
    with transaction(conn):
        return conn.execute(queries.HAND_BACK, params).rowcount


def extend_leases(conn: sqlite3.Connection, now: int, refs: str, lease: int) -> int:
    with transaction(conn):
        return conn.execute(queries.EXTEND_LEASES, {"refs": refs, "expires": now + lease}).rowcount


def recover_lost_claims(
    conn: sqlite3.Connection, now: int, dead: Collection[str], silent_before: int | None
) -> int:
    """``silent_before``: when given, a worker of ``dead`` is dead only if its heartbeat row
    says it was last seen before then, read under the write lock heartbeats need too."""
    params = {
        "now": now,
        "dead": dumps(sorted(dead)),
        "error": LEASE_EXPIRED_ERROR,
        "outcome": OutcomeKind.RETRIABLE.value,
    }
    with transaction(conn):
        if silent_before is not None:
            still_silent = conn.execute(
                queries.SILENT_WORKERS, {"dead": params["dead"], "before": silent_before}
            )
            params["dead"] = dumps(sorted(row[0] for row in still_silent))
        calling_back = [
            row[0] for row in conn.execute(queries.LOST_LAST_ATTEMPTS_CALLING_BACK, params)
        ]
        conn.execute(queries.RECORD_LOST_ATTEMPTS, params)
        recovered = conn.execute(queries.RECOVER_LOST_CLAIMS, params).rowcount
        notices = []
        for event_id in calling_back:
            row = conn.execute(queries.GET, (event_id,)).fetchone()
            notice = lease_expiry_callback(row_to_event(row), now=from_micros(now))
            if notice is not None:
                notices.append(event_to_row(notice))
        # A notice already stored (its id) stays as it is.
        conn.executemany(queries.INSERT_EVENT, notices)
        return recovered


def acquire_leadership(
    conn: sqlite3.Connection, now: int, role: str, holder: str, ttl: int
) -> bool:
    params = {"role": role, "holder": holder, "expires": now + ttl, "now": now}
    with transaction(conn):
        return conn.execute(queries.ACQUIRE_LEADERSHIP, params).rowcount > 0


def release_leadership(conn: sqlite3.Connection, role: str, holder: str) -> None:
    with transaction(conn):
        conn.execute(queries.RELEASE_LEADERSHIP, {"role": role, "holder": holder})


def heartbeat(conn: sqlite3.Connection, now: int, beat: WorkerBeat) -> None:
    params = {
        "worker": beat.worker,
        "roles": ",".join(beat.roles),
        "started_at": to_micros(beat.started_at),
        "now": now,
        "in_flight": beat.in_flight,
    }
    with transaction(conn):
        conn.execute(queries.HEARTBEAT, params)


def workers(conn: sqlite3.Connection, now: int) -> list[WorkerRecord]:
    return [
        WorkerRecord(
            worker=worker,
            roles=tuple(role for role in roles.split(",") if role),
            started_at=from_micros(started),
            last_seen=from_micros(seen),
            silent_seconds=(now - seen) / 1_000_000,
            in_flight=in_flight,
        )
        for worker, roles, started, seen, in_flight in conn.execute(queries.WORKERS)
    ]


def forget_workers(conn: sqlite3.Connection, limit: int) -> int:
    with transaction(conn):
        return conn.execute(queries.FORGET_WORKERS, {"limit": limit}).rowcount


def _statuses(statuses: Collection[EventStatus]) -> str:
    # Literals from the domain's enum, never from a caller's text.
    return ", ".join(f"'{EventStatus(status).value}'" for status in sorted(statuses))


def _when(statuses: Collection[EventStatus]) -> str:
    return f"status IN ({_statuses(statuses)})" if statuses else "0"


def _of_sources(sources: frozenset[str] | None) -> tuple[str, dict[str, Any]]:
    """The ``{sources}`` term of the statements that take one, and its parameters."""
    if sources is None:
        return "", {}
    term, names = sources_term(sources)
    return f" AND {term}", names


def _visible(conn: sqlite3.Connection, event_id: str, sources: frozenset[str] | None) -> bool:
    row = conn.execute(queries.SOURCE_OF, (event_id,)).fetchone()
    return row is not None and (sources is None or row[0] in sources)


def cancel(
    conn: sqlite3.Connection,
    now: int,
    event_id: str,
    sources: frozenset[str] | None,
    when: Collection[EventStatus],
) -> CancelResult:
    term, names = _of_sources(sources)
    statement = queries.CANCEL.format(when=_when(when), sources=term)
    # One transaction, so "not pending" and "not found" describe the same moment.
    with transaction(conn):
        if conn.execute(statement, {"event_id": event_id, "now": now, **names}).rowcount:
            return CancelResult.CANCELLED
        visible = _visible(conn, event_id, sources)
    return CancelResult.NOT_PENDING if visible else CancelResult.NOT_FOUND


def amend(
    conn: sqlite3.Connection, event: Event, basis: AmendBasis, when: Collection[EventStatus]
) -> AmendResult:
    values = dict(zip(EVENT_COLUMN_NAMES, event_to_row(event), strict=True))
    params = {name: values[name] for name in AMENDED_COLUMN_NAMES}
    params.update(
        id=event.id,
        basis_version=basis.version,
        basis_claim_count=basis.claim_count,
        basis_next_attempt_at=to_micros(basis.next_attempt_at),
    )
    statement = queries.AMEND.format(when=_when(when))
    try:
        with transaction(conn):
            changed = conn.execute(statement, params).rowcount
    except sqlite3.IntegrityError:
        # The dedup key's unique index: another event of the job is at that time.
        return AmendResult.DUPLICATE
    return AmendResult.AMENDED if changed else AmendResult.NOT_AMENDABLE


def cancel_by_external_id(
    conn: sqlite3.Connection,
    now: int,
    external_job_id: str,
    sources: frozenset[str] | None,
    when: Collection[EventStatus],
) -> int:
    term, names = _of_sources(sources)
    statement = queries.CANCEL_BY_EXTERNAL_ID.format(when=_when(when), sources=term)
    params = {"external_job_id": external_job_id, "now": now, **names}
    with transaction(conn):
        return conn.execute(statement, params).rowcount


def redeliver(
    conn: sqlite3.Connection,
    now: int,
    event_id: str,
    sources: frozenset[str] | None,
    when: Collection[EventStatus],
) -> RedeliverResult:
    term, names = _of_sources(sources)
    statement = queries.REDELIVER.format(when=_when(when), sources=term)
    with transaction(conn):
        if conn.execute(statement, {"event_id": event_id, "now": now, **names}).rowcount:
            return RedeliverResult.REDELIVERED
        visible = _visible(conn, event_id, sources)
    return RedeliverResult.NOT_REDELIVERABLE if visible else RedeliverResult.NOT_FOUND


def move_due(
    conn: sqlite3.Connection,
    now: int,
    due_at: int,
    event_id: str,
    sources: frozenset[str] | None,
    when: Collection[EventStatus],
) -> MoveDueResult:
    term, names = _of_sources(sources)
    statement = queries.MOVE_DUE.format(when=_when(when), sources=term)
    params = {"event_id": event_id, "now": now, "due_at": due_at, **names}
    with transaction(conn):
        if conn.execute(statement, params).rowcount:
            return MoveDueResult.MOVED
        visible = _visible(conn, event_id, sources)
    return MoveDueResult.NOT_PENDING if visible else MoveDueResult.NOT_FOUND


def get(conn: sqlite3.Connection, event_id: str, sources: frozenset[str] | None) -> Event | None:
    row = conn.execute(queries.GET, (event_id,)).fetchone()
    if row is None:
        return None
    event = row_to_event(row)
    return event if sources is None or event.source in sources else None


def get_many(conn: sqlite3.Connection, event_ids: Sequence[str]) -> list[Event]:
    rows = conn.execute(queries.GET_MANY, (json.dumps(list(event_ids)),)).fetchall()
    return [row_to_event(row) for row in rows]


def find_by_external_id(
    conn: sqlite3.Connection, external_job_id: str, limit: int, sources: frozenset[str] | None
) -> list[Event]:
    term, names = _of_sources(sources)
    params = {"external_job_id": external_job_id, "limit": limit, **names}
    rows = conn.execute(queries.FIND_BY_EXTERNAL_ID.format(sources=term), params).fetchall()
    return [row_to_event(row) for row in rows]


def attempts(conn: sqlite3.Connection, event_id: str) -> list[AttemptRecord]:
    return [row_to_attempt(row) for row in conn.execute(queries.ATTEMPTS, (event_id,))]


def delete_finished_batch(
    conn: sqlite3.Connection, cutoff: int, statuses: Collection[EventStatus], batch_size: int
) -> int:
    statement = queries.OLD_FINISHED_IDS.format(statuses=_statuses(statuses))
    with transaction(conn):
        ids = conn.execute(statement, (cutoff, batch_size)).fetchall()
        if ids:
            conn.executemany(queries.DELETE_ATTEMPTS_OF_EVENT, ids)
            conn.executemany(queries.DELETE_EVENT, ids)
            conn.execute(queries.DROP_EMPTY_COUNTS)
    return len(ids)


def fill_destination_keys(conn: sqlite3.Connection) -> int:
    """Give every event stored before destination keys existed its key; how many it filled."""
    filled = 0
    while True:
        rows = conn.execute(queries.MISSING_DESTINATION_KEYS).fetchall()
        if not rows:
            return filled
        with transaction(conn):
            conn.executemany(
                queries.SET_DESTINATION_KEY,
                [(destination_key(kind, where) or "?", rowid) for rowid, kind, where in rows],
            )
        filled += len(rows)


def ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def data_version(conn: sqlite3.Connection) -> int:
    """A number that changes when another connection (another process) commits to the file;
    this connection's own commits leave it as it is."""
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version
