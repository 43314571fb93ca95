-- Due events in (due time, id) order: a claim that reads the due events of some destinations
-- stops at a given due row, even when thousands fell due at the same instant (a cron time, a
-- herd). With the due time alone, every row tied with it was read. Only PENDING rows are in
-- it: a claim's or an outcome's update doesn't write to it.
--
-- The table is locked first, in the mode the index swap needs: taking it only for the DROP,
-- after the build, would upgrade a lock while claims that read events wait to write them (a
-- deadlock). Reads and writes of events wait for the build: on a large table, migrate in a
-- quiet moment.
LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
CREATE INDEX events_due_by_id ON events (next_attempt_at, id) WHERE status = 'PENDING';
DROP INDEX events_due;
ALTER INDEX events_due_by_id RENAME TO events_due;
