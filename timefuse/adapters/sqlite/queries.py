"""The SQL of the SQLite event store, in one place.

Status literals are written into the text rather than bound as parameters: SQLite uses a
partial index (``WHERE status = 'PENDING'``) only when the query repeats its condition
literally. ``INDEXED BY`` pins the index on queries whose speed depends on it: without
statistics (a new database) the planner prefers ``events_retention`` for any ``status = ...``
term, and a pinned index also fails loudly if a schema change ever drops it.

Batched statements: the store's thread must retake the GIL after every sqlite3_step (each row
of a result, each row of an executemany), and while the event loop is busy each retake can wait
a whole switch interval, so the hot paths take their whole batch as ONE JSON text parameter
(read with json_each) and hand claimed rows back as ONE aggregated value.
"""

from __future__ import annotations

from collections.abc import Sequence

from timefuse.adapters.sqlite.rows import EVENT_COLUMN_NAMES, json_column
from timefuse.domain.event import AMENDED_COLUMN_NAMES

_COLUMNS = ", ".join(EVENT_COLUMN_NAMES)

# ON CONFLICT DO NOTHING, not INSERT OR IGNORE: OR IGNORE would also silently drop a row that
# breaks a NOT NULL or CHECK constraint, and a bad row must fail the batch, not vanish.
INSERT_EVENT = (
    f"INSERT INTO events ({_COLUMNS}) VALUES ({', '.join('?' * len(EVENT_COLUMN_NAMES))}) "
    "ON CONFLICT DO NOTHING"
)

STORED_IDS = "SELECT id FROM events WHERE id IN ({marks})"

ID_BY_DEDUP_KEY = (
    "SELECT id FROM events WHERE external_job_id = ? AND source = ? AND scheduled_at = ?"
)

GET = f"SELECT {_COLUMNS} FROM events WHERE id = ?"

# One statement for a batch's ids however many (json_each: SQLite caps a statement's parameters).
GET_MANY = f"SELECT {_COLUMNS} FROM events WHERE id IN (SELECT value FROM json_each(?))"

SOURCE_OF = "SELECT source FROM events WHERE id = ?"


def json_fields(names: Sequence[str], source: str = "value") -> str:
    """``json_extract(value, '$[i]') AS name`` for each name: one JSON array's elements."""
    return ", ".join(f"json_extract({source}, '$[{i}]') AS {name}" for i, name in enumerate(names))


# -- claims -----------------------------------------------------------------------------------

# The rowids a claim takes, as one JSON array, read straight from the partial index.
# {filters}: the due filter's terms (types, excluded destinations), each " AND ...".
DUE_ROWIDS = """
SELECT json_group_array(rowid)
  FROM (SELECT rowid FROM events INDEXED BY events_due
         WHERE status = 'PENDING' AND next_attempt_at <= :now{filters}
         ORDER BY next_attempt_at
         LIMIT :limit)
"""

# The same within per-destination budgets: of the first :scan due rows, at most a budget per
# destination (:budgets is a JSON array of [key, budget]; :default_budget for the others, NULL
# for no bound), earliest first.
DUE_ROWIDS_IN_BUDGETS = """
SELECT json_group_array(rowid)
  FROM (SELECT ranked.rowid
          FROM (SELECT rowid, next_attempt_at, destination_key,
                       row_number() OVER (PARTITION BY destination_key
                                          ORDER BY next_attempt_at, rowid) AS rank
                  FROM (SELECT rowid, next_attempt_at, destination_key
                          FROM events INDEXED BY events_due
                         WHERE status = 'PENDING' AND next_attempt_at <= :now{filters}
                         ORDER BY next_attempt_at
                         LIMIT :scan)) AS ranked
          LEFT JOIN (SELECT json_extract(value, '$[0]') AS key,
                            json_extract(value, '$[1]') AS budget
                       FROM json_each(:budgets)) AS b ON b.key = ranked.destination_key
         WHERE COALESCE(b.budget, :default_budget) IS NULL
            OR ranked.rank <= COALESCE(b.budget, :default_budget)
         ORDER BY ranked.next_attempt_at, ranked.rowid
         LIMIT :limit)
"""

TYPES_TERM = " AND delivery_type IN (SELECT value FROM json_each(:types))"
EXCLUDED_TERM = " AND destination_key NOT IN (SELECT value FROM json_each(:excluded))"
# Sources held at a destination by their own breakers: "<destination key>\x1f<source>" keys.
HELD_TERM = " AND destination_key || char(31) || source NOT IN (SELECT value FROM json_each(:held))"

NEXT_DUE_AT = """
SELECT MIN(next_attempt_at) FROM events INDEXED BY events_due
 WHERE status = 'PENDING'{filters}
"""

# The backlog per delivery type, from the due index alone (it holds the type).
DUE_BY_TYPE = """
SELECT delivery_type, COUNT(*) FROM events INDEXED BY events_due
 WHERE status = 'PENDING' AND next_attempt_at <= :now
 GROUP BY delivery_type
"""

# The claim, on the rowids found in the same transaction. No RETURNING: it would hand back a
# row (a GIL hand-off) per event; CLAIMED_EVENTS_JSON reads them as one value.
CLAIM_ROWIDS = """
UPDATE events
   SET status = 'PROCESSING',
       locked_by = :worker,
       lock_expires_at = :expires,
       attempts = attempts + 1,
       claim_count = claim_count + 1,
       claimed_at = :now,
       updated_at = :now
 WHERE rowid IN (SELECT value FROM json_each(:rowids))
"""

CLAIMED_EVENTS_JSON = f"""
SELECT json_group_array(json_array({", ".join(json_column(name) for name in EVENT_COLUMN_NAMES)}))
  FROM events
 WHERE rowid IN (SELECT value FROM json_each(:rowids))
"""

# -- outcomes and hand-backs ------------------------------------------------------------------

# The fields of one outcome in a batch, in the order operations.outcome_batch writes them.
OUTCOME_FIELDS = (
    "event_id", "claim", "worker", "new_status", "new_retry_count", "new_last_error",
    "retry_delay", "new_executed_at", "attempt", "started_at", "duration_ms", "outcome",
    "status_code", "error",
)  # fmt: skip

_OUTCOMES = f"(SELECT {json_fields(OUTCOME_FIELDS)} FROM json_each(:batch))"

# The claim a lease-bound write quotes: its token and its worker, on a PROCESSING row. +status
# keeps the planner off events_retention (which it would prefer without statistics, scanning
# every PROCESSING row): each event is found by its id.
_HELD = "+events.status = 'PROCESSING' AND events.claim_count = {b}.claim"
_HELD += " AND events.locked_by = {b}.worker"

# The next number in an event's history: one seek in event_attempts_event_seq.
_NEXT_ATTEMPT_SEQ = """COALESCE((SELECT MAX(history.attempt_seq) FROM event_attempts AS history
                  WHERE history.event_id = {event_id}), 0) + 1"""

# The events whose outcome applies, as one JSON array: read before the writes in the same
# transaction (one value, not a row per event to hand from the SQLite thread: see the claim).
HELD_OUTCOME_IDS_JSON = f"""
SELECT json_group_array(b.event_id)
  FROM {_OUTCOMES} AS b
 WHERE EXISTS (SELECT 1 FROM events WHERE events.id = b.event_id AND {_HELD.format(b="b")})
"""

# Written before APPLY_OUTCOMES in the same transaction, so it sees the claims the outcomes are
# about to end: history is kept exactly for the outcomes that apply. Event ids in a batch are
# unique, so each row's next attempt_seq is unaffected by the other rows.
INSERT_ATTEMPTS_IF_HELD = f"""
INSERT INTO event_attempts
       (event_id, attempt, started_at, duration_ms, outcome, status_code, error, worker,
        attempt_seq)
SELECT b.event_id, b.attempt, b.started_at, b.duration_ms, b.outcome, b.status_code, b.error,
       b.worker, {_NEXT_ATTEMPT_SEQ.format(event_id="b.event_id")}
  FROM {_OUTCOMES} AS b
 WHERE EXISTS (SELECT 1 FROM events WHERE events.id = b.event_id AND {_HELD.format(b="b")})
"""

APPLY_OUTCOMES = f"""
UPDATE events
   SET status = b.new_status,
       retry_count = b.new_retry_count,
       last_error = b.new_last_error,
       next_attempt_at = CASE WHEN b.retry_delay IS NULL THEN events.next_attempt_at
                              ELSE :now + b.retry_delay END,
       executed_at = COALESCE(b.new_executed_at, events.executed_at),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
  FROM {_OUTCOMES} AS b
 WHERE events.id = b.event_id AND {_HELD.format(b="b")}
"""

_REFS = f"(SELECT {json_fields(('event_id', 'claim', 'worker'))} FROM json_each(:refs))"

HAND_BACK = f"""
UPDATE events
   SET status = 'PENDING',
       next_attempt_at = CASE WHEN :due_at <= :now THEN MIN(next_attempt_at, :due_at)
                              ELSE :due_at END,
       attempts = MAX(attempts - 1, 0),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
  FROM {_REFS} AS r
 WHERE events.id = r.event_id AND {_HELD.format(b="r")}
"""

EXTEND_LEASES = f"""
UPDATE events SET lock_expires_at = :expires
  FROM {_REFS} AS r
 WHERE events.id = r.event_id AND {_HELD.format(b="r")}
"""

# -- lease recovery ---------------------------------------------------------------------------

_LOST = """status = 'PROCESSING'
   AND (lock_expires_at < :now OR locked_by IN (SELECT value FROM json_each(:dead)))"""

# Of the workers judged dead, those still silent: run in recovery's transaction, so a worker
# that heartbeat since it was judged keeps its claims.
SILENT_WORKERS = """
SELECT worker FROM timefuse_workers
 WHERE worker IN (SELECT value FROM json_each(:dead)) AND last_seen < :before
"""

# The attempt record of each lost claim, written before RECOVER_LOST_CLAIMS in the same
# transaction (and with the same :now), so it sees exactly the claims about to be recovered.
RECORD_LOST_ATTEMPTS = f"""
INSERT INTO event_attempts
       (event_id, attempt, started_at, duration_ms, outcome, status_code, error, worker,
        attempt_seq)
SELECT id, attempts, started_at, (:now - started_at) / 1000.0, :outcome, NULL, :error,
       COALESCE(locked_by, ''), {_NEXT_ATTEMPT_SEQ.format(event_id="lost.id")}
  FROM (SELECT id, attempts, locked_by, COALESCE(claimed_at, updated_at) AS started_at
          FROM events WHERE {_LOST}) AS lost
"""

# The lost claims that RECOVER_LOST_CLAIMS (same transaction, same :now) is about to
# dead-letter and that have a failure notice to send.
LOST_LAST_ATTEMPTS_CALLING_BACK = f"""
SELECT id FROM events
 WHERE {_LOST} AND attempts >= max_retries + 1 AND failure_callback_url IS NOT NULL
"""

# timefuse.domain.lease.expire_lease in SQL: the lost attempt counts as failed; the last
# allowed attempt dead-letters. A lease is held through its expiry instant.
RECOVER_LOST_CLAIMS = f"""
UPDATE events
   SET status = CASE WHEN attempts >= max_retries + 1 THEN 'DEAD_LETTER' ELSE 'PENDING' END,
       next_attempt_at = CASE WHEN attempts >= max_retries + 1
                              THEN next_attempt_at ELSE MIN(next_attempt_at, :now) END,
       retry_count = retry_count + 1,
       last_error = :error,
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = :now
 WHERE {_LOST}
"""

# -- coordination -----------------------------------------------------------------------------

ACQUIRE_LEADERSHIP = """
INSERT INTO timefuse_leaders (role, holder, expires_at) VALUES (:role, :holder, :expires)
    ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
 WHERE timefuse_leaders.holder = excluded.holder OR timefuse_leaders.expires_at < :now
"""

RELEASE_LEADERSHIP = "DELETE FROM timefuse_leaders WHERE role = :role AND holder = :holder"

HEARTBEAT = """
INSERT INTO timefuse_workers (worker, roles, started_at, last_seen, in_flight)
VALUES (:worker, :roles, :started_at, :now, :in_flight)
    ON CONFLICT (worker) DO UPDATE SET roles = excluded.roles, started_at = excluded.started_at,
       last_seen = excluded.last_seen, in_flight = excluded.in_flight
"""

WORKERS = """
SELECT worker, roles, started_at, last_seen, in_flight FROM timefuse_workers
 ORDER BY last_seen DESC
"""

FORGET_WORKERS = "DELETE FROM timefuse_workers WHERE last_seen < :limit"

# -- operator actions -------------------------------------------------------------------------

# {when}: "status IN (...)" from the rule layer; {sources}: "" or " AND source IN (...)".
CANCEL = """
UPDATE events SET status = 'CANCELLED', updated_at = :now
 WHERE id = :event_id AND {when}{sources}
"""

# {when}: the statuses the change applies to. Attempt records follow the event by id.
AMEND = (
    "UPDATE events SET "
    + ", ".join(f"{name} = :{name}" for name in AMENDED_COLUMN_NAMES)
    + " WHERE id = :id AND {when} AND version = :basis_version"
    " AND claim_count = :basis_claim_count AND next_attempt_at = :basis_next_attempt_at"
)

CANCEL_BY_EXTERNAL_ID = """
UPDATE events INDEXED BY events_dedup_key
   SET status = 'CANCELLED', updated_at = :now
 WHERE external_job_id = :external_job_id AND {when}{sources}
"""

MOVE_DUE = """
UPDATE events SET next_attempt_at = :due_at, updated_at = :now
 WHERE id = :event_id AND {when}{sources}
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

REDELIVER = f"UPDATE events {REDELIVER_SET} WHERE id = :event_id AND {{when}}{{sources}}"

# {sources}: as in CANCEL_BY_EXTERNAL_ID.
FIND_BY_EXTERNAL_ID = f"""
SELECT {_COLUMNS} FROM events INDEXED BY events_dedup_key
 WHERE external_job_id = :external_job_id{{sources}}
 ORDER BY created_at DESC, id DESC
 LIMIT :limit
"""

ATTEMPTS = """
SELECT attempt, started_at, duration_ms, outcome, status_code, error, worker, attempt_seq
  FROM event_attempts INDEXED BY event_attempts_event_seq
 WHERE event_id = ?
 ORDER BY attempt_seq
"""

# {statuses}: the finished statuses, from the rule layer.
OLD_FINISHED_IDS = """
SELECT id FROM events WHERE status IN ({statuses}) AND updated_at < ? LIMIT ?
"""

DELETE_ATTEMPTS_OF_EVENT = "DELETE FROM event_attempts WHERE event_id = ?"

DELETE_EVENT = "DELETE FROM events WHERE id = ?"

# The counts of a source's statuses that no event is in any more (a source that went away
# keeps none): the table stays as small as the sources with events.
DROP_EMPTY_COUNTS = "DELETE FROM timefuse_status_counts WHERE n = 0"

MISSING_DESTINATION_KEYS = (
    "SELECT rowid, delivery_type, destination FROM events WHERE destination_key = '' LIMIT 1000"
)

SET_DESTINATION_KEY = "UPDATE events SET destination_key = ? WHERE rowid = ?"

SCHEMA_VERSION = "SELECT MAX(version) FROM schema_version"

SCHEMA_VERSION_TABLE = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
)
