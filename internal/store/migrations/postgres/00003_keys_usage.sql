-- +goose Up
-- Keys by id and their life: a note, switched off, an expiry, deleted
-- (kept for the books, never served again), units charged, last use.
ALTER TABLE api_key_stats
    ADD COLUMN note         TEXT        NOT NULL DEFAULT '',
    ADD COLUMN disabled     BOOLEAN     NOT NULL DEFAULT false,
    ADD COLUMN expires_at   TIMESTAMPTZ,
    ADD COLUMN deleted_at   TIMESTAMPTZ,
    ADD COLUMN used_units   BIGINT      NOT NULL DEFAULT 0 CHECK (used_units >= 0),
    ADD COLUMN last_used_at TIMESTAMPTZ;
UPDATE api_key_stats k SET used_units = successful_calls,
    last_used_at = (SELECT max(started_at) FROM calls c WHERE c.key_id = k.id);

-- Every change to a key by anyone but a call: the books of each key can be
-- proved from this table (Σ (after − before) − used_units = remaining).
CREATE TABLE key_events (
    id      BIGSERIAL PRIMARY KEY,
    key_id  BIGINT      NOT NULL REFERENCES api_key_stats (id),
    at      TIMESTAMPTZ NOT NULL,
    action  TEXT        NOT NULL,
    calls   BIGINT,
    before  BIGINT,
    after   BIGINT,
    detail  TEXT        NOT NULL DEFAULT ''
);
CREATE INDEX key_events_key ON key_events (key_id, id);
-- Keys from before events existed start from one "created" event holding
-- everything they were given so far.
INSERT INTO key_events (key_id, at, action, before, after, detail)
SELECT id, created_at, 'created', 0, remaining_calls + successful_calls, 'from before the event log' FROM api_key_stats;

-- Successful calls and units per key and day: kept when the usage log is
-- pruned.
CREATE TABLE key_daily (
    key_id      BIGINT NOT NULL REFERENCES api_key_stats (id),
    day         DATE   NOT NULL,
    generations BIGINT NOT NULL CHECK (generations >= 0),
    units       BIGINT NOT NULL CHECK (units >= 0),
    PRIMARY KEY (key_id, day)
);
INSERT INTO key_daily (key_id, day, generations, units)
SELECT key_id, (finished_at AT TIME ZONE 'UTC')::date, count(*), sum(cost)
FROM calls WHERE state = 'settled' GROUP BY 1, 2;

-- The usage log: calls are its rows.
ALTER TABLE calls ADD COLUMN batch_size INTEGER NOT NULL DEFAULT 1,
                  ADD COLUMN target     TEXT    NOT NULL DEFAULT '';
CREATE INDEX calls_key ON calls (key_id, id);
CREATE INDEX calls_started ON calls (started_at);

-- +goose Down
DROP INDEX calls_started;
DROP INDEX calls_key;
ALTER TABLE calls DROP COLUMN target, DROP COLUMN batch_size;
DROP TABLE key_daily;
DROP TABLE key_events;
ALTER TABLE api_key_stats DROP COLUMN last_used_at, DROP COLUMN used_units, DROP COLUMN deleted_at,
    DROP COLUMN expires_at, DROP COLUMN disabled, DROP COLUMN note;
