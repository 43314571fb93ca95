-- timefuse event store, SQLite flavour: the current schema, which SqliteEventStore.open()
-- creates in a new database file. A file made by an earlier version is brought up to date by
-- the numbered migrations beside this file instead; applying them to version 1 must give
-- exactly this schema (a test compares the two), so a column added by a migration is added
-- here last, with the same declaration.
--
-- Times are INTEGER microseconds since 1970-01-01 UTC: comparisons and ORDER BY are integer
-- compares, and microseconds match PostgreSQL's timestamptz precision, so an event round-trips
-- through either store unchanged.

CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);

INSERT INTO schema_version (version)
SELECT 4 WHERE NOT EXISTS (SELECT 1 FROM schema_version);

-- A rowid table (not WITHOUT ROWID): payloads can reach 1 MiB, and SQLite advises against
-- WITHOUT ROWID for rows that large. The claim subquery selects rowids straight from the
-- partial index, so the text primary key is not consulted on the hot path.
CREATE TABLE IF NOT EXISTS events (
    id                        TEXT    NOT NULL PRIMARY KEY,
    external_job_id           TEXT    NOT NULL,
    source                    TEXT    NOT NULL,
    scheduled_at              INTEGER NOT NULL,
    delivery_type             TEXT    NOT NULL,
    destination               TEXT    NOT NULL,
    payload                   BLOB    NOT NULL,
    next_attempt_at           INTEGER NOT NULL,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,
    max_retries               INTEGER NOT NULL,
    status                    TEXT    NOT NULL CHECK (status IN (
        'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'DEAD_LETTER', 'CANCELLED')),
    attempts                  INTEGER NOT NULL DEFAULT 0,
    retry_count               INTEGER NOT NULL DEFAULT 0,
    last_error                TEXT,
    executed_at               INTEGER,
    locked_by                 TEXT,
    lock_expires_at           INTEGER,
    delivery_window_seconds   REAL    NOT NULL DEFAULT 0,
    retry_backoff_seconds     REAL,
    retry_backoff_max_seconds REAL,
    extra                     TEXT    NOT NULL DEFAULT '{}',
    -- When the event was last claimed: the start of the attempt a lease expiry records.
    claimed_at                INTEGER,
    -- The receiver's canonical name (timefuse.domain.destination), for limits and breakers.
    destination_key           TEXT    NOT NULL DEFAULT '',
    -- Claims ever made of the event, never going back: the token of the current claim.
    claim_count               INTEGER NOT NULL DEFAULT 0
);

-- The dedup key: a resubmission of the same job for the same instant is the same event.
-- external_job_id leads, so this index also serves lookups and cancels by external id: one
-- index on random keys to update per insert instead of two.
CREATE UNIQUE INDEX IF NOT EXISTS events_dedup_key
    ON events (external_job_id, source, scheduled_at);

-- The claim: only PENDING rows are indexed, so the index stays as small as the backlog and
-- delivered events cost nothing here. The destination and type let a claim skip what it must
-- leave (a destination its breaker closed, a type this process can't deliver) in the index.
CREATE INDEX IF NOT EXISTS events_due
    ON events (next_attempt_at, destination_key, delivery_type) WHERE status = 'PENDING';

-- Retention scans (status IN terminal, updated_at < cutoff). It also serves lease recovery:
-- its ('PROCESSING', ...) prefix holds only in-flight events, so no separate lease index.
CREATE INDEX IF NOT EXISTS events_retention
    ON events (status, updated_at);

-- Listings, in their order (scheduled_at, id): a page is one index range from its cursor.
-- Listings by status (dead letters to replay, say) have their own, so a rare status is found
-- without walking every other event.
CREATE INDEX IF NOT EXISTS events_schedule
    ON events (scheduled_at, id);

CREATE INDEX IF NOT EXISTS events_status_schedule
    ON events (status, scheduled_at, id);

-- No foreign key to events: attempts are written only under a live lease (checked in the
-- same transaction) and deleted with their event by the retention job.
-- attempt is the number within a delivery round (events.attempts at the claim), which a
-- redelivery starts again; attempt_seq numbers the event's whole history and never repeats.
CREATE TABLE IF NOT EXISTS event_attempts (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms REAL    NOT NULL,
    outcome     TEXT    NOT NULL,
    status_code INTEGER,
    error       TEXT,
    worker      TEXT    NOT NULL,
    attempt_seq INTEGER NOT NULL DEFAULT 0
);

-- Serves the history of one event, and the next attempt_seq (its maximum + 1) in one seek.
CREATE UNIQUE INDEX IF NOT EXISTS event_attempts_event_seq
    ON event_attempts (event_id, attempt_seq);

-- Leadership of process-wide work (maintenance): one holder per role until its time runs out.
CREATE TABLE IF NOT EXISTS timefuse_leaders (
    role       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Processes heard of recently: their heartbeats, for lease recovery and the admin API.
CREATE TABLE IF NOT EXISTS timefuse_workers (
    worker     TEXT    NOT NULL PRIMARY KEY,
    roles      TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    in_flight  INTEGER NOT NULL DEFAULT 0
);

-- Recurring schedules. next_run_at is the next instant still to run (NULL: the schedule is
-- over); the planner finds running schedules due by it, through an index that holds only
-- ACTIVE ones, so it never scans the others. version is bumped by every write: writers name
-- the version they read (compare-and-set), so the planner and an update can't undo each other.
CREATE TABLE IF NOT EXISTS timefuse_schedules (
    id            TEXT    NOT NULL PRIMARY KEY,
    source        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('ACTIVE', 'PAUSED', 'ENDED')),
    next_run_at   INTEGER,
    paused        INTEGER NOT NULL,
    cron          TEXT,
    every_seconds INTEGER,
    timezone      TEXT    NOT NULL,
    start_at      INTEGER,
    end_at        INTEGER,
    max_runs      INTEGER,
    missed_runs   TEXT    NOT NULL,
    runs          INTEGER NOT NULL,
    last_instant  INTEGER,
    not_before    INTEGER NOT NULL,
    template      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- The client's name of a schedule, unique per source; also the listing order.
CREATE UNIQUE INDEX IF NOT EXISTS timefuse_schedules_key ON timefuse_schedules (source, key);

CREATE INDEX IF NOT EXISTS timefuse_schedules_due
    ON timefuse_schedules (next_run_at) WHERE state = 'ACTIVE';

-- A schedule's occurrences, newest first: only events a schedule made are in it.
CREATE INDEX IF NOT EXISTS events_occurrences
    ON events (json_extract(extra, '$.schedule_id'), scheduled_at, id)
    WHERE json_extract(extra, '$.schedule_id') IS NOT NULL;
