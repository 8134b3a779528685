package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/felix-gateway/felix/internal/quota"
)

// Postgres is the PostgreSQL store: a pgx pool, one statement per
// counter change (data-modifying CTEs keep each change atomic). The writes
// of calls are group-committed: statements queued by concurrent calls are
// sent as one pipelined batch in one transaction: one WAL flush for all of
// them. The groups of all the Felix processes on a database take turns
// (see turn).
type Postgres struct {
	pool   *pgxpool.Pool
	writes *group[callWrite, callResult]
	probes probeShare // Writable's (health.go)
	// turnConn is the connection of the group commit's turn, in a
	// transaction holding pgTurnLock. Used by the group's goroutine only.
	turnConn *pgxpool.Conn
}

func pgxConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message can include the password; name only the setting.
		return nil, errors.New("store: DATABASE_URL is not a valid PostgreSQL URL: use e.g. postgres://user:pass@host:5432/felix")
	}
	forFailover(cfg)
	return cfg, nil
}

// OpenPostgres connects a pool to dsn and checks that the server answers.
func OpenPostgres(ctx context.Context, dsn string, o Options) (*Postgres, error) {
	cfg, err := pgxConfig(dsn)
	if err != nil {
		return nil, err
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: postgres: %w", readOnly(err))
	}
	p := &Postgres{pool: pool}
	p.writes = newTurnGroup(p.commitGroup, rolledBack, p.turn, o.Observer)
	return p, nil
}

// rolledBack reports whether the server refused the batch (a statement
// or the commit failed): then its transaction was rolled back (endTurn
// makes sure). A lost connection leaves the commit unknown.
func rolledBack(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr)
}

// Close stops the writer and closes the pool.
func (p *Postgres) Close() error {
	p.writes.close()
	p.pool.Close()
	return nil
}

// Ping checks that the server answers.
func (p *Postgres) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// Reserve admits a call in one statement: the conditional update of the
// key and the insert of the open call commit together or not at all.
func (p *Postgres) Reserve(ctx context.Context, r quota.ReserveRequest) (quota.Admission, error) {
	res, err := p.writes.do(ctx, callWrite{kind: reserveWrite, reserve: r})
	if err != nil {
		return quota.Admission{}, wrap("reserve", err)
	}
	return admission(res, func() (quota.Key, error) { return p.KeyByHash(ctx, r.KeyHash) })
}

// Settle charges an open call, its key and its day.
func (p *Postgres) Settle(ctx context.Context, o quota.Outcome) error {
	res, err := p.writes.do(ctx, callWrite{kind: settleWrite, outcome: o})
	if err != nil || res.changed {
		return wrap("settle", err)
	}
	var state string
	err = p.pool.QueryRow(ctx, `SELECT state FROM calls WHERE id = $1`, o.CallID).Scan(&state)
	return settled(o.CallID, state, err)
}

// Release frees an open call without charging it.
func (p *Postgres) Release(ctx context.Context, o quota.Outcome) error {
	_, err := p.writes.do(ctx, callWrite{kind: releaseWrite, outcome: o})
	return wrap("release", err)
}

// pgReleaseWhere releases the open calls a condition on calls selects,
// skipping rows another instance is resolving right now. It runs after
// pgLockKeysOf has locked their keys: keys are always locked before calls,
// in id order, as the group commit does.
//
// The sweeps select open calls by finished_at IS NULL, the predicate of
// the index calls_unfinished; settle and release say state = 'open',
// which the planner cannot match to that index, so that they always use
// the primary key (migration 00005).
const pgReleaseWhere = `
	WITH c AS (
		UPDATE calls SET state = 'released', finished_at = $1
		WHERE id IN (SELECT id FROM calls WHERE finished_at IS NULL AND %s ORDER BY id FOR UPDATE SKIP LOCKED)
		RETURNING key_id, cost),
	s AS (SELECT key_id, sum(cost) AS cost, count(*) AS n FROM c GROUP BY key_id),
	k AS (
		UPDATE api_key_stats a SET reserved_calls = a.reserved_calls - s.cost, in_flight = a.in_flight - s.n, updated_at = $1
		FROM s WHERE a.id = s.key_id
		RETURNING s.n)
	SELECT COALESCE(sum(n), 0) FROM k`

// pgLockKeysOf locks, in id order, the keys of the open calls a condition
// on calls selects.
const pgLockKeysOf = `
	SELECT 1 FROM api_key_stats
	WHERE id IN (SELECT key_id FROM calls WHERE finished_at IS NULL AND %s)
	ORDER BY id FOR UPDATE`

// releaseWhere releases the open calls cond selects, in one transaction
// that locks their keys first.
func (p *Postgres) releaseWhere(ctx context.Context, op, cond string, args ...any) (int, error) {
	var n int
	b := &pgx.Batch{}
	b.Queue(fmt.Sprintf(pgLockKeysOf, cond), args...)
	b.Queue(fmt.Sprintf(pgReleaseWhere, cond), args...).QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
	return n, wrap(op, p.pool.SendBatch(ctx, b).Close())
}

// The conditions of the two sweeps: $1 is now, $2 the owner.
const (
	pgExpired = `deadline < $1`
	pgOwned   = `owner = $2 AND started_at < $1`
)

// ReleaseExpired releases open calls past their deadline.
func (p *Postgres) ReleaseExpired(ctx context.Context, now time.Time) (int, error) {
	return p.releaseWhere(ctx, "release expired", pgExpired, now)
}

// ReleaseOwner releases open calls of owner started before now.
func (p *Postgres) ReleaseOwner(ctx context.Context, owner string, now time.Time) (int, error) {
	return p.releaseWhere(ctx, "release owner", pgOwned, now, owner)
}

// SiteStats returns the total of all days and the days from since on,
// read in one statement so that they agree.
func (p *Postgres) SiteStats(ctx context.Context, since string) (quota.SiteStats, error) {
	rows, err := p.pool.Query(ctx, siteStatsQuery(`$1::date`, `d.day::text`), since)
	if err != nil {
		return quota.SiteStats{}, wrap("site stats", err)
	}
	defer rows.Close()
	return scanSiteStats(rows)
}

// The statements of a group commit on PostgreSQL.
const (
	// pgLockKeys locks every key a group touches, in id order, before the
	// group writes anything, as the sweeps do (pgLockKeysOf): a group and
	// any other transaction that locks several keys never hold keys in
	// opposite orders, so they queue instead of deadlocking. (The groups of
	// several instances do not even meet: they take turns.)
	pgLockKeys = `SELECT 1 FROM api_key_stats WHERE key_hash = ANY($1) OR id = ANY($2) ORDER BY id FOR UPDATE`
	// pgAdmit is the conditional update of the key that admits a call:
	// $1 key hash, $2 batch size, $5 start, $7 start in Unix µs.
	pgAdmit = `
		WITH k AS (
			UPDATE api_key_stats
			SET reserved_calls = reserved_calls + (CASE WHEN cost_per_image THEN $2 ELSE 1 END), in_flight = in_flight + 1,
			    total_calls = total_calls + 1, updated_at = $5, last_used_at = $5,
			    rate_tat = CASE WHEN rate_interval IS NULL THEN rate_tat ELSE GREATEST(rate_tat, $7) + rate_interval END
			WHERE key_hash = $1 AND NOT disabled AND (expires_at IS NULL OR expires_at > $5)
			  AND (rate_interval IS NULL OR GREATEST(rate_tat, $7) + rate_interval - $7 <= rate_interval * rate_requests)
			  AND (max_concurrent IS NULL OR in_flight < max_concurrent)
			  AND remaining_calls - reserved_calls >= (CASE WHEN cost_per_image THEN $2 ELSE 1 END)
			RETURNING id, CASE WHEN cost_per_image THEN $2 ELSE 1 END AS cost)`
	// pgReserve admits a call: the conditional update of the key and the
	// insert of the open call, in one statement.
	pgReserve = pgAdmit + `
		INSERT INTO calls (key_id, cost, batch_size, owner, request_id, started_at, deadline)
		SELECT id, cost, $2, $3, $4, $5, $6 FROM k
		RETURNING id, key_id, cost`
	// pgReserveIdem admits a call like pgReserve and ties it to its
	// Idempotency-Key's claim ($8).
	pgReserveIdem = pgAdmit + `,
		c AS (
			INSERT INTO calls (key_id, cost, batch_size, owner, request_id, started_at, deadline)
			SELECT id, cost, $2, $3, $4, $5, $6 FROM k
			RETURNING id, key_id, cost),
		i AS (UPDATE idempotency SET call_id = c.id FROM c WHERE idempotency.key_id = c.key_id AND idempotency.idem_key = $8)
		SELECT id, key_id, cost FROM c`
	// pgSettle settles the group's open calls among $1, charges their keys
	// once per key and counts them once per day; it returns the calls it
	// settled.
	pgSettle = `
		WITH o AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::date[], $5::text[]) AS o(id, status, at, day, target)),
		c AS (
			UPDATE calls SET state = 'settled', status = o.status, finished_at = o.at, target = o.target
			FROM o WHERE calls.id = o.id AND calls.state = 'open'
			RETURNING calls.id, calls.key_id, calls.cost, o.at, o.day),
		k AS (
			UPDATE api_key_stats a
			SET remaining_calls = a.remaining_calls - s.cost, reserved_calls = a.reserved_calls - s.cost, in_flight = a.in_flight - s.n,
			    used_units = a.used_units + s.cost, successful_calls = a.successful_calls + s.n, updated_at = s.at
			FROM (SELECT key_id, sum(cost) AS cost, count(*) AS n, max(at) AS at FROM c GROUP BY key_id) s
			WHERE a.id = s.key_id),
		kd AS (
			INSERT INTO key_daily (key_id, day, generations, units)
			SELECT key_id, day, count(*), sum(cost) FROM c GROUP BY key_id, day
			ON CONFLICT (key_id, day) DO UPDATE
			SET generations = key_daily.generations + excluded.generations, units = key_daily.units + excluded.units),
		d AS (
			INSERT INTO daily_generations (day, generations) SELECT day, count(*) FROM c GROUP BY day
			ON CONFLICT (day) DO UPDATE SET generations = daily_generations.generations + excluded.generations)
		SELECT id FROM c`
	// pgRelease releases the group's open calls among $1 and gives their
	// keys back their holds; it returns the calls it released.
	pgRelease = `
		WITH o AS (SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::text[]) AS o(id, status, at, target)),
		c AS (
			UPDATE calls SET state = 'released', status = o.status, finished_at = o.at, target = o.target
			FROM o WHERE calls.id = o.id AND calls.state = 'open'
			RETURNING calls.id, calls.key_id, calls.cost, o.at),
		k AS (
			UPDATE api_key_stats a SET reserved_calls = a.reserved_calls - s.cost, in_flight = a.in_flight - s.n, updated_at = s.at
			FROM (SELECT key_id, sum(cost) AS cost, count(*) AS n, max(at) AS at FROM c GROUP BY key_id) s
			WHERE a.id = s.key_id)
		SELECT id FROM c`
)

// pgTurnLock is the advisory lock (with the oid of Felix's calls table,
// so that Felix schemas in one database do not share it) that the group
// commits of every Felix process on a database take turns on.
const pgTurnLock = 0x46656c78 // "Felx"

// pgTakeTurn and pgGiveTurn take and give up the turn: a session-level
// advisory lock, so that a group can give it up before its COMMIT.
const (
	pgTakeTurn = "SELECT pg_advisory_lock($1, 'calls'::regclass::oid::int)"
	pgGiveTurn = "SELECT pg_advisory_unlock($1, 'calls'::regclass::oid::int)"
)

// pgByIndex is set in the transaction of every group, so that its
// statements find calls and keys by index whatever the statistics say.
// pgx prepares each statement once per connection, and PostgreSQL may keep
// one generic plan for it; a plan made while calls was small (a new
// database before autovacuum's first ANALYZE, or for good with autovacuum
// off) reads the whole table on every settle as it grows: in BenchmarkCall
// 1.0–1.5 ms per group's settle statement instead of 0.25 ms, and a
// quarter more time per call (docs/performance.md). The sweeps need no
// such setting: they match the partial index calls_unfinished, which the
// planner takes even on a small table (TestPlansWhenNew).
const pgByIndex = "SET LOCAL enable_seqscan = off"

// turn waits until no other process's group commit holds the turn, and
// takes it for the next group: a connection in a transaction holding
// pgTurnLock. Writes keep queuing while a process waits, so that its next
// group takes all of them: several instances then make hardly more commits
// than one, where each sending its group at once and waiting for the
// other's key rows made one commit per instance for the same calls.
//
// A group gives the turn up once its statements have run, just before its
// COMMIT (see commitGroup): the next process's group is then on the server
// already, waiting for the key rows it shares with the committing group,
// and runs the moment that commit has reached the disk, instead of being
// sent only after the commit's answer came back. Exactness rests on the
// key rows' locks, which every group takes in id order, not on the turn.
//
// A process that stalls while holding the turn loses it after a second:
// idle_in_transaction_session_timeout ends its session, and with it the
// lock. On any failure the turn's connection is closed, which ends the
// session too: a connection back in the pool never holds the turn.
func (p *Postgres) turn(ctx context.Context) (end func(), err error) {
	c, err := p.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL idle_in_transaction_session_timeout = 1000")
	b.Queue(pgByIndex)
	b.Queue(pgTakeTurn, int32(pgTurnLock))
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		closeConn(c) // the lock may have been granted as ctx ended
		return nil, err
	}
	p.turnConn = c
	return func() { p.endTurn(errNoWrite) }, nil
}

// errNoWrite ends a turn that had no write to commit.
var errNoWrite = errors.New("no write left to commit")

// endTurn ends the turn's transaction. After a commit (err == nil) the
// turn was given up already; with no write to commit (errNoWrite) it gives
// the turn up and rolls back; after a failure, whether the turn was given
// up is unknown, and the connection is closed.
func (p *Postgres) endTurn(err error) {
	c := p.turnConn
	p.turnConn = nil
	switch {
	case err == nil:
		c.Release()
		return
	case errors.Is(err, errNoWrite):
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b := &pgx.Batch{}
		b.Queue(pgGiveTurn, int32(pgTurnLock))
		b.Queue("ROLLBACK")
		if b := c.SendBatch(ctx, b); b.Close() == nil {
			c.Release()
			return
		}
	}
	closeConn(c)
}

// closeConn closes a pooled connection and gives it back, so that the
// pool drops it; its session ends, and every lock it held with it.
func closeConn(c *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Conn().Close(ctx)
	c.Release()
}

// commitGroup runs a group of writes in the transaction of its turn, as
// one pipelined batch that ends with COMMIT: one round trip and one WAL
// flush for all. It locks the group's keys first (pgLockKeys), then runs
// each reserve, then all settles in one statement and all releases in
// another, then gives the turn up (see turn) and commits.
func (p *Postgres) commitGroup(ctx context.Context, writes []callWrite, results []callResult) (err error) {
	if p.turnConn == nil {
		return errors.New("store: postgres group: no turn taken")
	}
	defer func() { p.endTurn(err) }()
	var (
		hashes   []string
		keyIDs   []int64
		settles  outcomes
		releases outcomes
	)
	for i, w := range writes {
		switch w.kind {
		case reserveWrite:
			hashes = append(hashes, w.reserve.KeyHash)
		case settleWrite:
			keyIDs = append(keyIDs, w.outcome.KeyID)
			settles.add(i, w.outcome)
		case releaseWrite:
			keyIDs = append(keyIDs, w.outcome.KeyID)
			releases.add(i, w.outcome)
		default:
			return fmt.Errorf("store: postgres group: unexpected write kind %d", w.kind)
		}
	}
	b := &pgx.Batch{}
	b.Queue(pgLockKeys, hashes, keyIDs)
	for i, w := range writes {
		if w.kind != reserveWrite {
			continue
		}
		r := w.reserve
		q, args := pgReserve, []any{r.KeyHash, r.BatchSize, r.Owner, r.RequestID, r.Start, r.Deadline, r.Start.UnixMicro()}
		if r.IdempotencyKey != "" {
			q, args = pgReserveIdem, append(args, r.IdempotencyKey)
		}
		b.Queue(q, args...).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&results[i].callID, &results[i].keyID, &results[i].cost)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // not admitted
			}
			return err
		})
	}
	if len(settles.idx) > 0 {
		b.Queue(pgSettle, settles.ids, settles.statuses, settles.ats, settles.days, settles.targets).Query(settles.collect(results))
	}
	if len(releases.idx) > 0 {
		b.Queue(pgRelease, releases.ids, releases.statuses, releases.ats, releases.targets).Query(releases.collect(results))
	}
	b.Queue(pgGiveTurn, int32(pgTurnLock))
	b.Queue("COMMIT")
	return p.turnConn.SendBatch(ctx, b).Close()
}

// outcomes are a group's settles (or releases) as the columns the
// statement unnests, with the index of each one's write.
type outcomes struct {
	idx      []int
	ids      []int64
	statuses []int32
	ats      []time.Time
	days     []string
	targets  []string
}

func (o *outcomes) add(i int, out quota.Outcome) {
	o.idx = append(o.idx, i)
	o.ids = append(o.ids, out.CallID)
	o.statuses = append(o.statuses, int32(out.Status))
	o.ats = append(o.ats, out.At)
	o.days = append(o.days, out.Day)
	o.targets = append(o.targets, out.Target)
}

// collect reads the ids the statement changed and marks their writes'
// results changed.
func (o *outcomes) collect(results []callResult) func(pgx.Rows) error {
	return func(rows pgx.Rows) error {
		changed := map[int64]bool{}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			changed[id] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for j, i := range o.idx {
			results[i].changed = changed[o.ids[j]]
		}
		return nil
	}
}

// AutovacuumWarning is what felix serve logs at start when AutovacuumOff
// names anything.
const AutovacuumWarning = "autovacuum is off for felix's tables: every settled call leaves a dead row version that only VACUUM removes, and the orphan sweep slows down as they pile up; turn autovacuum on (see docs/production.md)"

// AutovacuumOff tells what keeps autovacuum away from Felix's tables on
// the PostgreSQL server s is connected to: the settings autovacuum or
// track_counts when they are off, and each table of Felix's schema whose
// autovacuum_enabled is false. Without autovacuum the dead row versions
// every settle leaves behind are never removed. It returns nothing for
// SQLite.
func AutovacuumOff(ctx context.Context, s Store) ([]string, error) {
	p, ok := s.(*Postgres)
	if !ok {
		return nil, nil
	}
	rows, err := p.pool.Query(ctx, `
		SELECT name FROM pg_settings WHERE name IN ('autovacuum', 'track_counts') AND setting = 'off'
		UNION ALL
		(SELECT c.relname::text FROM pg_class c
		WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
		  AND EXISTS (SELECT FROM unnest(c.reloptions) o
		              WHERE split_part(o, '=', 1) = 'autovacuum_enabled' AND NOT split_part(o, '=', 2)::bool)
		ORDER BY 1)`)
	if err != nil {
		return nil, wrap("autovacuum settings", err)
	}
	off, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return off, wrap("autovacuum settings", err)
}
