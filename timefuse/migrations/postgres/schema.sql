-- timefuse event store on PostgreSQL: the whole schema as the migrations leave it.
--
-- A snapshot for readers and for tests/integration/postgres/test_migrations.py, which builds
-- one database from this file and one from every migration in order and requires identical
-- catalogs. Databases are created and upgraded by PostgresEventStore.migrate(), never from
-- this file; change the schema with a new numbered migration, then update this file.

CREATE TABLE timefuse_schema_version (
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT timefuse_schema_version_pkey PRIMARY KEY (version)
);

INSERT INTO timefuse_schema_version (version, name) VALUES
    (1, '0001_events.sql'),
    (2, '0002_status_counts.sql');

-- 0001_events.sql ----------------------------------------------------------------------------

CREATE TABLE events (
    id                        text COLLATE "C" NOT NULL,
    external_job_id           text             NOT NULL,
    source                    text             NOT NULL,
    scheduled_at              timestamptz      NOT NULL,
    delivery_type             text             NOT NULL,
    destination               text             NOT NULL,
    -- bytea, not jsonb: jsonb reorders keys and rewrites whitespace, and the payload must be
    -- delivered byte for byte as it was accepted.
    payload                   bytea            NOT NULL,
    next_attempt_at           timestamptz      NOT NULL,
    created_at                timestamptz      NOT NULL,
    updated_at                timestamptz      NOT NULL,
    max_retries               integer          NOT NULL,
    status                    text             NOT NULL,
    attempts                  integer          NOT NULL DEFAULT 0,
    retry_count               integer          NOT NULL DEFAULT 0,
    last_error                text,
    executed_at               timestamptz,
    locked_by                 text,
    lock_expires_at           timestamptz,
    delivery_window_seconds   double precision NOT NULL DEFAULT 0,
    retry_backoff_seconds     double precision,
    retry_backoff_max_seconds double precision,
    extra                     jsonb            NOT NULL DEFAULT '{}',
    CONSTRAINT events_pkey PRIMARY KEY (id, scheduled_at),
    CONSTRAINT events_status_check CHECK (status IN (
        'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'DEAD_LETTER', 'CANCELLED'))
) PARTITION BY RANGE (scheduled_at);

-- Catches every event no dated partition covers (years ahead, or a day whose partition does
-- not exist yet), so an insert is never rejected for a missing partition. Creating a dated
-- partition later moves its rows out of here.
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- The dedup key: a resubmission of the same job for the same instant is the same event. It
-- contains the partition key, so a partitioned unique index can enforce it.
CREATE UNIQUE INDEX events_dedup_key ON events (source, external_job_id, scheduled_at);

-- The claim: only PENDING rows are indexed, so each partition's index stays as small as its
-- backlog and delivered events cost nothing here.
CREATE INDEX events_due ON events (next_attempt_at) WHERE status = 'PENDING';

CREATE INDEX events_external_job_id ON events (external_job_id, created_at);

-- Retention (terminal status, updated_at < cutoff) and lease recovery (the 'PROCESSING'
-- prefix holds only in-flight events).
CREATE INDEX events_retention ON events (status, updated_at);

-- One row per stored event, unpartitioned: the primary key makes an id unique across all
-- partitions (a partitioned index can't), and maps an id to its scheduled_at so look-ups by
-- id touch one partition. Inserted in the same statement as the event.
CREATE TABLE event_ids (
    id           text COLLATE "C" NOT NULL,
    scheduled_at timestamptz      NOT NULL,
    CONSTRAINT event_ids_pkey PRIMARY KEY (id)
);

-- Lets retention remove the ids of a dropped partition by range.
CREATE INDEX event_ids_scheduled_at ON event_ids (scheduled_at);

-- Ranges whose partitions retention dropped but whose event_ids rows are still to be
-- deleted (in bounded batches, after the drop, so the drop itself stays short).
CREATE TABLE timefuse_event_id_cleanup (
    lower_bound timestamptz NOT NULL,
    upper_bound timestamptz NOT NULL,
    CONSTRAINT timefuse_event_id_cleanup_pkey PRIMARY KEY (lower_bound, upper_bound)
);

-- Attempts are partitioned exactly like their events (by the event's scheduled_at, same
-- bounds), so the attempts of a dropped partition's events go with it.
CREATE SEQUENCE event_attempts_id_seq AS bigint;

CREATE TABLE event_attempts (
    id                 bigint           NOT NULL DEFAULT nextval('event_attempts_id_seq'),
    event_id           text COLLATE "C" NOT NULL,
    event_scheduled_at timestamptz      NOT NULL,
    attempt            integer          NOT NULL,
    started_at         timestamptz      NOT NULL,
    duration_ms        double precision NOT NULL,
    outcome            text             NOT NULL,
    status_code        integer,
    error              text,
    worker             text             NOT NULL,
    -- Leads with event_id: the one index serves "the attempts of this event, oldest first".
    CONSTRAINT event_attempts_pkey PRIMARY KEY (event_id, id, event_scheduled_at),
    CONSTRAINT event_attempts_outcome_check CHECK (outcome IN ('SUCCESS', 'RETRIABLE', 'PERMANENT'))
) PARTITION BY RANGE (event_scheduled_at);

ALTER SEQUENCE event_attempts_id_seq OWNED BY event_attempts.id;

CREATE TABLE event_attempts_default PARTITION OF event_attempts DEFAULT;

-- 0002_status_counts.sql ---------------------------------------------------------------------

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

CREATE TRIGGER events_count_inserted
    AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

CREATE TRIGGER events_count_updated
    AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

CREATE TRIGGER events_count_deleted
    AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

