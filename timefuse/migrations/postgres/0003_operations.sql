-- What the port's later operations need: attempt numbering across redeliveries, the attempt
-- record of an expired lease, listings in (scheduled_at, id) order, and counts per source.

-- claimed_at: when the event was last claimed, the start of the attempt a lease expiry
-- records. attempt_records: how many attempt records the event has, so the next record's
-- sequence comes from the row being updated anyway, with no look-up in event_attempts.
ALTER TABLE events
    ADD COLUMN claimed_at      timestamptz,
    ADD COLUMN attempt_records integer NOT NULL DEFAULT 0;

-- The record's place in the event's whole history, from 1, never reused (attempt restarts
-- from 1 after a redelivery; sequence doesn't).
ALTER TABLE event_attempts ADD COLUMN sequence integer NOT NULL DEFAULT 0;

-- Histories written before this migration, numbered in the order they were written.
UPDATE event_attempts AS a
   SET sequence = numbered.n
  FROM (SELECT id, event_scheduled_at,
               row_number() OVER (PARTITION BY event_id ORDER BY id) AS n
          FROM event_attempts) AS numbered
 WHERE a.id = numbered.id AND a.event_scheduled_at = numbered.event_scheduled_at;

UPDATE events AS e
   SET attempt_records = history.n
  FROM (SELECT event_id, event_scheduled_at, max(sequence) AS n
          FROM event_attempts GROUP BY event_id, event_scheduled_at) AS history
 WHERE e.id = history.event_id AND e.scheduled_at = history.event_scheduled_at;

-- Two indexes for listings make every write to events costlier (an update of a status is
-- never HOT, so it adds an entry to every index the new row version belongs in). Two others
-- are reshaped so that a write touches no more indexes than before:
--
-- * external_job_id now leads the dedup key, so that one index also serves look-ups and
--   cancels by external id, and events_external_job_id goes;
-- * retention only ever looks for terminal rows: a partial index holds only those, so claims
--   and retries add nothing to it. Lease recovery and the drop check find PENDING and
--   PROCESSING rows through events_status_schedule (and events_due) instead.
DROP INDEX events_external_job_id;
DROP INDEX events_dedup_key;
CREATE UNIQUE INDEX events_dedup_key ON events (external_job_id, source, scheduled_at);

DROP INDEX events_retention;
CREATE INDEX events_retention ON events (updated_at)
    WHERE status IN ('CANCELLED', 'COMPLETED', 'DEAD_LETTER', 'FAILED');

-- Listings, in their order (scheduled_at, id): a page is one index range from its cursor in
-- each partition. Listings by status (dead letters to replay, say) have their own, so a rare
-- status is found without walking every other event.
CREATE INDEX events_schedule ON events (scheduled_at, id);
CREATE INDEX events_status_schedule ON events (status, scheduled_at, id);

-- Counts per source as well as per status, for callers limited to some sources. The ALTER
-- TABLE above keeps writers out until this migration commits, so the recount below is exact.
DROP TABLE timefuse_status_counts;

CREATE TABLE timefuse_status_counts (
    source text     NOT NULL,
    status text     NOT NULL,
    slot   smallint NOT NULL,
    n      bigint   NOT NULL,
    CONSTRAINT timefuse_status_counts_pkey PRIMARY KEY (source, status, slot)
);

DROP FUNCTION timefuse_add_status_counts(text[], bigint[]);

-- Rows are locked in key order so that two statements never wait on each other's rows in
-- opposite orders. Callers pass each (source, status) at most once.
CREATE FUNCTION timefuse_add_status_counts(sources text[], statuses text[], deltas bigint[])
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO timefuse_status_counts AS c (source, status, slot, n)
    SELECT source, status, pg_backend_pid() % 16, delta
      FROM unnest(sources, statuses, deltas) AS d (source, status, delta)
     WHERE delta <> 0
     ORDER BY source, status
        ON CONFLICT (source, status, slot) DO UPDATE SET n = c.n + EXCLUDED.n
$$;

CREATE OR REPLACE FUNCTION timefuse_count_event_statuses() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM timefuse_add_status_counts(array_agg(source), array_agg(status), array_agg(n))
           FROM (SELECT source, status, count(*) AS n FROM new_rows
                  GROUP BY source, status) AS c;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM timefuse_add_status_counts(array_agg(source), array_agg(status), array_agg(-n))
           FROM (SELECT source, status, count(*) AS n FROM old_rows
                  GROUP BY source, status) AS c;
    ELSE
        PERFORM timefuse_add_status_counts(array_agg(source), array_agg(status), array_agg(n))
           FROM (SELECT source, status, sum(delta)::bigint AS n
                   FROM (SELECT source, status, 1 AS delta FROM new_rows
                         UNION ALL
                         SELECT source, status, -1 AS delta FROM old_rows) AS changes
                  GROUP BY source, status) AS c;
    END IF;
    RETURN NULL;
END
$$;

INSERT INTO timefuse_status_counts (source, status, slot, n)
SELECT source, status, 0, count(*) FROM events GROUP BY source, status;
