-- Schema version 4 -> 5: per-event HTTP options (method, headers, body, timeout, statuses).

ALTER TABLE events ADD COLUMN http TEXT NOT NULL DEFAULT '{}';

UPDATE schema_version SET version = 5;
