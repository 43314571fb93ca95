-- Claim tokens, canonical destination keys, leadership and heartbeats.

-- destination_key: the receiver's canonical name (timefuse.domain.destination), which limits
-- and breakers are keyed on; the events stored before it are given theirs by the migration
-- runner (PostgresEventStore.migrate), which computes it in Python.
-- claim_count: claims ever made of the event, never going back: the token of the current
-- claim, which every write that depends on the lease quotes. An event claimed now counts its
-- attempts as its claims, so its current lease is that claim's.
ALTER TABLE events
    ADD COLUMN destination_key text    NOT NULL DEFAULT '',
    ADD COLUMN claim_count     integer NOT NULL DEFAULT 0;

UPDATE events SET claim_count = attempts WHERE status = 'PROCESSING';

-- Leadership of process-wide work (maintenance): one holder per role until its time runs
-- out, renewed by the holder. No session to hang on: every renewal is an ordinary statement.
CREATE TABLE timefuse_leaders (
    role       text        NOT NULL,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT timefuse_leaders_pkey PRIMARY KEY (role)
);

-- Processes heard of recently: their heartbeats, so the claims of one that stopped beating
-- are recovered in seconds, and the admin API can list them.
CREATE TABLE timefuse_workers (
    worker     text        NOT NULL,
    roles      text[]      NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    in_flight  integer     NOT NULL DEFAULT 0,
    CONSTRAINT timefuse_workers_pkey PRIMARY KEY (worker)
);
