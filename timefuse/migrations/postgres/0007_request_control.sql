-- Per-event HTTP options (method, headers, body, timeout, success statuses), as one JSON
-- object: empty for a plain JSON POST. Adding a column with a constant default rewrites no
-- partition.
ALTER TABLE events ADD COLUMN http jsonb NOT NULL DEFAULT '{}';
