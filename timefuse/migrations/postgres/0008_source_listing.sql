-- A tenant's listings cost what its own events cost, not what the whole table holds.

-- Listings of some sources (every listing of a key scoped to sources) read one range per
-- (source, status) in listing order, merged: a page of a rare source is a few index ranges,
-- however many events other sources keep. The counts per source and status that tell which
-- pairs hold events are timefuse_status_counts (0003). Building it holds writes to events
-- back until this migration commits: on a large table, migrate in a quiet moment.
CREATE INDEX events_source_status_schedule ON events (source, status, scheduled_at, id);
