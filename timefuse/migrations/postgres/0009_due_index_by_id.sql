-- Due events in (due time, id) order: a claim that reads the due events of some destinations
-- stops at a given due row, even when thousands fell due at the same instant (a cron time, a
-- herd). With the due time alone, every row tied with it was read. Only PENDING rows are in
-- it: a claim's or an outcome's update doesn't write to it. Built before the old one goes, so
-- reads go on meanwhile; building it holds writes to events back until this migration
-- commits: on a large backlog, migrate in a quiet moment.
CREATE INDEX events_due_by_id ON events (next_attempt_at, id) WHERE status = 'PENDING';
DROP INDEX events_due;
ALTER INDEX events_due_by_id RENAME TO events_due;
