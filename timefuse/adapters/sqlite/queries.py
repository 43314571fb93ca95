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

# The subquery reads rowids straight from the partial index; RETURNING hands back the claimed
# rows in the same statement, so no second read can see them change.
CLAIM_DUE = f"""
UPDATE events
   SET status = 'PROCESSING',
       locked_by = :worker,
       lock_expires_at = :expires,
       attempts = attempts + 1,
       claimed_at = :now,
       updated_at = :now
 WHERE rowid IN (SELECT rowid FROM events INDEXED BY events_due
                  WHERE status = 'PENDING' AND next_attempt_at <= :now
                  ORDER BY next_attempt_at
                  LIMIT :limit)
RETURNING {_COLUMNS}
"""

# The next number in an event's history: one seek in event_attempts_event_seq.
_NEXT_ATTEMPT_SEQ = """COALESCE((SELECT MAX(history.attempt_seq) FROM event_attempts AS history
                  WHERE history.event_id = {event_id}), 0) + 1"""

# Written before APPLY_OUTCOME in the same transaction, so it sees the lease the outcome is
# about to clear: history is kept exactly for the outcomes that apply.
INSERT_ATTEMPT_IF_LEASED = f"""
INSERT INTO event_attempts
       (event_id, attempt, started_at, duration_ms, outcome, status_code, error, worker,
        attempt_seq)
SELECT :event_id, :attempt, :started_at, :duration_ms, :outcome, :status_code, :error, :worker,
       {_NEXT_ATTEMPT_SEQ.format(event_id=":event_id")}
 WHERE EXISTS (SELECT 1 FROM events
                WHERE id = :event_id AND status = 'PROCESSING' AND locked_by = :owner)
"""

# A retry brings its own next_attempt_at; other outcomes leave the last due time in place
# (the column is NOT NULL and Event.next_attempt_at is never None).
APPLY_OUTCOME = """
UPDATE events
   SET status = :status,
       retry_count = :retry_count,
       last_error = :last_error,
       next_attempt_at = COALESCE(:next_attempt_at, next_attempt_at),
       executed_at = COALESCE(:executed_at, executed_at),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
 WHERE id = :event_id AND status = 'PROCESSING' AND locked_by = :owner
"""

RESCHEDULE = """
UPDATE events
   SET status = 'PENDING',
       next_attempt_at = :due_at,
       attempts = MAX(attempts - 1, 0),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
 WHERE id = :event_id AND status = 'PROCESSING' AND locked_by = :owner
"""

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

CANCEL_BY_EXTERNAL_ID = """
UPDATE events INDEXED BY events_dedup_key
   SET status = 'CANCELLED', updated_at = :now
 WHERE external_job_id = :external_job_id AND status = 'PENDING'
"""

EXISTS = "SELECT 1 FROM events WHERE id = ?"

GET = f"SELECT {_COLUMNS} FROM events WHERE id = ?"

FIND_BY_EXTERNAL_ID = f"""
SELECT {_COLUMNS} FROM events INDEXED BY events_dedup_key
 WHERE external_job_id = ?
 ORDER BY created_at DESC, id DESC
 LIMIT ?
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
