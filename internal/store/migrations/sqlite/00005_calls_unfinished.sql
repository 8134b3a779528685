-- +goose Up
-- PostgreSQL's 00005 replaces its open calls' index, whose dead entries
-- (left by every settle until VACUUM) could draw the planner away from the
-- primary key, and tunes autovacuum for calls. SQLite removes an index
-- entry as soon as its row changes, so calls_open (WHERE state = 'open')
-- stays as it is: nothing to do.
SELECT 1;

-- +goose Down
SELECT 1;
