-- Exact per-status counts without a COUNT(*) over the events table on every request.
--
-- Statement-level triggers with transition tables add each statement's net change per status.
-- A single row per status would be a hot spot: every claim and every outcome batch updates the
-- PENDING/PROCESSING rows, so concurrent dispatchers would queue on those row locks. Counts are
-- therefore spread over 16 slots per status, picked by backend pid (one pooled connection
-- always writes the same slot, different connections mostly different ones), and summed on
-- read: at most 6 x 16 tiny rows.

CREATE TABLE timefuse_status_counts (
    status text     NOT NULL,
    slot   smallint NOT NULL,
    n      bigint   NOT NULL,
    CONSTRAINT timefuse_status_counts_pkey PRIMARY KEY (status, slot)
);

-- Also called by retention, whose partition drops and per-partition deletes fire no trigger on
-- events. Rows are locked in status order so two statements never wait on each other's slot
-- rows in opposite orders (no deadlock). Callers pass each status at most once.
CREATE FUNCTION timefuse_add_status_counts(statuses text[], deltas bigint[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO timefuse_status_counts AS c (status, slot, n)
    SELECT status, pg_backend_pid() % 16, delta
      FROM unnest(statuses, deltas) AS d (status, delta)
     WHERE delta <> 0
     ORDER BY status
        ON CONFLICT (status, slot) DO UPDATE SET n = c.n + EXCLUDED.n
$$;

CREATE FUNCTION timefuse_count_event_statuses() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM timefuse_add_status_counts(array_agg(status), array_agg(n))
           FROM (SELECT status, count(*) AS n FROM new_rows GROUP BY status) AS c;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM timefuse_add_status_counts(array_agg(status), array_agg(-n))
           FROM (SELECT status, count(*) AS n FROM old_rows GROUP BY status) AS c;
    ELSE
        PERFORM timefuse_add_status_counts(array_agg(status), array_agg(n))
           FROM (SELECT status, sum(delta)::bigint AS n
                   FROM (SELECT status, 1 AS delta FROM new_rows
                         UNION ALL
                         SELECT status, -1 AS delta FROM old_rows) AS changes
                  GROUP BY status) AS c;
    END IF;
    RETURN NULL;
END
$$;

-- Before the backfill: creating the triggers locks out writers until this migration commits,
-- so no row is counted twice or missed.
CREATE TRIGGER events_count_inserted
    AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

CREATE TRIGGER events_count_updated
    AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

CREATE TRIGGER events_count_deleted
    AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

INSERT INTO timefuse_status_counts (status, slot, n)
SELECT status, 0, count(*) FROM events GROUP BY status;
