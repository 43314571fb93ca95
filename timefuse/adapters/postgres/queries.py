"""The SQL of the PostgreSQL event store's port methods, in one place.

Status literals are written into the text rather than bound: the planner uses the partial
index ``events_due`` (``WHERE status = 'PENDING'``) only when a query repeats that condition
in a form it can prove at plan time.

Every statement that finds events by id also bounds ``scheduled_at`` (the partition key) by a
value computed once per execution: the event's own ``scheduled_at`` from ``event_ids``, or the
min/max over a batch. PostgreSQL then prunes partitions at execution time, so the statement
touches the one or two partitions that hold the rows instead of probing every partition.
"""

from __future__ import annotations

from timefuse.adapters.postgres.rows import EVENT_SQL_COLUMNS
from timefuse.domain.event import AMENDED_COLUMN_NAMES, EVENT_COLUMN_NAMES

DUE_CHANNEL = "timefuse_due"

_COLUMNS = ", ".join(EVENT_COLUMN_NAMES)
_E_COLUMNS = ", ".join(f"e.{name}" for name in EVENT_COLUMN_NAMES)
_INPUT_COLUMNS = ", ".join(f"input.{name}" for name in EVENT_COLUMN_NAMES)
# Array parameters go in binary (%b): the server parses a 1000-element timestamptz[] or a
# hex-escaped bytea[] in text format far slower (insert_many ran ~40% slower that way).
_EVENT_ARRAYS = ", ".join(f"%({name})b::{sql_type}[]" for name, sql_type in EVENT_SQL_COLUMNS)

# Large batches arrive by binary COPY into this per-connection table (emptied at every commit),
# then move on with the same INSERT ... SELECT as the array form: COPY parses faster than
# arrays, which outweighs its extra round trip for large batches (see inserts.COPY_MIN_BATCH).
# Its columns are spelled out rather than LIKE events, so it can be created on any connection
# before the schema exists.
CREATE_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS timefuse_staging ("
    + ", ".join(f"{name} {sql_type}" for name, sql_type in EVENT_SQL_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
COPY_TO_STAGING = f"COPY timefuse_staging ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = [sql_type for _, sql_type in EVENT_SQL_COLUMNS]

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

# 0 on a server that is not a standby, and on a standby that has replayed all it received;
# otherwise the age of the last transaction it replayed: about how far it is behind.
REPLICA_LAG = """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END
"""

NOTIFY_DUE = f"SELECT pg_notify('{DUE_CHANNEL}', %(payload)s)"

# -- claims -----------------------------------------------------------------------------------

# A source's own breaker at a destination is kept under "<destination key>\x1f<source>"
# (chr(31): neither a source nor a destination holds a control character).
_SOURCE_BREAKER_KEY = "{t}destination_key || chr(31) || {t}source"

# The due filter: from the process's floor on (see due_floor: an index condition that skips
# the entries claimed events left behind), the types this dispatcher delivers (NULL: any),
# destinations it leaves now, and sources it leaves at a destination (held by their own
# breakers).
_DUE_FILTER = f"""
   AND (next_attempt_at, id) >= (%(floor_at)s::timestamptz, %(floor_id)s::text COLLATE "C")
   AND (%(types)s::text[] IS NULL OR delivery_type = ANY(%(types)s::text[]))
   AND destination_key <> ALL(%(excluded)s::text[])
   AND (cardinality(%(held)s::text[]) = 0
        OR {_SOURCE_BREAKER_KEY.format(t="")} <> ALL(%(held)s::text[]))"""

# Leases run on the database's clock, so dispatchers with skewed clocks agree on them. The
# chosen rows are locked (SKIP LOCKED: a row another claim holds is passed over), then
# updated by id within their scheduled_at range (see the module docstring).
_CLAIM = f"""
WITH {{due}}
UPDATE events AS e
   SET status = 'PROCESSING',
       locked_by = %(worker)s,
       lock_expires_at = now() + make_interval(secs => %(lease)s),
       attempts = e.attempts + 1,
       claim_count = e.claim_count + 1,
       claimed_at = now(),
       updated_at = now()
 WHERE e.id = ANY(ARRAY(SELECT id FROM due))
   AND e.scheduled_at >= (SELECT min(scheduled_at) FROM due)
   AND e.scheduled_at <= (SELECT max(scheduled_at) FROM due)
RETURNING {_E_COLUMNS}, now()
"""

CLAIM_DUE = _CLAIM.format(
    due=f"""due AS (
    SELECT id, scheduled_at FROM events
     WHERE status = 'PENDING' AND next_attempt_at <= now(){_DUE_FILTER}
     ORDER BY next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)"""
)

# Within per-destination budgets: of the first :scan due rows (locked), at most a budget per
# destination, earliest first. Rows locked but not taken are free again at commit.
CLAIM_DUE_IN_BUDGETS = _CLAIM.format(
    due=f"""candidates AS MATERIALIZED (
    SELECT id, scheduled_at, next_attempt_at, destination_key FROM events
     WHERE status = 'PENDING' AND next_attempt_at <= now(){_DUE_FILTER}
     ORDER BY next_attempt_at
     LIMIT %(scan)s
       FOR UPDATE SKIP LOCKED
),
ranked AS (
    SELECT c.id, c.scheduled_at, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.destination_key
                              ORDER BY c.next_attempt_at, c.id) AS rank,
           COALESCE(b.budget, %(default_budget)s::integer) AS budget
      FROM candidates AS c
      LEFT JOIN unnest(%(budget_keys)s::text[], %(budgets)s::integer[]) AS b (key, budget)
             ON b.key = c.destination_key
),
due AS (
    SELECT id, scheduled_at FROM ranked
     WHERE budget IS NULL OR rank <= budget
     ORDER BY next_attempt_at, id
     LIMIT %(limit)s
)"""
)

DUE_BY_TYPE = """
SELECT delivery_type, count(*) FROM events
 WHERE status = 'PENDING' AND next_attempt_at <= now()
 GROUP BY delivery_type
"""

# -- claims within limits shared by every process -------------------------------------------
# A claim takes, in one transaction: the destinations of its first :scan due events
# (SHARED_DUE_KEYS), a transaction-scoped advisory lock on each in key order (LOCK_DESTINATIONS:
# claims of one destination queue behind each other, so the next one's snapshot sees what
# the last took), then CLAIM_SHARED, which allows per destination what its cap, tokens and
# breaker leave, takes it, and spends the tokens. Its rows: each claimed event's columns, how
# many its destination could give this claim (its room: the rules' allowance within the
# claim's budget), whether it is a probe, and the store's now.

LOCK_NAMESPACE = 0x7466  # the first key of every destination's advisory lock

LOCK_DESTINATIONS = """
SELECT count(pg_advisory_xact_lock(%(namespace)s, hashtext(key)))
  FROM (SELECT key FROM unnest(%(keys)s::text[]) AS key ORDER BY key) AS ordered
"""

_RULES = """unnest(%(rule_keys)s::text[], %(rule_caps)s::integer[],
                       %(rule_rates)s::double precision[], %(rule_bursts)s::integer[])
                AS {alias} (key, cap, rate, burst)"""

_TOKENS_NOW = """least(burst::double precision, COALESCE(tokens, burst::double precision)
                 + rate * extract(epoch FROM now() - COALESCE(refilled_at, now())))"""

_UNLIMITED = "1073741824"

# An open breaker's row lets one probe through: cooled down, and no probe out (or one whose
# claim has run out). {d}: the row's alias.
_PROBE_FREE = """now() >= {d}opened_at + make_interval(secs => %(cooldown)s)
                 AND ({d}probe_by IS NULL OR {d}probe_until < now())"""

# A due row of a source held at its destination by its own open breaker (no probe free): the
# first statement, the horizon and the claim's candidates look past it, or such rows could fill
# what a claim looks at and keep the destination's other sources out of reach.
_NOT_HELD = f"""
   AND NOT EXISTS (SELECT 1 FROM timefuse_destinations AS b
                    WHERE b.key = {_SOURCE_BREAKER_KEY.format(t="events.")}
                      AND b.breaker = 'OPEN' AND NOT ({_PROBE_FREE.format(d="b.")}))"""

# The destinations of the first :scan due rows, in (due time, id) order as the claim reads
# them, and the last of those rows' due time and id.
SHARED_DUE_KEYS = f"""
SELECT array_agg(DISTINCT destination_key),
       (array_agg(next_attempt_at ORDER BY next_attempt_at DESC, id DESC))[1],
       (array_agg(id ORDER BY next_attempt_at DESC, id DESC))[1]
  FROM (SELECT destination_key, next_attempt_at, id FROM events
         WHERE status = 'PENDING' AND next_attempt_at <= now(){_DUE_FILTER}{_NOT_HELD}
         ORDER BY next_attempt_at, id
         LIMIT %(scan)s) AS due
"""

CLAIM_SHARED = f"""
WITH horizon AS MATERIALIZED (
    -- How far the claim reads, in (due time, id) order, so that when the locked destinations
    -- have few due rows each it stops there (an index condition on events_due) instead of
    -- reading the whole backlog, ties included: the later of the :scan-th due row of any
    -- destination as things stand once the locks are held (no bound with fewer due), and the
    -- last row the destinations were found in (:looked_at, :looked_id), so each locked
    -- destination's rows seen then are within it.
    SELECT at, id FROM (
        SELECT COALESCE(h.at, 'infinity') AS at, COALESCE(h.id, '') COLLATE "C" AS id
          FROM (SELECT 1) AS one
          LEFT JOIN (SELECT next_attempt_at AS at, id FROM events
                      WHERE status = 'PENDING' AND next_attempt_at <= now(){_DUE_FILTER}{_NOT_HELD}
                      ORDER BY next_attempt_at, id
                     OFFSET %(scan)s - 1
                      LIMIT 1) AS h ON true
        UNION ALL
        SELECT %(looked_at)s::timestamptz, %(looked_id)s::text COLLATE "C"
    ) AS bounds
     ORDER BY at DESC, id DESC
     LIMIT 1
),
candidates AS MATERIALIZED (
    SELECT id, scheduled_at, next_attempt_at, destination_key, delivery_type, source FROM events
     WHERE status = 'PENDING' AND next_attempt_at <= now(){_DUE_FILTER}
       AND (next_attempt_at, id) <= ((SELECT at FROM horizon), (SELECT id FROM horizon))
       AND destination_key = ANY(%(locked)s::text[]){_NOT_HELD}
     ORDER BY next_attempt_at, id
     LIMIT %(scan)s
       FOR UPDATE SKIP LOCKED
),
held AS MATERIALIZED (
    -- Sources held at a destination by their own open breaker: one probe once cooled down.
    -- Materialized: the planner, expecting one candidate, would otherwise compute it again for
    -- every candidate it joins (quadratic in the scan).
    SELECT p.destination_key, p.source,
           CASE WHEN {_PROBE_FREE.format(d="d.")} THEN 1 ELSE 0 END AS allowed
      FROM (SELECT DISTINCT destination_key, source,
                   {_SOURCE_BREAKER_KEY.format(t="")} AS key FROM candidates) AS p
      JOIN timefuse_destinations AS d ON d.key = p.key AND d.breaker = 'OPEN'
),
eligible AS (
    SELECT id, scheduled_at, next_attempt_at, destination_key FROM (
        SELECT c.*, h.allowed,
               row_number() OVER (PARTITION BY c.destination_key, c.source
                                  ORDER BY c.next_attempt_at, c.id) AS source_rank
          FROM candidates AS c
          LEFT JOIN held AS h ON h.destination_key = c.destination_key AND h.source = c.source
    ) AS c
     WHERE allowed IS NULL OR source_rank <= allowed
),
rules AS (
    SELECT k.key,
           COALESCE(o.cap, h.cap, t.cap, %(default_cap)s::integer) AS cap,
           COALESCE(o.rate, h.rate, t.rate, %(default_rate)s::double precision) AS rate,
           COALESCE(o.burst, h.burst, t.burst, %(default_burst)s::integer) AS burst
      FROM (SELECT DISTINCT ON (destination_key) destination_key AS key, delivery_type
              FROM candidates ORDER BY destination_key) AS k
      LEFT JOIN {_RULES.format(alias="o")} ON o.key = k.key
      LEFT JOIN {_RULES.format(alias="h")}
             ON h.key = regexp_replace(k.key, ':[0-9]+$', '') AND h.key <> k.key
      LEFT JOIN unnest(%(type_names)s::text[], %(type_caps)s::integer[],
                       %(type_rates)s::double precision[], %(type_bursts)s::integer[])
                AS t (name, cap, rate, burst) ON t.name = k.delivery_type
),
state AS (
    SELECT r.key, r.cap, r.rate, r.burst, d.tokens, d.refilled_at,
           COALESCE(d.breaker, 'CLOSED') = 'OPEN' AS open, d.opened_at, d.probe_by,
           d.probe_until, COALESCE(m.n, 0) AS mine,
           CASE WHEN r.cap > 0
                THEN (SELECT count(*) FROM events AS p
                       WHERE p.status = 'PROCESSING' AND p.destination_key = r.key
                         AND p.locked_by <> %(worker)s)
                ELSE 0 END AS others
      FROM rules AS r
      LEFT JOIN timefuse_destinations AS d ON d.key = r.key
      LEFT JOIN unnest(%(mine_keys)s::text[], %(mine_counts)s::integer[]) AS m (key, n)
             ON m.key = r.key
),
allowance AS (
    SELECT key, rate, open, {_TOKENS_NOW} AS tokens_now,
           CASE WHEN open THEN
                     CASE WHEN {_PROBE_FREE.format(d="")} THEN 1 ELSE 0 END
                ELSE least(CASE WHEN cap > 0 THEN greatest(cap - others - mine, 0)::integer
                                ELSE {_UNLIMITED} END,
                           CASE WHEN rate > 0 THEN floor({_TOKENS_NOW})::integer
                                ELSE {_UNLIMITED} END)
           END AS allowed
      FROM state
),
ranked AS (
    SELECT c.id, c.scheduled_at, c.next_attempt_at,
           row_number() OVER (PARTITION BY c.destination_key
                              ORDER BY c.next_attempt_at, c.id) AS rank,
           least(a.allowed, COALESCE(b.budget, %(default_budget)s::integer, {_UNLIMITED}))
               AS budget
      FROM eligible AS c
      JOIN allowance AS a ON a.key = c.destination_key
      LEFT JOIN unnest(%(budget_keys)s::text[], %(budgets)s::integer[]) AS b (key, budget)
             ON b.key = c.destination_key
),
due AS (
    SELECT id, scheduled_at FROM ranked
     WHERE rank <= budget
     ORDER BY next_attempt_at, id
     LIMIT %(limit)s
),
claimed AS (
    UPDATE events AS e
       SET status = 'PROCESSING',
           locked_by = %(worker)s,
           lock_expires_at = now() + make_interval(secs => %(lease)s),
           attempts = e.attempts + 1,
           claim_count = e.claim_count + 1,
           claimed_at = now(),
           updated_at = now()
     WHERE e.id = ANY(ARRAY(SELECT id FROM due))
       AND e.scheduled_at >= (SELECT min(scheduled_at) FROM due)
       AND e.scheduled_at <= (SELECT max(scheduled_at) FROM due)
    RETURNING {_E_COLUMNS}
),
taken AS (SELECT destination_key AS key, count(*) AS n FROM claimed GROUP BY destination_key),
spent AS (
    INSERT INTO timefuse_destinations AS d (key, tokens, refilled_at, probe_by, probe_until)
    SELECT a.key,
           CASE WHEN NOT a.open THEN a.tokens_now - t.n END,
           CASE WHEN NOT a.open THEN now() END,
           CASE WHEN a.open THEN %(worker)s END,
           CASE WHEN a.open THEN now() + make_interval(secs => %(lease)s) END
      FROM taken AS t JOIN allowance AS a ON a.key = t.key
     WHERE a.rate > 0 OR a.open
        ON CONFLICT (key) DO UPDATE
       SET tokens = COALESCE(EXCLUDED.tokens, d.tokens),
           refilled_at = COALESCE(EXCLUDED.refilled_at, d.refilled_at),
           probe_by = COALESCE(EXCLUDED.probe_by, d.probe_by),
           probe_until = COALESCE(EXCLUDED.probe_until, d.probe_until)
    RETURNING d.key, d.breaker = 'OPEN' AS probe
),
source_probes AS (
    UPDATE timefuse_destinations AS d
       SET probe_by = %(worker)s, probe_until = now() + make_interval(secs => %(lease)s)
      FROM (SELECT DISTINCT {_SOURCE_BREAKER_KEY.format(t="")} AS key FROM claimed) AS t
     WHERE d.key = t.key AND d.breaker = 'OPEN'
    RETURNING d.key
)
SELECT c.*, r.budget, COALESCE(s.probe, false) OR p.key IS NOT NULL, now()
  FROM claimed AS c LEFT JOIN spent AS s ON s.key = c.destination_key
  LEFT JOIN source_probes AS p ON p.key = {_SOURCE_BREAKER_KEY.format(t="c.")}
  JOIN ranked AS r ON r.id = c.id
"""

PUBLISH_BREAKER_OPEN = """
INSERT INTO timefuse_destinations AS d (key, breaker, opened_at) VALUES (%(key)s, 'OPEN', now())
    ON CONFLICT (key) DO UPDATE
   SET breaker = 'OPEN', opened_at = now(), probe_by = NULL, probe_until = NULL
"""

# A closed breaker's row goes unless it keeps a token bucket: rows of sources' breakers and
# of destinations without a rate don't pile up.
PUBLISH_BREAKER_CLOSED = """
WITH gone AS (DELETE FROM timefuse_destinations WHERE key = %(key)s AND tokens IS NULL)
UPDATE timefuse_destinations
   SET breaker = 'CLOSED', opened_at = NULL, probe_by = NULL, probe_until = NULL
 WHERE key = %(key)s AND tokens IS NOT NULL
"""

OPEN_BREAKERS = """
SELECT key, extract(epoch FROM now() - opened_at), probe_by FROM timefuse_destinations
 WHERE breaker = 'OPEN' ORDER BY key
"""

# The floor's lookup: the earliest PENDING row, from the front of the due index, or a moment
# before now if that is earlier (or there is none).
DUE_FLOOR = """
SELECT least(f.at, c.at), CASE WHEN f.at < c.at THEN f.id ELSE '' END
  FROM (SELECT now() - make_interval(secs => %(margin)s) AS at) AS c
  LEFT JOIN (SELECT next_attempt_at AS at, id FROM events
              WHERE status = 'PENDING' AND next_attempt_at IS NOT NULL
              ORDER BY next_attempt_at, id
              LIMIT 1) AS f ON true
"""

NEXT_DUE_AT = f"""
SELECT (SELECT min(next_attempt_at) FROM events
         WHERE status = 'PENDING'{_DUE_FILTER}), now()
"""

# -- outcomes ---------------------------------------------------------------------------------

# The claim a lease-bound write quotes: its token and its worker, on a PROCESSING row.
_HELD = "e.status = 'PROCESSING' AND e.claim_count = {b}.claim AND e.locked_by = {b}.worker"

# Attempt records are inserted only for the updates that applied (those RETURNING gives back),
# so history is kept exactly for the outcomes that counted; the statement's row count is the
# number applied. A retry is due its delay after the database's now; a success brings its
# executed_at. The record's sequence is the event's attempt_records, counted up here.
RECORD_OUTCOMES = f"""
WITH input AS (
    SELECT input.*, x.scheduled_at
      FROM unnest(%(event_id)b::text[], %(claim)b::integer[], %(worker)b::text[],
                  %(status)b::text[], %(retry_count)b::integer[], %(last_error)b::text[],
                  %(retry_delay)b::double precision[], %(executed_at)b::timestamptz[],
                  %(attempt)b::integer[], %(started_at)b::timestamptz[],
                  %(duration_ms)b::double precision[], %(outcome)b::text[],
                  %(status_code)b::integer[], %(error)b::text[])
           AS input (event_id, claim, worker, status, retry_count, last_error, retry_delay,
                     executed_at, attempt, started_at, duration_ms, outcome, status_code,
                     error)
      JOIN event_ids AS x ON x.id = input.event_id
),
applied AS (
    UPDATE events AS e
       SET status = input.status,
           retry_count = input.retry_count,
           last_error = input.last_error,
           next_attempt_at = CASE WHEN input.retry_delay IS NULL THEN e.next_attempt_at
                                  ELSE now() + make_interval(secs => input.retry_delay) END,
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
       AND {_HELD.format(b="input")}
    RETURNING e.id, e.attempt_records
)
INSERT INTO event_attempts (event_id, event_scheduled_at, attempt, started_at, duration_ms,
                            outcome, status_code, error, worker, sequence)
SELECT input.event_id, input.scheduled_at, input.attempt, input.started_at, input.duration_ms,
       input.outcome, input.status_code, input.error, input.worker, applied.attempt_records
  FROM input JOIN applied ON applied.id = input.event_id
RETURNING event_id
"""

# The claims of a batch of references, found by id within their scheduled_at range.
_REFERENCED = """
WITH refs AS (
    SELECT r.id, r.claim, r.worker, x.scheduled_at
      FROM unnest(%(ids)b::text[], %(claims)b::integer[], %(workers)b::text[])
           AS r (id, claim, worker)
      JOIN event_ids AS x ON x.id = r.id
)"""

_REFERENCED_ROWS = f"""
  FROM refs
 WHERE e.id = refs.id AND e.scheduled_at = refs.scheduled_at
   AND e.id = ANY(ARRAY(SELECT id FROM refs))
   AND e.scheduled_at >= (SELECT min(scheduled_at) FROM refs)
   AND e.scheduled_at <= (SELECT max(scheduled_at) FROM refs)
   AND {_HELD.format(b="refs")}
"""

# Attempts never made: the claim's attempt is not counted, retry_count and last_error stay.
HAND_BACK = f"""{_REFERENCED}
UPDATE events AS e
   SET status = 'PENDING',
       next_attempt_at = CASE WHEN %(delay)s::double precision = 0
                              THEN LEAST(e.next_attempt_at, now())
                              ELSE now() + make_interval(secs => %(delay)s) END,
       attempts = GREATEST(e.attempts - 1, 0),
       locked_by = NULL,
       lock_expires_at = NULL,
       updated_at = now()
{_REFERENCED_ROWS}"""

EXTEND_LEASES = f"""{_REFERENCED}
UPDATE events AS e
   SET lock_expires_at = now() + make_interval(secs => %(lease)s)
{_REFERENCED_ROWS}"""

# -- lease recovery ---------------------------------------------------------------------------

# timefuse.domain.lease.expire_lease in SQL: the lost attempt counts as failed; the last
# allowed attempt dead-letters. A claim is lost when its lease has expired or its worker was
# declared dead. Each keeps an attempt record from the claim until now; the holder and claim
# time are read before the update clears them. Rows locked right now (their worker is writing
# the outcome) are skipped: the next recovery sees them again if they are still lost.
# {lost}: the CTEs that end in "lost" (id, scheduled_at, locked_by, started_at), locked.
_RECOVER_LOST_CLAIMS = """
WITH {lost},
recovered AS (
    UPDATE events AS e
       SET status = CASE WHEN e.attempts >= e.max_retries + 1
                         THEN 'DEAD_LETTER' ELSE 'PENDING' END,
           next_attempt_at = CASE WHEN e.attempts >= e.max_retries + 1
                                  THEN e.next_attempt_at ELSE LEAST(e.next_attempt_at, now()) END,
           retry_count = e.retry_count + 1,
           last_error = %(error)s,
           locked_by = NULL,
           lock_expires_at = NULL,
           attempt_records = e.attempt_records + 1,
           updated_at = now()
     WHERE e.id = ANY(ARRAY(SELECT id FROM lost))
       AND e.scheduled_at >= (SELECT min(scheduled_at) FROM lost)
       AND e.scheduled_at <= (SELECT max(scheduled_at) FROM lost)
       AND e.status = 'PROCESSING'
    RETURNING e.id, e.scheduled_at, e.attempts, e.attempt_records,
              e.status = 'DEAD_LETTER' AND e.failure_callback_url IS NOT NULL AS calls_back
),
kept AS (
    INSERT INTO event_attempts (event_id, event_scheduled_at, attempt, started_at, duration_ms,
                                outcome, status_code, error, worker, sequence)
    SELECT recovered.id, recovered.scheduled_at, recovered.attempts, lost.started_at,
           extract(epoch FROM now() - lost.started_at) * 1000, 'RETRIABLE', NULL, %(error)s,
           COALESCE(lost.locked_by, ''), recovered.attempt_records
      FROM recovered JOIN lost ON lost.id = recovered.id
)
SELECT id, scheduled_at, calls_back FROM recovered
"""

_LOST_COLUMNS = "e.id, e.scheduled_at, e.locked_by, COALESCE(e.claimed_at, e.updated_at)"

# Expired leases, and every claim of the workers named: a restarted process's predecessor.
RECOVER_LOST_CLAIMS = _RECOVER_LOST_CLAIMS.format(
    lost=f"""lost (id, scheduled_at, locked_by, started_at) AS (
    SELECT {_LOST_COLUMNS}
      FROM events AS e
     WHERE e.status = 'PROCESSING'
       AND (e.lock_expires_at < now() OR e.locked_by = ANY(%(dead)s::text[]))
       FOR UPDATE SKIP LOCKED
)"""
)

# Expired leases, and the claims of the workers named that are still silent: each worker's
# heartbeat row is locked with its claims and re-read if a heartbeat changed it since the
# statement began (READ COMMITTED re-checks locked rows), so a worker heard of since it was
# judged keeps its claims; one whose heartbeat is being written right now is skipped.
RECOVER_LOST_CLAIMS_OF_SILENT = _RECOVER_LOST_CLAIMS.format(
    lost=f"""expired (id, scheduled_at, locked_by, started_at) AS (
    SELECT {_LOST_COLUMNS}
      FROM events AS e
     WHERE e.status = 'PROCESSING' AND e.lock_expires_at < now()
       FOR UPDATE SKIP LOCKED
),
abandoned (id, scheduled_at, locked_by, started_at) AS (
    SELECT {_LOST_COLUMNS}
      FROM events AS e
      JOIN timefuse_workers AS w ON w.worker = e.locked_by
     WHERE e.status = 'PROCESSING' AND e.locked_by = ANY(%(dead)s::text[])
       AND w.last_seen < now() - make_interval(secs => %(silent)s)
       FOR UPDATE OF e, w SKIP LOCKED
),
lost AS (SELECT * FROM expired UNION SELECT * FROM abandoned)"""
)

# The events recovery just dead-lettered that have a failure notice to send, as they are now
# (same transaction), and the transaction's now(): the instant recovery wrote.
RECOVERED_EVENTS = f"""
SELECT {_COLUMNS}, now() FROM events
 WHERE (id, scheduled_at) IN (SELECT * FROM unnest(%(ids)s::text[], %(at)s::timestamptz[]))
"""

# -- coordination -----------------------------------------------------------------------------

ACQUIRE_LEADERSHIP = """
INSERT INTO timefuse_leaders AS l (role, holder, expires_at)
VALUES (%(role)s, %(holder)s, now() + make_interval(secs => %(ttl)s))
    ON CONFLICT (role) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
 WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
RETURNING holder
"""

RELEASE_LEADERSHIP = "DELETE FROM timefuse_leaders WHERE role = %(role)s AND holder = %(holder)s"

HEARTBEAT = """
INSERT INTO timefuse_workers AS w (worker, roles, started_at, last_seen, in_flight)
VALUES (%(worker)s, %(roles)s, %(started_at)s, now(), %(in_flight)s)
    ON CONFLICT (worker) DO UPDATE SET roles = EXCLUDED.roles, started_at = EXCLUDED.started_at,
       last_seen = EXCLUDED.last_seen, in_flight = EXCLUDED.in_flight
"""

WORKERS = """
SELECT worker, roles, started_at, last_seen, extract(epoch FROM now() - last_seen), in_flight
  FROM timefuse_workers ORDER BY last_seen DESC
"""

FORGET_WORKERS = """
DELETE FROM timefuse_workers WHERE last_seen < now() - make_interval(secs => %(silent)s)
"""

# -- operator actions -------------------------------------------------------------------------

_SCHEDULED_AT_OF_ID = "(SELECT scheduled_at FROM event_ids WHERE id = %(id)s)"
# A NULL sources array: any source.
_OF_SOURCES = "(%(sources)s::text[] IS NULL OR source = ANY(%(sources)s::text[]))"

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

# Whether the action applied, and whether the event is there for the caller at all.
_CONDITIONAL = f"""
WITH changed AS (
    UPDATE events {{set}}
     WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID}
       AND status = ANY(%(when)s::text[]) AND {_OF_SOURCES}
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM changed),
       EXISTS (SELECT 1 FROM events WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID}
                                      AND {_OF_SOURCES})
"""

CANCEL = _CONDITIONAL.format(set="SET status = 'CANCELLED', updated_at = now()")

REDELIVER = _CONDITIONAL.format(set=REDELIVER_SET)

_SQL_TYPE_OF = dict(EVENT_SQL_COLUMNS)

# The row is found by its current scheduled_at (from event_ids) and may move to another
# partition with a new one; AMEND_MOVED then moves its id's entry and attempt history along.
AMEND_LOCK = "SELECT scheduled_at FROM event_ids WHERE id = %(id)s FOR UPDATE"
AMEND = (
    "UPDATE events SET "
    + ", ".join(f"{name} = %({name})s::{_SQL_TYPE_OF[name]}" for name in AMENDED_COLUMN_NAMES)
    + " WHERE id = %(id)s AND scheduled_at = %(old_scheduled_at)s"
    " AND status = ANY(%(when)s::text[]) AND version = %(basis_version)s"
    " AND claim_count = %(basis_claim_count)s"
    " AND next_attempt_at = %(basis_next_attempt_at)s::timestamptz"
)
AMEND_MOVED_ID = "UPDATE event_ids SET scheduled_at = %(scheduled_at)s WHERE id = %(id)s"
AMEND_MOVED_ATTEMPTS = """
UPDATE event_attempts SET event_scheduled_at = %(scheduled_at)s
 WHERE event_id = %(id)s AND event_scheduled_at = %(old_scheduled_at)s
"""

# Only the next attempt moves: scheduled_at, the partition key, stays where it is.
MOVE_DUE = _CONDITIONAL.format(set="SET next_attempt_at = %(due_at)s, updated_at = %(now)s")

# The dedup key (external_job_id, source, scheduled_at) serves both forms.
CANCEL_BY_EXTERNAL_ID = f"""
UPDATE events SET status = 'CANCELLED', updated_at = now()
 WHERE external_job_id = %(external_job_id)s AND status = ANY(%(when)s::text[])
   AND {_OF_SOURCES}
"""

GET = f"""
SELECT {_COLUMNS} FROM events WHERE id = %(id)s AND scheduled_at = {_SCHEDULED_AT_OF_ID}
"""

# A batch's ids, each found through event_ids (its scheduled_at: the partition to read).
GET_MANY = f"""
SELECT {_E_COLUMNS} FROM event_ids AS i
  JOIN events AS e ON e.id = i.id AND e.scheduled_at = i.scheduled_at
 WHERE i.id = ANY(%(ids)s::text[])
"""

FIND_BY_EXTERNAL_ID = f"""
SELECT {_COLUMNS} FROM events
 WHERE external_job_id = %(external_job_id)s AND {_OF_SOURCES}
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s
"""

COUNT_BY_STATUS = "SELECT status, sum(n)::bigint FROM timefuse_status_counts GROUP BY status"

COUNT_BY_STATUS_OF_SOURCES = """
SELECT status, sum(n)::bigint FROM timefuse_status_counts
 WHERE source = ANY(%(sources)s::text[])
 GROUP BY status
"""

PENDING_BY_SOURCE = """
SELECT source, sum(n)::bigint FROM timefuse_status_counts
 WHERE status = 'PENDING' AND source = ANY(%(sources)s::text[])
 GROUP BY source
"""

# Folds the counting slots of each (source, status) into one row and drops the rows that
# count nothing; concurrent writers just add rows of their own again.
COMPACT_STATUS_COUNTS = """
WITH folded AS (DELETE FROM timefuse_status_counts RETURNING source, status, n)
INSERT INTO timefuse_status_counts AS c (source, status, slot, n)
SELECT source, status, 0, sum(n) FROM folded GROUP BY source, status HAVING sum(n) <> 0
 ORDER BY source, status
    ON CONFLICT (source, status, slot) DO UPDATE SET n = c.n + EXCLUDED.n
"""

ATTEMPTS = f"""
SELECT attempt, started_at, duration_ms, outcome, status_code, error, worker, sequence
  FROM event_attempts
 WHERE event_id = %(id)s AND event_scheduled_at = {_SCHEDULED_AT_OF_ID}
 ORDER BY sequence
"""

MISSING_DESTINATION_KEYS = """
SELECT id, scheduled_at, delivery_type, destination FROM events
 WHERE destination_key = '' AND status IN ('PENDING', 'PROCESSING')
 LIMIT 1000
"""

SET_DESTINATION_KEYS = """
UPDATE events AS e SET destination_key = k.key
  FROM unnest(%(ids)s::text[], %(scheduled)s::timestamptz[], %(keys)s::text[])
       AS k (id, scheduled_at, key)
 WHERE e.id = k.id AND e.scheduled_at = k.scheduled_at
"""

NOW = "SELECT now()"
