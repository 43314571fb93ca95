-- Recurring schedules, and the index that lists a schedule's occurrences.

-- next_run_at: the next instant still to run (NULL: the schedule is over). The planner finds
-- running schedules due by it through timefuse_schedules_due, which holds only ACTIVE rows, so
-- a tick never scans every schedule. version: bumped by every write; a writer names the
-- version it read (compare-and-set), so the planner and an API update can't undo each other,
-- nor two planners across a leader's failover. source and key compare code point by code
-- point (COLLATE "C"), the listing order every store gives.
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

-- Occurrences name their schedule in extra; only they are in this index, newest first per
-- schedule. Building it reads the events table once (it holds none of the rows read).
CREATE INDEX events_occurrences ON events ((extra ->> 'schedule_id'), scheduled_at, id)
    WHERE (extra ->> 'schedule_id') IS NOT NULL;
