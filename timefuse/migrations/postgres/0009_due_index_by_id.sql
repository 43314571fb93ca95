-- Due events in (due time, id) order: a claim that reads the due events of some destinations
-- stops at the :scan-th due row of all, even when thousands fell due at the same instant (a
-- cron time, a herd). With the due time alone, rows tied with that row were all read. Only
-- PENDING rows are in it: a claim's or an outcome's update doesn't write to it. Building it
-- holds writes to events back until this migration commits: on a large backlog, migrate in a
-- quiet moment.
DROP INDEX events_due;
CREATE INDEX events_due ON events (next_attempt_at, id) WHERE status = 'PENDING';
