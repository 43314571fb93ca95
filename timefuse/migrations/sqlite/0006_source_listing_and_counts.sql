-- Schema version 5 -> 6: a tenant's listings and counts cost what its own events cost, not
-- what the whole table holds. Run by SqliteEventStore.open() in one transaction.

-- Listings of some sources, in their order (scheduled_at, id) after an equality prefix on
-- (source, status): a page of a source is one index range per status it has events in,
-- however many events other sources keep. Covering: the listing reads rowids from it and only
-- the page's rows from the table.
CREATE INDEX events_source_status_schedule
    ON events (source, status, scheduled_at, id);

-- Events per source and status, kept by the triggers below in the writing transaction: the
-- statistics of a source, and the PENDING count its quota is checked against, are one
-- look-up instead of a count over its events. A source's rows stay once they count nothing
-- (retention drops them).
CREATE TABLE timefuse_status_counts (
    source TEXT    NOT NULL,
    status TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (source, status)
) WITHOUT ROWID;

CREATE TRIGGER events_count_inserted AFTER INSERT ON events
BEGIN
    INSERT INTO timefuse_status_counts (source, status, n) VALUES (NEW.source, NEW.status, 1)
        ON CONFLICT (source, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER events_count_updated AFTER UPDATE OF source, status ON events
WHEN OLD.source IS NOT NEW.source OR OLD.status IS NOT NEW.status
BEGIN
    UPDATE timefuse_status_counts SET n = n - 1
     WHERE source = OLD.source AND status = OLD.status;
    INSERT INTO timefuse_status_counts (source, status, n) VALUES (NEW.source, NEW.status, 1)
        ON CONFLICT (source, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER events_count_deleted AFTER DELETE ON events
BEGIN
    UPDATE timefuse_status_counts SET n = n - 1
     WHERE source = OLD.source AND status = OLD.status;
END;

INSERT INTO timefuse_status_counts (source, status, n)
SELECT source, status, COUNT(*) FROM events GROUP BY source, status;

UPDATE schema_version SET version = 6;
