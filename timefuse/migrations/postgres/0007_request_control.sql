-- Per-event HTTP options (method, headers, body, timeout, success statuses), as one JSON
-- object: empty for a plain JSON POST. version: the event's version from 1, bumped by every
-- change of a PENDING event. callback_url, failure_callback_url: completion callbacks;
-- parent_id: the event a callback reports on. Columns with a constant default (or none)
-- rewrite no partition.
ALTER TABLE events
    ADD COLUMN http    jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN callback_url text,
    ADD COLUMN failure_callback_url text,
    ADD COLUMN parent_id text COLLATE "C";
