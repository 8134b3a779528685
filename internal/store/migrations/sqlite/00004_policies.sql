-- +goose Up
-- Per-key policies. A rate limit is a token bucket kept as GCRA state:
-- rate_interval is the emission interval (its period ÷ requests, in
-- microseconds), rate_tat the theoretical arrival time of the next call
-- (Unix microseconds); both are updated by the write that reserves a call.
-- in_flight counts open calls (reserved_calls counts their cost).
ALTER TABLE api_key_stats ADD COLUMN rate_requests INTEGER CHECK (rate_requests >= 1);
ALTER TABLE api_key_stats ADD COLUMN rate_per TEXT;
ALTER TABLE api_key_stats ADD COLUMN rate_interval INTEGER CHECK (rate_interval >= 1);
ALTER TABLE api_key_stats ADD COLUMN rate_tat INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_key_stats ADD COLUMN max_concurrent INTEGER CHECK (max_concurrent >= 1);
ALTER TABLE api_key_stats ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0 CHECK (in_flight >= 0);
ALTER TABLE api_key_stats ADD COLUMN cost_per_image INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_key_stats ADD COLUMN refill_calls INTEGER CHECK (refill_calls >= 0);
ALTER TABLE api_key_stats ADD COLUMN refill_every TEXT;
ALTER TABLE api_key_stats ADD COLUMN refill_next_at INTEGER;
UPDATE api_key_stats SET in_flight = (SELECT count(*) FROM calls c WHERE c.key_id = api_key_stats.id AND c.state = 'open');
CREATE INDEX api_key_stats_refill ON api_key_stats (refill_next_at) WHERE refill_next_at IS NOT NULL;

-- Idempotency-Key: what the first call with a key did, per API key.
CREATE TABLE idempotency (
    key_id       INTEGER NOT NULL REFERENCES api_key_stats (id),
    idem_key     TEXT    NOT NULL,
    body_hash    TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('in_flight', 'succeeded', 'failed')),
    call_id      INTEGER,
    request_id   TEXT    NOT NULL,
    deadline     INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    PRIMARY KEY (key_id, idem_key)
) WITHOUT ROWID;
CREATE INDEX idempotency_expires ON idempotency (expires_at);

-- +goose Down
DROP TABLE idempotency;
DROP INDEX api_key_stats_refill;
ALTER TABLE api_key_stats DROP COLUMN refill_next_at;
ALTER TABLE api_key_stats DROP COLUMN refill_every;
ALTER TABLE api_key_stats DROP COLUMN refill_calls;
ALTER TABLE api_key_stats DROP COLUMN cost_per_image;
ALTER TABLE api_key_stats DROP COLUMN in_flight;
ALTER TABLE api_key_stats DROP COLUMN max_concurrent;
ALTER TABLE api_key_stats DROP COLUMN rate_tat;
ALTER TABLE api_key_stats DROP COLUMN rate_interval;
ALTER TABLE api_key_stats DROP COLUMN rate_per;
ALTER TABLE api_key_stats DROP COLUMN rate_requests;
