-- +goose Up
-- Per-key policies. A rate limit is a token bucket kept as GCRA state:
-- rate_interval is the emission interval (its period ÷ requests, in
-- microseconds), rate_tat the theoretical arrival time of the next call
-- (Unix microseconds); both are updated by the write that reserves a call.
-- in_flight counts open calls (reserved_calls counts their cost).
ALTER TABLE api_key_stats
    ADD COLUMN rate_requests  BIGINT CHECK (rate_requests >= 1),
    ADD COLUMN rate_per       TEXT,
    ADD COLUMN rate_interval  BIGINT CHECK (rate_interval >= 1),
    ADD COLUMN rate_tat       BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN max_concurrent BIGINT CHECK (max_concurrent >= 1),
    ADD COLUMN in_flight      BIGINT NOT NULL DEFAULT 0 CHECK (in_flight >= 0),
    ADD COLUMN cost_per_image BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN refill_calls   BIGINT CHECK (refill_calls >= 0),
    ADD COLUMN refill_every   TEXT,
    ADD COLUMN refill_next_at TIMESTAMPTZ;
UPDATE api_key_stats k SET in_flight = (SELECT count(*) FROM calls c WHERE c.key_id = k.id AND c.state = 'open');
CREATE INDEX api_key_stats_refill ON api_key_stats (refill_next_at) WHERE refill_next_at IS NOT NULL;

-- Idempotency-Key: what the first call with a key did, per API key.
CREATE TABLE idempotency (
    key_id       BIGINT      NOT NULL REFERENCES api_key_stats (id),
    idem_key     TEXT        NOT NULL,
    body_hash    TEXT        NOT NULL,
    state        TEXT        NOT NULL CHECK (state IN ('in_flight', 'succeeded', 'failed')),
    call_id      BIGINT,
    request_id   TEXT        NOT NULL,
    deadline     TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    status       INTEGER,
    content_type TEXT,
    body         BYTEA,
    PRIMARY KEY (key_id, idem_key)
);
CREATE INDEX idempotency_expires ON idempotency (expires_at);

-- +goose Down
DROP TABLE idempotency;
DROP INDEX api_key_stats_refill;
ALTER TABLE api_key_stats DROP COLUMN refill_next_at, DROP COLUMN refill_every, DROP COLUMN refill_calls,
    DROP COLUMN cost_per_image, DROP COLUMN in_flight, DROP COLUMN max_concurrent, DROP COLUMN rate_tat,
    DROP COLUMN rate_interval, DROP COLUMN rate_per, DROP COLUMN rate_requests;
