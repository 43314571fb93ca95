"""The SQL of the SQLite event store, in one place.

Status literals are written into the text rather than bound as parameters: SQLite uses a
partial index (``WHERE status = 'PENDING'``) only when the query repeats its condition
literally.

``INDEXED BY`` pins the index on queries whose speed depends on it. Without statistics (a new
database) the planner prefers ``events_retention`` for any ``status = ...`` term, and would
then sort every PENDING row to claim a few; a pinned index also fails loudly if a schema change
ever drops it.
"""

from __future__ import annotations

from timefuse.domain.status import REDELIVERABLE_STATUSES, TERMINAL_STATUSES

EVENT_COLUMNS = (
    "id",
    "external_job_id",
    "source",
    "scheduled_at",
    "delivery_type",
    "destination",
    "payload",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "max_retries",
    "status",
    "attempts",
    "retry_count",
    "last_error",
    "executed_at",
    "locked_by",
    "lock_expires_at",
    "delivery_window_seconds",
    "retry_backoff_seconds",
    "retry_backoff_max_seconds",
    "extra",
)
_COLUMNS = ", ".join(EVENT_COLUMNS)
_TERMINAL = ", ".join(f"'{status.value}'" for status in sorted(TERMINAL_STATUSES))
_REDELIVERABLE = ", ".join(f"'{status.value}'" for status in sorted(REDELIVERABLE_STATUSES))

# ON CONFLICT DO NOTHING, not INSERT OR IGNORE: OR IGNORE would also silently drop a row that
# breaks a NOT NULL or CHECK constraint, and a bad row must fail the batch, not vanish.
INSERT_EVENT = (
    f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))}) "
    "ON CONFLICT DO NOTHING"
)

STORED_IDS = "SELECT id FROM events WHERE id IN ({marks})"

ID_BY_DEDUP_KEY = (
    "SELECT id FROM events WHERE external_job_id = ? AND source = ? AND scheduled_at = ?"
)

# The next number in an event's history: one seek in event_attempts_event_seq.
_NEXT_ATTEMPT_SEQ = """COALESCE((SELECT MAX(history.attempt_seq) FROM event_attempts AS history
                  WHERE history.event_id = {event_id}), 0) + 1"""

# The attempt record of each expired lease, written before RECOVER_EXPIRED_LEASES in the same
# transaction (and with the same :now), so it sees exactly the leases about to be recovered.
# claimed_at is NULL only for an event inserted as PROCESSING; its last update stands in.
RECORD_EXPIRED_ATTEMPTS = f"""
INSERT INTO event_attempts
       (event_id, attempt, started_at, duration_ms, outcome, status_code, error, worker,
        attempt_seq)
SELECT id, attempts, started_at, (:now - started_at) / 1000.0, :outcome, NULL, :error,
       COALESCE(locked_by, ''), {_NEXT_ATTEMPT_SEQ.format(event_id="expired.id")}
  FROM (SELECT id, attempts, locked_by, COALESCE(claimed_at, updated_at) AS started_at
          FROM events
         WHERE status = 'PROCESSING' AND lock_expires_at < :now) AS expired
"""

# timefuse.domain.lease.expire_lease in SQL: the lost attempt counts as failed; the last
# allowed attempt dead-letters. A lease is held through its expiry instant.
RECOVER_EXPIRED_LEASES = """
UPDATE events
   SET status = CASE WHEN attempts >= max_retries + 1 THEN 'DEAD_LETTER' ELSE 'PENDING' END,
       next_attempt_at = CASE WHEN attempts >= max_retries + 1
                              THEN next_attempt_at ELSE :now END,
       retry_count = retry_count + 1,
       last_error = :error,
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
 WHERE status = 'PROCESSING' AND lock_expires_at < :now
"""

# A redelivery starts a new delivery round: max_retries applies afresh. last_error,
# executed_at and the attempt history stay as they were.
REDELIVER_SET = """
   SET status = 'PENDING',
       next_attempt_at = :now,
       attempts = 0,
       retry_count = 0,
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
"""

REDELIVER = f"""
UPDATE events {REDELIVER_SET}
 WHERE id = :event_id AND status IN ({_REDELIVERABLE})
"""

CANCEL = """
UPDATE events SET status = 'CANCELLED', updated_at = :now
 WHERE id = :event_id AND status = 'PENDING'
"""

# {sources}: "" for any source, or " AND source IN (...)" (listing.sources_term), which the
# dedup key (external_job_id, source, scheduled_at) serves as well.
CANCEL_BY_EXTERNAL_ID = """
UPDATE events INDEXED BY events_dedup_key
   SET status = 'CANCELLED', updated_at = :now
 WHERE external_job_id = :external_job_id AND status = 'PENDING'{sources}
"""

EXISTS = "SELECT 1 FROM events WHERE id = ?"

GET = f"SELECT {_COLUMNS} FROM events WHERE id = ?"

# {sources}: as in CANCEL_BY_EXTERNAL_ID.
FIND_BY_EXTERNAL_ID = f"""
SELECT {_COLUMNS} FROM events INDEXED BY events_dedup_key
 WHERE external_job_id = :external_job_id{{sources}}
 ORDER BY created_at DESC, id DESC
 LIMIT :limit
"""

NEXT_DUE_AT = (
    "SELECT MIN(next_attempt_at) FROM events INDEXED BY events_due WHERE status = 'PENDING'"
)

ATTEMPTS = """
SELECT attempt, started_at, duration_ms, outcome, status_code, error, worker, attempt_seq
  FROM event_attempts INDEXED BY event_attempts_event_seq
 WHERE event_id = ?
 ORDER BY attempt_seq
"""

OLD_TERMINAL_IDS = f"""
SELECT id FROM events
 WHERE status IN ({_TERMINAL}) AND updated_at < ?
 LIMIT ?
"""

DELETE_ATTEMPTS_OF_EVENT = "DELETE FROM event_attempts WHERE event_id = ?"

DELETE_EVENT = "DELETE FROM events WHERE id = ?"

SCHEMA_VERSION = "SELECT MAX(version) FROM schema_version"

SCHEMA_VERSION_TABLE = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
)


# --- Batched statements -------------------------------------------------------------------
# The store's thread must retake the GIL after every sqlite3_step: each row of a result and
# each row of an executemany. While the event loop is busy, each retake can wait up to the
# interpreter's switch interval (5 ms), so the hot paths below take their whole batch as ONE
# JSON text parameter (read with json_each) and hand claimed rows back as ONE aggregated
# value: a constant handful of steps per batch instead of one or two per event.
# json_each / json_extract need the JSON functions, built into SQLite since 3.38 and compiled
# into CPython's sqlite3 on every supported platform before that.

# The rowids a claim takes, as one JSON array, read straight from the partial index.
DUE_ROWIDS = """
SELECT json_group_array(rowid)
  FROM (SELECT rowid FROM events INDEXED BY events_due
         WHERE status = 'PENDING' AND next_attempt_at <= :now
         ORDER BY next_attempt_at
         LIMIT :limit)
"""

# The claim, on the rowids DUE_ROWIDS found in the same transaction. No RETURNING: it would
# hand back a row (a GIL hand-off) per event; CLAIMED_EVENTS_JSON reads them as one value.
CLAIM_ROWIDS = """
UPDATE events
   SET status = 'PROCESSING',
       locked_by = :worker,
       lock_expires_at = :expires,
       attempts = attempts + 1,
       claimed_at = :now,
       updated_at = :now
 WHERE rowid IN (SELECT value FROM json_each(:rowids))
"""

# Column expressions for EVENT_COLUMNS in one JSON array per row. JSON holds no BLOB, so the
# payload travels as hex. JSON renders a REAL with only 15 significant digits, so the REAL
# columns travel as quote() text (exact for any value above ~1e-290: rows.py refetches the
# rest). extra stays a string holding its JSON text, as the column stores it.
_REAL_COLUMNS = frozenset(
    {"delivery_window_seconds", "retry_backoff_seconds", "retry_backoff_max_seconds"}
)


def _json_column(name: str) -> str:
    if name == "payload":
        return "hex(payload)"
    if name in _REAL_COLUMNS:
        return f"quote({name})"
    return name


JSON_REAL_POSITIONS = tuple(i for i, name in enumerate(EVENT_COLUMNS) if name in _REAL_COLUMNS)
JSON_PAYLOAD_POSITION = EVENT_COLUMNS.index("payload")

CLAIMED_EVENTS_JSON = f"""
SELECT json_group_array(json_array({", ".join(_json_column(name) for name in EVENT_COLUMNS)}))
  FROM events
 WHERE rowid IN (SELECT value FROM json_each(:rowids))
"""

# The attempt records of a batch of outcomes: one JSON array per attempt, in the order of
# rows.attempt_json_row. Written before APPLY_OUTCOMES in the same transaction, so it sees the
# leases the outcomes are about to clear: history is kept exactly for the outcomes that apply.
# Event ids in a batch are unique (record_outcomes keeps the first outcome per event), so
# each row's next attempt_seq is unaffected by the other rows of the statement.
INSERT_ATTEMPTS_IF_LEASED = f"""
INSERT INTO event_attempts
       (event_id, attempt, started_at, duration_ms, outcome, status_code, error, worker,
        attempt_seq)
SELECT batch.event_id, batch.attempt, batch.started_at, batch.duration_ms, batch.outcome,
       batch.status_code, batch.error, batch.worker,
       {_NEXT_ATTEMPT_SEQ.format(event_id="batch.event_id")}
  FROM (SELECT json_extract(value, '$[0]') AS event_id,
               json_extract(value, '$[1]') AS attempt,
               json_extract(value, '$[2]') AS started_at,
               json_extract(value, '$[3]') AS duration_ms,
               json_extract(value, '$[4]') AS outcome,
               json_extract(value, '$[5]') AS status_code,
               json_extract(value, '$[6]') AS error,
               json_extract(value, '$[7]') AS worker
          FROM json_each(:batch)) AS batch
 WHERE EXISTS (SELECT 1 FROM events
                WHERE id = batch.event_id AND status = 'PROCESSING' AND locked_by = :owner
                  AND attempts = batch.attempt)
"""

# A batch of outcomes for unique event ids: one JSON array per outcome, in the order of
# operations._outcome_row. A retry brings its own next_attempt_at; other outcomes leave the
# last due time in place (the column is NOT NULL and Event.next_attempt_at is never None).
# The new_ names keep the SET expressions from reading the batch's columns where they mean
# the event's own. Here and in RESCHEDULE_MANY, +status keeps the planner off
# events_retention (which it prefers for any status term without statistics, and which would
# scan every PROCESSING row): each event is found by its id.
APPLY_OUTCOMES = """
UPDATE events
   SET status = batch.new_status,
       retry_count = batch.new_retry_count,
       last_error = batch.new_last_error,
       next_attempt_at = COALESCE(batch.new_next_attempt_at, events.next_attempt_at),
       executed_at = COALESCE(batch.new_executed_at, events.executed_at),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
  FROM (SELECT json_extract(value, '$[0]') AS event_id,
               json_extract(value, '$[1]') AS new_status,
               json_extract(value, '$[2]') AS new_retry_count,
               json_extract(value, '$[3]') AS new_last_error,
               json_extract(value, '$[4]') AS new_next_attempt_at,
               json_extract(value, '$[5]') AS new_executed_at,
               json_extract(value, '$[6]') AS claim_attempt
          FROM json_each(:batch)) AS batch
 WHERE events.id = batch.event_id
   AND +events.status = 'PROCESSING' AND events.locked_by = :owner
   AND events.attempts = batch.claim_attempt
"""

# Rescheduling of claimed events, given as a JSON array of ids. IN ignores a repeated id, as
# a statement per id did the second time (the first had already cleared the lease).
RESCHEDULE_MANY = """
UPDATE events
   SET status = 'PENDING',
       next_attempt_at = :due_at,
       attempts = MAX(attempts - 1, 0),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
 WHERE id IN (SELECT value FROM json_each(:event_ids))
   AND +status = 'PROCESSING' AND locked_by = :owner
"""
