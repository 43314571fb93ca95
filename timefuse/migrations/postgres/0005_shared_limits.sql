-- Per-destination limits and circuit breakers shared by every dispatch process.

-- One row per destination with a rate limit or a breaker opened: its token bucket (the
-- tokens left at refilled_at) and its breaker (open since opened_at; the worker holding the
-- one probe until probe_until). Claims read and write it under a transaction-scoped advisory
-- lock per destination, so two processes never both take the same slot or token.
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

-- What each destination has in flight across processes: counted at every claim of a capped
-- destination. Only PROCESSING rows are indexed, so it stays as small as what is in flight.
CREATE INDEX events_in_flight ON events (destination_key) WHERE status = 'PROCESSING';
