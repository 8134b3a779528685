package store

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/felix-gateway/felix/internal/quota"
)

// The PostgreSQL store's keys and usage log. A change to a key locks its
// row (SELECT … FOR UPDATE) for the transaction: the only key it locks, so
// it cannot deadlock with the group commit, which locks keys in id order.

func scanPGKey(row pgx.Row) (quota.Key, error) {
	var (
		k                                     quota.Key
		rateRequests, concurrent, refillCalls *int64
		ratePer, refillEvery                  *string
	)
	err := row.Scan(&k.ID, &k.Prefix, &k.Name, &k.Note, &k.TotalCalls, &k.SuccessfulCalls, &k.RemainingCalls, &k.ReservedCalls,
		&k.UsedUnits, &k.Disabled, &k.ExpiresAt, &k.LastUsedAt, &k.CreatedAt, &k.UpdatedAt,
		&rateRequests, &ratePer, &k.RateTAT, &concurrent, &k.InFlight, &k.CostPerImage, &refillCalls, &refillEvery, &k.RefillNextAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return k, quota.ErrKeyNotFound
	}
	k.CreatedAt, k.UpdatedAt = k.CreatedAt.UTC(), k.UpdatedAt.UTC()
	k.ExpiresAt, k.LastUsedAt, k.RefillNextAt = utcOrNil(k.ExpiresAt), utcOrNil(k.LastUsedAt), utcOrNil(k.RefillNextAt)
	setPolicies(&k, rateRequests, ratePer, concurrent, refillCalls, refillEvery)
	return k, err
}

func utcOrNil(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// CreateKey inserts a key and its created event; a duplicate hash is
// quota.ErrKeyExists.
func (p *Postgres) CreateKey(ctx context.Context, n quota.NewKey) (quota.Key, error) {
	var k quota.Key
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var err error
		st := newKeyState(n)
		rateRequests, ratePer, rateInterval := st.rateColumns()
		refillCalls, refillEvery := st.refillColumns()
		k, err = scanPGKey(tx.QueryRow(ctx, `
			INSERT INTO api_key_stats (key_hash, key_prefix, name, note, remaining_calls, expires_at, created_at, updated_at,
				rate_requests, rate_per, rate_interval, max_concurrent, cost_per_image, refill_calls, refill_every, refill_next_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12, $13, $14, $15)
			RETURNING `+keyColumns, n.Hash, n.Prefix, n.Name, n.Note, n.Remaining, n.ExpiresAt, n.Now,
			rateRequests, ratePer, rateInterval, st.concurrent, st.perImage, refillCalls, refillEvery, st.refillNextAt))
		if err != nil {
			return err
		}
		return pgKeyTx{ctx, tx}.event(k.ID, createdEvent(n))
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return quota.Key{}, quota.ErrKeyExists
	}
	return k, wrap("create key", err)
}

// KeyByHash returns a key that is not deleted.
func (p *Postgres) KeyByHash(ctx context.Context, hash string) (quota.Key, error) {
	k, err := scanPGKey(p.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_key_stats WHERE key_hash = $1 AND deleted_at IS NULL`, hash))
	return k, wrap("key", err)
}

// KeyByID returns a key that is not deleted.
func (p *Postgres) KeyByID(ctx context.Context, id int64) (quota.Key, error) {
	k, err := scanPGKey(p.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_key_stats WHERE id = $1 AND deleted_at IS NULL`, id))
	return k, wrap("key", err)
}

// ChangeKey applies an operator's change and records its events in one
// transaction.
func (p *Postgres) ChangeKey(ctx context.Context, ref quota.KeyRef, c quota.KeyChange) (quota.Key, error) {
	var k quota.Key
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var err error
		k, err = changeKey(pgKeyTx{ctx, tx}, ref, c)
		return err
	})
	return k, wrap("change key", err)
}

// pgKeyTx is a keyTx in a PostgreSQL transaction.
type pgKeyTx struct {
	ctx context.Context
	tx  pgx.Tx
}

func (t pgKeyTx) lock(ref quota.KeyRef) (quota.Key, error) {
	return scanPGKey(t.tx.QueryRow(t.ctx, `SELECT `+keyColumns+` FROM api_key_stats
		WHERE deleted_at IS NULL AND (id = $1 OR $1 = 0 AND key_hash = $2) FOR UPDATE`, ref.ID, ref.Hash))
}

func (t pgKeyTx) update(id int64, st keyState) (quota.Key, error) {
	var deleted *time.Time
	if st.deleted {
		deleted = &st.now
	}
	rateRequests, ratePer, rateInterval := st.rateColumns()
	refillCalls, refillEvery := st.refillColumns()
	return scanPGKey(t.tx.QueryRow(t.ctx, `
		UPDATE api_key_stats SET name = $2, note = $3, disabled = $4, expires_at = $5, remaining_calls = $6,
			deleted_at = $7, key_hash = CASE WHEN $7::timestamptz IS NULL THEN key_hash ELSE 'deleted:' || id || ':' || key_hash END,
			updated_at = $8, rate_requests = $9, rate_per = $10, rate_interval = $11, max_concurrent = $12,
			cost_per_image = $13, refill_calls = $14, refill_every = $15, refill_next_at = $16
		WHERE id = $1
		RETURNING `+keyColumns, id, st.name, st.note, st.disabled, st.expiresAt, st.remaining, deleted, st.now,
		rateRequests, ratePer, rateInterval, st.concurrent, st.perImage, refillCalls, refillEvery, st.refillNextAt))
}

func (t pgKeyTx) event(id int64, e quota.Event) error {
	_, err := t.tx.Exec(t.ctx, `INSERT INTO key_events (key_id, at, action, calls, before, after, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		id, e.At, e.Action, e.Calls, e.Before, e.After, e.Detail)
	return err
}

// DueRefills returns the ids of the keys whose refill is due at now.
func (p *Postgres) DueRefills(ctx context.Context, now time.Time) ([]int64, error) {
	rows, err := p.pool.Query(ctx, `SELECT id FROM api_key_stats WHERE refill_next_at <= $1 AND deleted_at IS NULL ORDER BY id`, now)
	if err != nil {
		return nil, wrap("due refills", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	return ids, wrap("due refills", err)
}

// ListKeys lists the keys a filter selects, newest first.
func (p *Postgres) ListKeys(ctx context.Context, f quota.KeyFilter) ([]quota.Key, error) {
	rows, err := p.pool.Query(ctx, `
		SELECT `+keyColumns+` FROM api_key_stats
		WHERE deleted_at IS NULL AND ($1 = 0 OR id < $1)
		  AND ($2 = '' OR key_prefix LIKE $2 || '%' ESCAPE '\' OR name ILIKE '%' || $2 || '%' ESCAPE '\' OR note ILIKE '%' || $2 || '%' ESCAPE '\')
		  AND `+statusCondition("$5", "$3")+`
		ORDER BY id DESC LIMIT $4`, f.Before, escapeLike(f.Query), f.Now, f.Limit, f.Status)
	if err != nil {
		return nil, wrap("list keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (quota.Key, error) { return scanPGKey(r) })
	return keys, wrap("list keys", err)
}

// KeyEvents returns a key's events, oldest first.
func (p *Postgres) KeyEvents(ctx context.Context, id int64) ([]quota.Event, error) {
	rows, err := p.pool.Query(ctx, `SELECT at, action, calls, before, after, detail FROM key_events WHERE key_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, wrap("key events", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (quota.Event, error) {
		var e quota.Event
		err := r.Scan(&e.At, &e.Action, &e.Calls, &e.Before, &e.After, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if events == nil {
		events = []quota.Event{}
	}
	return events, wrap("key events", err)
}

// KeyDaily returns a key's days with use from since on, oldest first.
func (p *Postgres) KeyDaily(ctx context.Context, keyID int64, since string) ([]quota.KeyDay, error) {
	rows, err := p.pool.Query(ctx, `SELECT day::text, generations, units FROM key_daily WHERE key_id = $1 AND day >= $2::date ORDER BY day`, keyID, since)
	if err != nil {
		return nil, wrap("key daily", err)
	}
	defer rows.Close()
	return scanKeyDays(rows)
}

// pgPlaceholder writes the n-th parameter of a PostgreSQL statement.
func pgPlaceholder(n int) string { return "$" + strconv.Itoa(n) }

// pgCallsQuery is the usage log's statement on PostgreSQL.
func pgCallsQuery(f quota.CallFilter) (string, []any) {
	return callsQuery(f, "c.started_at", "c.id", pgPlaceholder, func(t time.Time) any { return t })
}

// Calls streams the calls a filter selects to each, newest first.
func (p *Postgres) Calls(ctx context.Context, f quota.CallFilter, each func(quota.Call) error) error {
	q, args := pgCallsQuery(f)
	// Unprepared, so that PostgreSQL plans it for the key asked about:
	// a plan kept for every key would read all calls from the newest on
	// to find a quiet key's (TestUsagePlansPostgres).
	rows, err := p.pool.Query(ctx, q, append([]any{pgx.QueryExecModeExec}, args...)...)
	if err != nil {
		return wrap("calls", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			c      quota.Call
			state  string
			status int
		)
		if err := rows.Scan(&c.ID, &c.KeyID, &c.KeyPrefix, &c.RequestID, &c.StartedAt, &c.FinishedAt, &state, &status, &c.BatchSize, &c.Cost, &c.Target); err != nil {
			return wrap("calls", err)
		}
		c.StartedAt, c.FinishedAt = c.StartedAt.UTC(), utcOrNil(c.FinishedAt)
		finishCall(&c, state, status)
		if err := each(c); err != nil {
			return err
		}
	}
	return wrap("calls", rows.Err())
}

// PruneCalls deletes at most limit finished calls started before before.
func (p *Postgres) PruneCalls(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := p.pool.Exec(ctx, `
		DELETE FROM calls WHERE id IN (
			SELECT id FROM calls WHERE started_at < $1 AND state <> 'open' ORDER BY started_at LIMIT $2)`, before, limit)
	return int(tag.RowsAffected()), wrap("prune calls", err)
}

// Audit reads the sums the books are checked with, in one statement so
// that they agree.
func (p *Postgres) Audit(ctx context.Context) (quota.Audit, error) {
	rows, err := p.pool.Query(ctx, auditQuery)
	if err != nil {
		return quota.Audit{}, wrap("audit", err)
	}
	defer rows.Close()
	return scanAudit(rows)
}
