-- +goose Up
-- The open calls' index, by a predicate no settle or release can use.
--
-- calls_open indexed the calls WHERE state = 'open'. A settle leaves the
-- old version of its row, and its entry in that index, dead until VACUUM;
-- after a year of calls and an ANALYZE the planner could take that index
-- for the settle's own `WHERE id = … AND state = 'open'` and walk every
-- dead entry. calls_unfinished holds the same rows (finished_at is null
-- exactly while a call is open), but the settle and release statements
-- say state = 'open', which does not imply finished_at IS NULL: they can
-- only use the primary key. The orphan sweeps say finished_at IS NULL and
-- use this index.
--
-- On a large calls table this builds the index under a write lock; build
-- it beforehand with CREATE INDEX CONCURRENTLY to upgrade without one
-- (docs/production.md).
CREATE INDEX IF NOT EXISTS calls_unfinished ON calls (deadline) WHERE finished_at IS NULL;
DROP INDEX IF EXISTS calls_open;

-- Vacuum calls after a fixed number of finished calls, not after a fifth
-- of the table (the default): each finished call leaves one dead row
-- version, and its dead entry in calls_unfinished, which the orphan sweep
-- walks past until VACUUM removes them. Analyze as often, so that the
-- statistics of recent calls stay current whatever the table's size.
ALTER TABLE calls SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 50000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 100000
);

-- +goose Down
ALTER TABLE calls RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold
);
CREATE INDEX IF NOT EXISTS calls_open ON calls (deadline) WHERE state = 'open';
DROP INDEX IF EXISTS calls_unfinished;
