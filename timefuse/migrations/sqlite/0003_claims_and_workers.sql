-- Schema version 2 -> 3: claim tokens, canonical destination keys, leadership and heartbeats.
-- Run by SqliteEventStore.open() in one transaction; the store then fills the destination keys
-- of the events already stored (timefuse.domain.destination computes them, SQL can't).

ALTER TABLE events ADD COLUMN destination_key TEXT NOT NULL DEFAULT '';

-- An event claimed now counts one claim: its current lease is that claim's.
ALTER TABLE events ADD COLUMN claim_count INTEGER NOT NULL DEFAULT 0;

UPDATE events SET claim_count = attempts WHERE attempts > 0;

DROP INDEX events_due;

CREATE INDEX events_due
    ON events (next_attempt_at, destination_key, delivery_type) WHERE status = 'PENDING';

CREATE TABLE timefuse_leaders (
    role       TEXT    NOT NULL PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE timefuse_workers (
    worker     TEXT    NOT NULL PRIMARY KEY,
    roles      TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    in_flight  INTEGER NOT NULL DEFAULT 0
);

UPDATE schema_version SET version = 3;
