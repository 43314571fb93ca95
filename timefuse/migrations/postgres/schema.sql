-- timefuse event store on PostgreSQL: the whole schema as the migrations leave it.
--
-- A snapshot for readers and for tests/integration/postgres/test_migrations.py, which builds
-- one database from this file and one from every migration in order and requires identical
-- catalogs (columns in the same order included). Databases are created and upgraded by
-- PostgresEventStore.migrate(), never from this file; change the schema with a new numbered
-- migration, then bring this file up to date. The reasons behind each object are in the
-- migration that made it.

CREATE TABLE timefuse_schema_version (
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT timefuse_schema_version_pkey PRIMARY KEY (version)
);

INSERT INTO timefuse_schema_version (version, name) VALUES
    (1, '0001_events.sql'),
    (2, '0002_status_counts.sql'),
    (3, '0003_operations.sql'),
    (4, '0004_claims_and_workers.sql'),
    (5, '0005_shared_limits.sql'),
    (6, '0006_schedules.sql'),
    (7, '0007_request_control.sql'),
    (8, '0008_source_listing.sql'),
    (9, '0009_due_index_by_id.sql');

-- Events, RANGE-partitioned by scheduled_at; dated partitions are created at run time.
CREATE TABLE events (
    id                        text COLLATE "C" NOT NULL,
    external_job_id           text             NOT NULL,
    source                    text             NOT NULL,
    scheduled_at              timestamptz      NOT NULL,
    delivery_type             text             NOT NULL,
    destination               text             NOT NULL,
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
    claimed_at                timestamptz,
    attempt_records           integer          NOT NULL DEFAULT 0,
    destination_key           text             NOT NULL DEFAULT '',
    claim_count               integer          NOT NULL DEFAULT 0,
    http                      jsonb            NOT NULL DEFAULT '{}',
    version                   integer          NOT NULL DEFAULT 1,
    callback_url              text,
    failure_callback_url      text,
    parent_id                 text COLLATE "C",
    CONSTRAINT events_pkey PRIMARY KEY (id, scheduled_at),
    CONSTRAINT events_status_check CHECK (status IN (
        'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'DEAD_LETTER', 'CANCELLED'))
) PARTITION BY RANGE (scheduled_at);

CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE INDEX events_due ON events (next_attempt_at, id) WHERE status = 'PENDING';

CREATE UNIQUE INDEX events_dedup_key ON events (external_job_id, source, scheduled_at);

CREATE INDEX events_retention ON events (updated_at)
    WHERE status IN ('CANCELLED', 'COMPLETED', 'DEAD_LETTER', 'FAILED');

CREATE INDEX events_schedule ON events (scheduled_at, id);

CREATE INDEX events_status_schedule ON events (status, scheduled_at, id);

CREATE INDEX events_in_flight ON events (destination_key) WHERE status = 'PROCESSING';
CREATE INDEX events_occurrences ON events ((extra ->> 'schedule_id'), scheduled_at, id)
    WHERE (extra ->> 'schedule_id') IS NOT NULL;

CREATE INDEX events_source_status_schedule ON events (source, status, scheduled_at, id);

-- One row per stored event: global uniqueness of ids, and id -> scheduled_at.
CREATE TABLE event_ids (
    id           text COLLATE "C" NOT NULL,
    scheduled_at timestamptz      NOT NULL,
    CONSTRAINT event_ids_pkey PRIMARY KEY (id)
);

CREATE INDEX event_ids_scheduled_at ON event_ids (scheduled_at);

CREATE TABLE timefuse_event_id_cleanup (
    lower_bound timestamptz NOT NULL,
    upper_bound timestamptz NOT NULL,
    CONSTRAINT timefuse_event_id_cleanup_pkey PRIMARY KEY (lower_bound, upper_bound)
);

-- Attempts, partitioned like their events (by the event's scheduled_at, same bounds).
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
    sequence           integer          NOT NULL DEFAULT 0,
    CONSTRAINT event_attempts_pkey PRIMARY KEY (event_id, id, event_scheduled_at),
    CONSTRAINT event_attempts_outcome_check CHECK (outcome IN ('SUCCESS', 'RETRIABLE', 'PERMANENT'))
) PARTITION BY RANGE (event_scheduled_at);

ALTER SEQUENCE event_attempts_id_seq OWNED BY event_attempts.id;

CREATE TABLE event_attempts_default PARTITION OF event_attempts DEFAULT;

-- Exact counts per source and status, in 16 slots each, kept by statement-level triggers.
CREATE TABLE timefuse_status_counts (
    source text     NOT NULL,
    status text     NOT NULL,
    slot   smallint NOT NULL,
    n      bigint   NOT NULL,
    CONSTRAINT timefuse_status_counts_pkey PRIMARY KEY (source, status, slot)
);

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

CREATE FUNCTION timefuse_count_event_statuses() RETURNS trigger
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

CREATE TRIGGER events_count_inserted
    AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

CREATE TRIGGER events_count_updated
    AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

CREATE TRIGGER events_count_deleted
    AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION timefuse_count_event_statuses();

CREATE TABLE timefuse_leaders (
    role       text        NOT NULL,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT timefuse_leaders_pkey PRIMARY KEY (role)
);

CREATE TABLE timefuse_workers (
    worker     text        NOT NULL,
    roles      text[]      NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    in_flight  integer     NOT NULL DEFAULT 0,
    CONSTRAINT timefuse_workers_pkey PRIMARY KEY (worker)
);

CREATE TABLE timefuse_destinations (
    key         text COLLATE "C" NOT NULL,
    tokens      double precision,
    refilled_at timestamptz,
    breaker     text             NOT NULL DEFAULT 'CLOSED',
    opened_at   timestamptz,
    probe_by    text,
    probe_until timestamptz,
    CONSTRAINT timefuse_destinations_pkey PRIMARY KEY (key),
    CONSTRAINT timefuse_destinations_breaker_check CHECK (breaker IN ('CLOSED', 'OPEN'))
);

CREATE TABLE timefuse_schedules (
    id            text COLLATE "C" NOT NULL,
    source        text COLLATE "C" NOT NULL,
    key           text COLLATE "C" NOT NULL,
    version       bigint           NOT NULL,
    state         text             NOT NULL,
    next_run_at   timestamptz,
    paused        boolean          NOT NULL,
    cron          text,
    every_seconds bigint,
    timezone      text             NOT NULL,
    start_at      timestamptz,
    end_at        timestamptz,
    max_runs      bigint,
    missed_runs   text             NOT NULL,
    runs          bigint           NOT NULL,
    last_instant  timestamptz,
    not_before    timestamptz      NOT NULL,
    template      text             NOT NULL,
    created_at    timestamptz      NOT NULL,
    updated_at    timestamptz      NOT NULL,
    CONSTRAINT timefuse_schedules_pkey PRIMARY KEY (id),
    CONSTRAINT timefuse_schedules_key UNIQUE (source, key),
    CONSTRAINT timefuse_schedules_state_check CHECK (state IN ('ACTIVE', 'PAUSED', 'ENDED')),
    CONSTRAINT timefuse_schedules_missed_runs_check CHECK (missed_runs IN ('skip', 'once', 'all'))
);

CREATE INDEX timefuse_schedules_due ON timefuse_schedules (next_run_at) WHERE state = 'ACTIVE';
