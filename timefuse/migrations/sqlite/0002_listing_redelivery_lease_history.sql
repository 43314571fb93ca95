-- Schema version 1 -> 2: listings, redelivery with continuous attempt numbering, and the
-- attempt record a lease expiry leaves. Run by SqliteEventStore.open() in one transaction.

ALTER TABLE events ADD COLUMN claimed_at INTEGER;

-- An event PROCESSING now was claimed at its last update: a claim is the last write to a
-- PROCESSING row.
UPDATE events SET claimed_at = updated_at WHERE status = 'PROCESSING';

CREATE INDEX events_schedule
    ON events (scheduled_at, id);

CREATE INDEX events_status_schedule
    ON events (status, scheduled_at, id);

ALTER TABLE event_attempts ADD COLUMN attempt_seq INTEGER NOT NULL DEFAULT 0;

-- Version 1 never redelivered, so the existing history is numbered in the order it was kept.
UPDATE event_attempts
   SET attempt_seq = ranked.seq
  FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY id) AS seq
          FROM event_attempts) AS ranked
 WHERE event_attempts.id = ranked.id;

DROP INDEX event_attempts_event_id;

CREATE UNIQUE INDEX event_attempts_event_seq
    ON event_attempts (event_id, attempt_seq);

UPDATE schema_version SET version = 2;
