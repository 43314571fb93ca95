-- Schema version 3 -> 4: recurring schedules, and the index that lists their occurrences.
-- Run by SqliteEventStore.open() in one transaction.

CREATE TABLE timefuse_schedules (
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

CREATE UNIQUE INDEX timefuse_schedules_key ON timefuse_schedules (source, key);

CREATE INDEX timefuse_schedules_due ON timefuse_schedules (next_run_at) WHERE state = 'ACTIVE';

CREATE INDEX events_occurrences
    ON events (json_extract(extra, '$.schedule_id'), scheduled_at, id)
    WHERE json_extract(extra, '$.schedule_id') IS NOT NULL;

UPDATE schema_version SET version = 4;
