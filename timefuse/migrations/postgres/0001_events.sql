-- timefuse event store on PostgreSQL: events, their attempts, and the id registry.
--
-- Applied by PostgresEventStore.migrate() in one transaction under an advisory lock; the
-- runner records the version. Partitions other than the DEFAULT ones are created at run time
-- (PostgresEventStore.create_partitions_ahead), since their bounds depend on the date.

-- Events are RANGE-partitioned by scheduled_at so retention drops whole partitions instead of
-- deleting (and vacuuming) millions of rows. A partitioned table's unique constraints must
-- include the partition key, hence the primary key (id, scheduled_at); global uniqueness of
-- id is enforced by event_ids below.
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
