package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/felix-gateway/felix/internal/quota"
)

// Postgres is the PostgreSQL store: a pgx pool, one statement per
// counter change (data-modifying CTEs keep each change atomic). The writes
// of calls are group-committed: statements queued by concurrent calls are
// sent as one pipelined batch, which PostgreSQL runs as one transaction:
// one round trip and one WAL flush for all of them.
type Postgres struct {
	pool   *pgxpool.Pool
	writes *group[*pgx.Batch]
}

var _ quota.Store = (*Postgres)(nil)

func pgxConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message can include the password; name only the setting.
		return nil, errors.New("store: DATABASE_URL is not a valid PostgreSQL URL: use e.g. postgres://user:pass@host:5432/felix")
	}
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
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	p := &Postgres{pool: pool}
	p.writes = newGroup(p.commitGroup, rolledBack)
	return p, nil
}

// commitGroup sends a group of writes as one batch: an implicit
// transaction that commits when the batch's results are read.
func (p *Postgres) commitGroup(ctx context.Context, ops []*groupOp[*pgx.Batch]) error {
	b := &pgx.Batch{}
	for _, op := range ops {
		if err := op.run(b); err != nil {
			return err
		}
	}
	return p.pool.SendBatch(ctx, b).Close()
}

// rolledBack reports whether the server refused the batch (a statement
// failed, a deadlock was broken): then its implicit transaction was rolled
// back. A lost connection leaves the commit unknown.
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

const pgKeyColumns = `id, key_prefix, name, total_calls, successful_calls, remaining_calls, reserved_calls, created_at, updated_at`

func scanPGKey(row pgx.Row) (quota.Key, error) {
	var k quota.Key
	err := row.Scan(&k.ID, &k.Prefix, &k.Name, &k.TotalCalls, &k.SuccessfulCalls, &k.RemainingCalls, &k.ReservedCalls, &k.CreatedAt, &k.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return k, quota.ErrKeyNotFound
	}
	k.CreatedAt, k.UpdatedAt = k.CreatedAt.UTC(), k.UpdatedAt.UTC()
	return k, err
}

// CreateKey inserts a key; a duplicate hash is quota.ErrKeyExists.
func (p *Postgres) CreateKey(ctx context.Context, n quota.NewKey) (quota.Key, error) {
	k, err := scanPGKey(p.pool.QueryRow(ctx, `
		INSERT INTO api_key_stats (key_hash, key_prefix, name, remaining_calls, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $5)
		RETURNING `+pgKeyColumns, n.Hash, n.Prefix, n.Name, n.Remaining, n.Now))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return quota.Key{}, quota.ErrKeyExists
	}
	return k, wrap("create key", err)
}

// KeyByHash returns a key's statistics.
func (p *Postgres) KeyByHash(ctx context.Context, hash string) (quota.Key, error) {
	k, err := scanPGKey(p.pool.QueryRow(ctx, `SELECT `+pgKeyColumns+` FROM api_key_stats WHERE key_hash = $1`, hash))
	return k, wrap("key", err)
}

// SetRemaining sets remaining calls to max(n, reserved calls).
func (p *Postgres) SetRemaining(ctx context.Context, hash string, n int64, now time.Time) (quota.Key, error) {
	k, err := scanPGKey(p.pool.QueryRow(ctx, `
		UPDATE api_key_stats SET remaining_calls = GREATEST($2, reserved_calls), updated_at = $3
		WHERE key_hash = $1
		RETURNING `+pgKeyColumns, hash, n, now))
	return k, wrap("set remaining", err)
}

// ListKeys lists keys newest first, filtered by prefix or name.
func (p *Postgres) ListKeys(ctx context.Context, o quota.ListOptions) ([]quota.Key, error) {
	rows, err := p.pool.Query(ctx, `
		SELECT `+pgKeyColumns+` FROM api_key_stats
		WHERE $1 = '' OR key_prefix LIKE $1 || '%' ESCAPE '\' OR name ILIKE '%' || $1 || '%' ESCAPE '\'
		ORDER BY id DESC LIMIT $2 OFFSET $3`, escapeLike(o.Search), o.Limit, o.Offset)
	if err != nil {
		return nil, wrap("list keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (quota.Key, error) { return scanPGKey(r) })
	return keys, wrap("list keys", err)
}

// Reserve admits a call in one statement: the conditional update of the
// key and the insert of the open call commit together or not at all.
func (p *Postgres) Reserve(ctx context.Context, c quota.Call) (int64, error) {
	var id int64
	err := p.writes.do(ctx, func(b *pgx.Batch) error {
		id = 0
		b.Queue(`
			WITH k AS (
				UPDATE api_key_stats
				SET reserved_calls = reserved_calls + $2, total_calls = total_calls + 1, updated_at = $5
				WHERE key_hash = $1 AND remaining_calls - reserved_calls >= $2
				RETURNING id)
			INSERT INTO calls (key_id, cost, owner, request_id, started_at, deadline)
			SELECT id, $2, $3, $4, $5, $6 FROM k
			RETURNING id`, c.KeyHash, c.Cost, c.Owner, c.RequestID, c.Start, c.Deadline,
		).QueryRow(func(row pgx.Row) error {
			if err := row.Scan(&id); !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			return nil // not admitted
		})
		return nil
	})
	if err != nil {
		return 0, wrap("reserve", err)
	}
	if id != 0 {
		return id, nil
	}
	return 0, notAdmitted(ctx, p, c.KeyHash)
}

// Settle charges an open call, its key and its day in one statement.
func (p *Postgres) Settle(ctx context.Context, callID int64, o quota.Outcome) error {
	var settled bool
	err := p.writes.do(ctx, func(b *pgx.Batch) error {
		settled = false
		b.Queue(`
			WITH c AS (
				UPDATE calls SET state = 'settled', status = $2, finished_at = $3
				WHERE id = $1 AND state = 'open'
				RETURNING key_id, cost),
			k AS (
				UPDATE api_key_stats a
				SET remaining_calls = a.remaining_calls - c.cost, reserved_calls = a.reserved_calls - c.cost,
				    successful_calls = a.successful_calls + 1, updated_at = $3
				FROM c WHERE a.id = c.key_id
				RETURNING a.id)
			INSERT INTO daily_generations (day, generations) SELECT $4::date, 1 FROM k
			ON CONFLICT (day) DO UPDATE SET generations = daily_generations.generations + 1`,
			callID, o.Status, o.At, o.Day,
		).Exec(func(tag pgconn.CommandTag) error {
			settled = tag.RowsAffected() == 1
			return nil
		})
		return nil
	})
	if err != nil || settled {
		return wrap("settle", err)
	}
	// Settled already (a retry after a lost answer: fine) or released.
	var state string
	if err := p.pool.QueryRow(ctx, `SELECT state FROM calls WHERE id = $1`, callID).Scan(&state); err != nil {
		return wrap("settle", err)
	}
	return settledState(callID, state)
}

// Release frees an open call without charging it.
func (p *Postgres) Release(ctx context.Context, callID int64, o quota.Outcome) error {
	return wrap("release", p.writes.do(ctx, func(b *pgx.Batch) error {
		b.Queue(`
			WITH c AS (
				UPDATE calls SET state = 'released', status = $2, finished_at = $3
				WHERE id = $1 AND state = 'open'
				RETURNING key_id, cost)
			UPDATE api_key_stats a SET reserved_calls = a.reserved_calls - c.cost, updated_at = $3
			FROM c WHERE a.id = c.key_id`, callID, o.Status, o.At)
		return nil
	}))
}

// pgReleaseWhere releases the open calls a condition on calls selects,
// skipping rows another instance is resolving right now.
const pgReleaseWhere = `
	WITH c AS (
		UPDATE calls SET state = 'released', finished_at = $1
		WHERE id IN (SELECT id FROM calls WHERE state = 'open' AND %s ORDER BY id FOR UPDATE SKIP LOCKED)
		RETURNING key_id, cost),
	s AS (SELECT key_id, sum(cost) AS cost, count(*) AS n FROM c GROUP BY key_id),
	k AS (
		UPDATE api_key_stats a SET reserved_calls = a.reserved_calls - s.cost, updated_at = $1
		FROM s WHERE a.id = s.key_id
		RETURNING s.n)
	SELECT COALESCE(sum(n), 0) FROM k`

// ReleaseExpired releases open calls past their deadline.
func (p *Postgres) ReleaseExpired(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := p.pool.QueryRow(ctx, fmt.Sprintf(pgReleaseWhere, `deadline < $1`), now).Scan(&n)
	return n, wrap("release expired", err)
}

// ReleaseOwner releases open calls of owner started before now.
func (p *Postgres) ReleaseOwner(ctx context.Context, owner string, now time.Time) (int, error) {
	var n int
	err := p.pool.QueryRow(ctx, fmt.Sprintf(pgReleaseWhere, `owner = $2 AND started_at < $1`), now, owner).Scan(&n)
	return n, wrap("release owner", err)
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

func settledState(callID int64, state string) error {
	switch state {
	case "settled":
		return nil
	case "released":
		return quota.ErrCallReleased
	}
	return fmt.Errorf("store: settle call %d: still %s", callID, state)
}

func wrap(op string, err error) error {
	if err == nil || errors.Is(err, quota.ErrKeyNotFound) {
		return err
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

func escapeLike(s string) string { return likeEscaper.Replace(s) }
