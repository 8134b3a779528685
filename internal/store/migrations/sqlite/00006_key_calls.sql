-- +goose Up
-- A key's calls, newest first, without an index entry per call in the
-- call's own commit. calls_key put every reserve's entry on its key's
-- leaf, so that a commit wrote one page more per key in its group (4 KiB
-- to the WAL each: the writer's largest cost once the history is long).
-- key_calls holds the same (key_id, id) pairs, filled behind the writer
-- about once a second, in one batch, for every call up to
-- key_calls_upto.id; a key's newer calls are found from the primary key
-- (store.callsQuery). Ids are given out in commit order under SQLite's
-- write lock, so no call at or below the mark can be missing.
CREATE TABLE key_calls (
    key_id INTEGER NOT NULL,
    id     INTEGER NOT NULL,
    PRIMARY KEY (key_id, id)
) WITHOUT ROWID;
CREATE TABLE key_calls_upto (id INTEGER NOT NULL);
INSERT INTO key_calls (key_id, id) SELECT key_id, id FROM calls;
INSERT INTO key_calls_upto (id) SELECT COALESCE(max(id), 0) FROM calls;
-- A pruned call leaves key_calls with its row.
-- +goose StatementBegin
CREATE TRIGGER calls_pruned AFTER DELETE ON calls
BEGIN
    DELETE FROM key_calls WHERE key_id = old.key_id AND id = old.id;
END;
-- +goose StatementEnd
DROP INDEX calls_key;

-- +goose Down
CREATE INDEX calls_key ON calls (key_id, id);
DROP TRIGGER calls_pruned;
DROP TABLE key_calls_upto;
DROP TABLE key_calls;
