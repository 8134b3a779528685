-- +goose Up
-- One row per API key. The key itself is never stored: key_hash is its
-- SHA-256 (hex) and key_prefix its display start. Times are Unix
-- microseconds (UTC).
CREATE TABLE api_key_stats (
    id               INTEGER PRIMARY KEY,
    key_hash         TEXT    NOT NULL UNIQUE,
    key_prefix       TEXT    NOT NULL,
    name             TEXT    NOT NULL DEFAULT '',
    total_calls      INTEGER NOT NULL DEFAULT 0,
    successful_calls INTEGER NOT NULL DEFAULT 0,
    remaining_calls  INTEGER NOT NULL CHECK (remaining_calls >= 0),
    reserved_calls   INTEGER NOT NULL DEFAULT 0 CHECK (reserved_calls >= 0),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- One row per admitted call: open while in flight, then settled (charged)
-- or released (free). Open rows are the reservations.
CREATE TABLE calls (
    id          INTEGER PRIMARY KEY,
    key_id      INTEGER NOT NULL REFERENCES api_key_stats (id) ON DELETE CASCADE,
    cost        INTEGER NOT NULL CHECK (cost > 0),
    state       TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'settled', 'released')),
    owner       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL DEFAULT '',
    status      INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER NOT NULL,
    deadline    INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX calls_open ON calls (deadline) WHERE state = 'open';

-- Successful calls per calendar day: the history behind totalGenerations.
CREATE TABLE daily_generations (
    day         TEXT    PRIMARY KEY, -- YYYY-MM-DD
    generations INTEGER NOT NULL CHECK (generations >= 0)
);

-- +goose Down
DROP TABLE daily_generations;
DROP TABLE calls;
DROP TABLE api_key_stats;
