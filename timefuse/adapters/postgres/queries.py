"""The SQL of the PostgreSQL event store's port methods, in one place.

Status literals are written into the text rather than bound: the planner uses the partial
index ``events_due`` (``WHERE status = 'PENDING'``) only when a query repeats that condition
in a form it can prove at plan time.

Every statement that finds events by id also bounds ``scheduled_at`` (the partition key) by a
value computed once per execution: the event's own ``scheduled_at`` from ``event_ids``, or the
min/max over a batch. PostgreSQL then prunes partitions at execution time, so the statement
touches the one or two partitions that hold the rows instead of probing every partition (a
plain join on ``(id, scheduled_at)`` gets no pruning, and the planner may even hash-join it
against a sequential scan of the whole table).
"""

from __future__ import annotations

from timefuse.adapters.postgres.rows import EVENT_COLUMN_NAMES, EVENT_COLUMNS

DUE_CHANNEL = "timefuse_due"

_COLUMNS = ", ".join(EVENT_COLUMN_NAMES)
_E_COLUMNS = ", ".join(f"e.{name}" for name in EVENT_COLUMN_NAMES)
_INPUT_COLUMNS = ", ".join(f"input.{name}" for name in EVENT_COLUMN_NAMES)
# Array parameters go in binary (%b): the server parses a 1000-element timestamptz[] or a
# hex-escaped bytea[] in text format far slower (insert_many ran ~40% slower that way).
_EVENT_ARRAYS = ", ".join(f"%({name})b::{sql_type}[]" for name, sql_type in EVENT_COLUMNS)

# Large batches arrive by binary COPY into this per-connection table (emptied at every commit),
# then move on with the same INSERT ... SELECT as the array form: COPY parses faster than
# arrays, which outweighs its extra round trip for large batches (see store.COPY_MIN_BATCH).
# Its columns are spelled out rather than LIKE events, so it can be created on any connection
# before the schema exists.
CREATE_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS timefuse_staging ("
    + ", ".join(f"{name} {sql_type}" for name, sql_type in EVENT_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
COPY_TO_STAGING = f"COPY timefuse_staging ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = [sql_type for _, sql_type in EVENT_COLUMNS]

# One statement for the whole batch. The id is reserved in event_ids first: the reservation
# skips an id stored already (whatever its scheduled_at), the event insert then skips a dedup
# key stored already. An id reserved for an event the second step skipped is returned with a
# NULL next_attempt_at, and the caller deletes it in the same transaction.
_INSERT_EVENTS = f"""
WITH input AS (SELECT * FROM {{source}}),
reserved AS (
    INSERT INTO event_ids (id, scheduled_at)
    SELECT id, scheduled_at FROM input
        ON CONFLICT DO NOTHING
    RETURNING id
),
inserted AS (
    INSERT INTO events ({_COLUMNS})
    SELECT {_INPUT_COLUMNS} FROM input JOIN reserved USING (id)
        ON CONFLICT DO NOTHING
    RETURNING id, next_attempt_at
)
SELECT reserved.id, inserted.next_attempt_at
  FROM reserved LEFT JOIN inserted USING (id)
"""
INSERT_EVENTS = _INSERT_EVENTS.format(source=f"unnest({_EVENT_ARRAYS}) AS input ({_COLUMNS})")
INSERT_EVENTS_FROM_STAGING = _INSERT_EVENTS.format(source="timefuse_staging")

FORGET_IDS = "DELETE FROM event_ids WHERE id = ANY(%(ids)b::text[])"

# For submitted events that were not inserted: a stored id maps to itself, anything else to
# the event holding its dedup key. LATERAL makes each key one index probe in one partition.
RESOLVE_STORED_IDS = """
SELECT input.id, COALESCE(x.id, d.id)
  FROM unnest(%(id)b::text[], %(source)b::text[], %(external_job_id)b::text[],
              %(scheduled_at)b::timestamptz[])
       AS input (id, source, external_job_id, scheduled_at)
  LEFT JOIN event_ids AS x ON x.id = input.id
  LEFT JOIN LATERAL (SELECT e.id FROM events AS e
                      WHERE e.source = input.source
                        AND e.external_job_id = input.external_job_id
                        AND e.scheduled_at = input.scheduled_at) AS d ON true
"""

NOTIFY_DUE = f"SELECT pg_notify('{DUE_CHANNEL}', %(payload)s)"

# Leases run on the database's clock, so dispatchers with skewed clocks agree on them. The
# CTE runs once (it locks rows, so it is materialised); its rows are then found by id within
# their scheduled_at range (see the module docstring).
CLAIM_DUE = f"""
WITH due AS (
    SELECT id, scheduled_at FROM events
     WHERE status = 'PENDING' AND next_attempt_at <= now()
     ORDER BY next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE events AS e
   SET status = 'PROCESSING',
       locked_by = %(worker)s,
       lock_expires_at = now() + make_interval(secs => %(lease)s),
       attempts = e.attempts + 1,
       claimed_at = now(),
       updated_at = now()
 WHERE e.id = ANY(ARRAY(SELECT id FROM due))
   AND e.scheduled_at >= (SELECT min(scheduled_at) FROM due)
   AND e.scheduled_at <= (SELECT max(scheduled_at) FROM due)
RETURNING {_E_COLUMNS}
"""

# Attempt records are inserted only for the updates that applied (those RETURNING gives back),
# so history is kept exactly for the outcomes that counted; the statement's row count is the
# number applied. A retry brings its own next_attempt_at, a success its executed_at; None
# keeps the stored value. The record's sequence is the event's attempt_records, counted up here.
# An update applies only under the claim it is about (e.attempts = input.attempt, the number
# the claim gave it): after a lease expiry and a new claim by the same worker, the first
# claim's late outcome doesn't apply to the second.
RECORD_OUTCOMES = """
WITH input AS (
    SELECT input.*, x.scheduled_at
      FROM unnest(%(event_id)b::text[], %(status)b::text[], %(retry_count)b::integer[],
                  %(last_error)b::text[], %(next_attempt_at)b::timestamptz[],
                  %(executed_at)b::timestamptz[], %(attempt)b::integer[],
                  %(started_at)b::timestamptz[], %(duration_ms)b::double precision[],
                  %(outcome)b::text[], %(status_code)b::integer[], %(error)b::text[],
                  %(worker)b::text[])
           AS input (event_id, status, retry_count, last_error, next_attempt_at, executed_at,
                     attempt, started_at, duration_ms, outcome, status_code, error, worker)
      JOIN event_ids AS x ON x.id = input.event_id
),
applied AS (
    UPDATE events AS e
       SET status = input.status,
           retry_count = input.retry_count,
           last_error = input.last_error,
           next_attempt_at = COALESCE(input.next_attempt_at, e.next_attempt_at),
           executed_at = COALESCE(input.executed_at, e.executed_at),
           locked_by = NULL,
           lock_expires_at = NULL,
           attempt_records = e.attempt_records + 1,
           updated_at = now()
      FROM input
     WHERE e.id = input.event_id AND e.scheduled_at = input.scheduled_at
       AND e.id = ANY(ARRAY(SELECT event_id FROM input))
       AND e.scheduled_at >= (SELECT min(scheduled_at) FROM input)
       AND e.scheduled_at <= (SELECT max(scheduled_at) FROM input)
       AND e.status = 'PROCESSING' AND e.locked_by = %(owner)s
       AND e.attempts = input.attempt
    RETURNING e.id, e.attempt_records
)
INSERT INTO event_attempts (event_id, event_scheduled_at, attempt, started_at, duration_ms,
                            outcome, status_code, error, worker, sequence)
SELECT input.event_id, input.scheduled_at, input.attempt, input.started_at, input.duration_ms,
       input.outcome, input.status_code, input.error, input.worker, applied.attempt_records
  FROM input JOIN applied ON applied.id = input.event_id
"""

# Attempts never made: the claim's attempt is not counted, retry_count and last_error stay.
# A NULL due_at means the store's now (release).
RESCHEDULE = """
WITH handed_back AS (SELECT id, scheduled_at FROM event_ids WHERE id = ANY(%(ids)b::text[]))
UPDATE events AS e
   SET status = 'PENDING',
       next_attempt_at = COALESCE(%(due_at)s::timestamptz, now()),
       attempts = GREATEST(e.attempts - 1, 0),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = now()
 WHERE e.id = ANY(%(ids)b::text[])
   AND e.scheduled_at >= (SELECT min(scheduled_at) FROM handed_back)
   AND e.scheduled_at <= (SELECT max(scheduled_at) FROM handed_back)
   AND e.status = 'PROCESSING' AND e.locked_by = %(owner)s
"""

# timefuse.domain.lease.expire_lease in SQL: the lost attempt counts as failed; the last
# allowed attempt dead-letters. A lease is held through its expiry instant. Each expiry keeps
# an attempt record from the claim until now; the expired rows' holder and claim time are
# read before the update clears them. Rows locked right now (their worker is writing the
# outcome) are skipped: the next recovery sees them again if they are still expired.
RECOVER_EXPIRED_LEASES = """
WITH expired AS (
    SELECT id, scheduled_at, locked_by, COALESCE(claimed_at, updated_at) AS started_at
      FROM events
     WHERE status = 'PROCESSING' AND lock_expires_at < now()
       FOR UPDATE SKIP LOCKED
),
recovered AS (
    UPDATE events AS e
       SET status = CASE WHEN e.attempts >= e.max_retries + 1
                         THEN 'DEAD_LETTER' ELSE 'PENDING' END,
           next_attempt_at = CASE WHEN e.attempts >= e.max_retries + 1
                                  THEN e.next_attempt_at ELSE now() END,
           retry_count = e.retry_count + 1,
           last_error = %(error)s,
           locked_by = NULL,
           lock_expires_at = NULL,
           attempt_records = e.attempt_records + 1,
           updated_at = now()
     WHERE e.id = ANY(ARRAY(SELECT id FROM expired))
       AND e.scheduled_at >= (SELECT min(scheduled_at) FROM expired)
       AND e.scheduled_at <= (SELECT max(scheduled_at) FROM expired)
    RETURNING e.id, e.scheduled_at, e.attempts, e.attempt_records
)
INSERT INTO event_attempts (event_id, event_scheduled_at, attempt, started_at, duration_ms,
                            outcome, status_code, error, worker, sequence)
SELECT recovered.id, recovered.scheduled_at, recovered.attempts, expired.started_at,
       extract(epoch FROM now() - expired.started_at) * 1000, 'RETRIABLE', NULL, %(error)s,
       COALESCE(expired.locked_by, ''), recovered.attempt_records
  FROM recovered JOIN expired ON expired.id = recovered.id
"""

# A redelivery starts a new delivery round (max_retries applies afresh); last_error,
# executed_at and the attempt history stay. The caller's now, not the store's: no lease.
REDELIVER_SET = """
   SET status = 'PENDING',
       next_attempt_at = %(now)s,
       attempts = 0,
       retry_count = 0,
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = %(now)s
"""

_SCHEDULED_AT_OF_ID = "(SELECT scheduled_at FROM event_ids WHERE id = %(id)s)"

CANCEL = f"""
WITH cancelled AS (
    UPDATE events
       SET status = 'CANCELLED', updated_at = now()
     WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID}
       AND status = 'PENDING'
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM cancelled),
       EXISTS (SELECT 1 FROM events WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID})
"""

REDELIVER = f"""
WITH redelivered AS (
    UPDATE events {REDELIVER_SET}
     WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID}
       AND status IN ('COMPLETED', 'FAILED', 'DEAD_LETTER')
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM redelivered),
       EXISTS (SELECT 1 FROM events WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID})
"""

# A NULL sources array: any source; the dedup key (external_job_id, source, scheduled_at)
# serves both forms. The callers skip an empty array (it matches nothing).
CANCEL_BY_EXTERNAL_ID = """
UPDATE events SET status = 'CANCELLED', updated_at = now()
 WHERE external_job_id = %(external_job_id)s AND status = 'PENDING'
   AND (%(sources)s::text[] IS NULL OR source = ANY(%(sources)s::text[]))
"""

GET = f"""
SELECT {_COLUMNS} FROM events WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID}
"""

FIND_BY_EXTERNAL_ID = f"""
SELECT {_COLUMNS} FROM events
 WHERE external_job_id = %(external_job_id)s
   AND (%(sources)s::text[] IS NULL OR source = ANY(%(sources)s::text[]))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s
"""

COUNT_BY_STATUS = "SELECT status, sum(n)::bigint FROM timefuse_status_counts GROUP BY status"

COUNT_BY_STATUS_OF_SOURCES = """
SELECT status, sum(n)::bigint FROM timefuse_status_counts
 WHERE source = ANY(%(sources)s::text[])
 GROUP BY status
"""

NEXT_DUE_AT = "SELECT min(next_attempt_at) FROM events WHERE status = 'PENDING'"

ATTEMPTS = f"""
SELECT attempt, started_at, duration_ms, outcome, status_code, error, worker, sequence
  FROM event_attempts
 WHERE event_id = %(id)s AND event_scheduled_at = {_SCHEDULED_AT_OF_ID}
 ORDER BY sequence
"""

NOW = "SELECT now()"
