-- Schema version 4 -> 5: per-event HTTP options (method, headers, body, timeout, statuses),
-- and the event's version, which every change of a PENDING event bumps.

ALTER TABLE events ADD COLUMN http TEXT NOT NULL DEFAULT '{}';

ALTER TABLE events ADD COLUMN version INTEGER NOT NULL DEFAULT 1;

-- Completion callbacks, and the event a callback reports on.
ALTER TABLE events ADD COLUMN callback_url TEXT;

ALTER TABLE events ADD COLUMN failure_callback_url TEXT;

ALTER TABLE events ADD COLUMN parent_id TEXT;

UPDATE schema_version SET version = 5;
