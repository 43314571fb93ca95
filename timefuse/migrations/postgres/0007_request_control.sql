-- Per-event HTTP options (method, headers, body, timeout, success statuses), as one JSON
-- object: empty for a plain JSON POST. version: the event's version from 1, bumped by every
-- change of a PENDING event. Columns with a constant default rewrite no partition.
ALTER TABLE events
    ADD COLUMN http    jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN version integer NOT NULL DEFAULT 1;
