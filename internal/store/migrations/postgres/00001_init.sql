-- +goose Up
-- One row per API key. The key itself is never stored: key_hash is its
-- SHA-256 (hex) and key_prefix its display start.
CREATE TABLE api_key_stats (
    id               BIGSERIAL PRIMARY KEY,
    key_hash         TEXT        NOT NULL UNIQUE,
    key_prefix       TEXT        NOT NULL,
    name             TEXT        NOT NULL DEFAULT '',
    total_calls      BIGINT      NOT NULL DEFAULT 0,
    successful_calls BIGINT      NOT NULL DEFAULT 0,
    remaining_calls  BIGINT      NOT NULL CHECK (remaining_calls >= 0),
    reserved_calls   BIGINT      NOT NULL DEFAULT 0 CHECK (reserved_calls >= 0),
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- One row per admitted call: open while in flight, then settled (charged)
-- or released (free). Open rows are the reservations.
CREATE TABLE calls (
    id          BIGSERIAL PRIMARY KEY,
    key_id      BIGINT      NOT NULL REFERENCES api_key_stats (id) ON DELETE CASCADE,
    cost        BIGINT      NOT NULL CHECK (cost > 0),
    state       TEXT        NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'released')),
    owner       TEXT        NOT NULL,
    request_id  TEXT        NOT NULL DEFAULT '',
    status      INTEGER     NOT NULL DEFAULT 0,
    started_at  TIMESTAMPTZ NOT NULL,
    deadline    TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE INDEX calls_open ON calls (deadline) WHERE state = 'open';

-- Successful calls per calendar day: the history behind totalGenerations.
CREATE TABLE daily_generations (
    day         DATE   PRIMARY KEY,
    generations BIGINT NOT NULL CHECK (generations >= 0)
);

-- +goose Down
DROP TABLE daily_generations;
DROP TABLE calls;
DROP TABLE api_key_stats;
