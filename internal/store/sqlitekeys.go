package store

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
)

// The SQLite store's keys and usage log. Writes run on the writer
// connection (its transactions are BEGIN IMMEDIATE: they hold SQLite's
// write lock from the start, so a key read in one cannot change before it
// commits); reads on the readers.

type scanner interface{ Scan(dest ...any) error }

// microsOrNil turns an optional time into the column's value.
func microsOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return micros(*t)
}

// sqlitePlaceholder writes the n-th parameter of a SQLite statement.
func sqlitePlaceholder(n int) string { return "?" + strconv.Itoa(n) }

func fromMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMicro(v.Int64).UTC()
	return &t
}

func scanSQLiteKey(row scanner) (quota.Key, error) {
	var (
		k                                     quota.Key
		created, updated                      int64
		expires, lastUsed, refillNext         sql.NullInt64
		rateRequests, concurrent, refillCalls sql.NullInt64
		ratePer, refillEvery                  sql.NullString
	)
	err := row.Scan(&k.ID, &k.Prefix, &k.Name, &k.Note, &k.TotalCalls, &k.SuccessfulCalls, &k.RemainingCalls, &k.ReservedCalls,
		&k.UsedUnits, &k.Disabled, &expires, &lastUsed, &created, &updated,
		&rateRequests, &ratePer, &k.RateTAT, &concurrent, &k.InFlight, &k.CostPerImage, &refillCalls, &refillEvery, &refillNext)
	if errors.Is(err, sql.ErrNoRows) {
		return k, quota.ErrKeyNotFound
	}
	k.CreatedAt, k.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	k.ExpiresAt, k.LastUsedAt, k.RefillNextAt = fromMicros(expires), fromMicros(lastUsed), fromMicros(refillNext)
	setPolicies(&k, intOrNil(rateRequests), stringOrNil(ratePer), intOrNil(concurrent), intOrNil(refillCalls), stringOrNil(refillEvery))
	return k, err
}

func stringOrNil(v sql.NullString) *string {
	if !v.Valid {
		return nil
	}
	return &v.String
}

// CreateKey inserts a key and its created event; a duplicate hash is
// quota.ErrKeyExists.
func (s *SQLite) CreateKey(ctx context.Context, n quota.NewKey) (quota.Key, error) {
	var k quota.Key
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var err error
		st := newKeyState(n)
		rateRequests, ratePer, rateInterval := st.rateColumns()
		refillCalls, refillEvery := st.refillColumns()
		k, err = scanSQLiteKey(tx.QueryRowContext(ctx, `
			INSERT INTO api_key_stats (key_hash, key_prefix, name, note, remaining_calls, expires_at, created_at, updated_at,
				rate_requests, rate_per, rate_interval, max_concurrent, cost_per_image, refill_calls, refill_every, refill_next_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT (key_hash) DO NOTHING
			RETURNING `+keyColumns, n.Hash, n.Prefix, n.Name, n.Note, n.Remaining, microsOrNil(n.ExpiresAt), micros(n.Now),
			rateRequests, ratePer, rateInterval, st.concurrent, st.perImage, refillCalls, refillEvery, microsOrNil(st.refillNextAt)))
		if errors.Is(err, quota.ErrKeyNotFound) {
			return quota.ErrKeyExists
		}
		if err != nil {
			return err
		}
		return sqliteKeyTx{ctx, tx}.event(k.ID, createdEvent(n))
	})
	if errors.Is(err, quota.ErrKeyExists) {
		return quota.Key{}, err
	}
	return k, wrap("create key", err)
}

// writeTx runs f in a transaction on the writer connection.
func (s *SQLite) writeTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// KeyByHash returns a key that is not deleted.
func (s *SQLite) KeyByHash(ctx context.Context, hash string) (quota.Key, error) {
	k, err := scanSQLiteKey(s.r.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_key_stats WHERE key_hash = ? AND deleted_at IS NULL`, hash))
	return k, wrap("key", err)
}

// KeyByID returns a key that is not deleted.
func (s *SQLite) KeyByID(ctx context.Context, id int64) (quota.Key, error) {
	k, err := scanSQLiteKey(s.r.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_key_stats WHERE id = ? AND deleted_at IS NULL`, id))
	return k, wrap("key", err)
}

// ChangeKey applies an operator's change and records its events in one
// transaction.
func (s *SQLite) ChangeKey(ctx context.Context, ref quota.KeyRef, c quota.KeyChange) (quota.Key, error) {
	var k quota.Key
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var err error
		k, err = changeKey(sqliteKeyTx{ctx, tx}, ref, c)
		return err
	})
	return k, wrap("change key", err)
}

// sqliteKeyTx is a keyTx in a writer transaction, which holds SQLite's
// write lock from its start.
type sqliteKeyTx struct {
	ctx context.Context
	tx  *sql.Tx
}

func (t sqliteKeyTx) lock(ref quota.KeyRef) (quota.Key, error) {
	return scanSQLiteKey(t.tx.QueryRowContext(t.ctx, `SELECT `+keyColumns+` FROM api_key_stats
		WHERE deleted_at IS NULL AND (id = ?1 OR ?1 = 0 AND key_hash = ?2)`, ref.ID, ref.Hash))
}

func (t sqliteKeyTx) update(id int64, st keyState) (quota.Key, error) {
	var deleted any
	if st.deleted {
		deleted = micros(st.now)
	}
	rateRequests, ratePer, rateInterval := st.rateColumns()
	refillCalls, refillEvery := st.refillColumns()
	return scanSQLiteKey(t.tx.QueryRowContext(t.ctx, `
		UPDATE api_key_stats SET name = ?2, note = ?3, disabled = ?4, expires_at = ?5, remaining_calls = ?6,
			deleted_at = ?7, key_hash = CASE WHEN ?7 IS NULL THEN key_hash ELSE 'deleted:' || id || ':' || key_hash END,
			updated_at = ?8, rate_requests = ?9, rate_per = ?10, rate_interval = ?11, max_concurrent = ?12,
			cost_per_image = ?13, refill_calls = ?14, refill_every = ?15, refill_next_at = ?16
		WHERE id = ?1
		RETURNING `+keyColumns, id, st.name, st.note, st.disabled, microsOrNil(st.expiresAt), st.remaining, deleted, micros(st.now),
		rateRequests, ratePer, rateInterval, st.concurrent, st.perImage, refillCalls, refillEvery, microsOrNil(st.refillNextAt)))
}

func (t sqliteKeyTx) event(id int64, e quota.Event) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO key_events (key_id, at, action, calls, before, after, detail) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		id, micros(e.At), e.Action, e.Calls, e.Before, e.After, e.Detail)
	return err
}

// DueRefills returns the ids of the keys whose refill is due at now.
func (s *SQLite) DueRefills(ctx context.Context, now time.Time) ([]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM api_key_stats WHERE refill_next_at <= ? AND deleted_at IS NULL ORDER BY id`, micros(now))
	if err != nil {
		return nil, wrap("due refills", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, wrap("due refills", err)
		}
		ids = append(ids, id)
	}
	return ids, wrap("due refills", rows.Err())
}

// ListKeys lists the keys a filter selects, newest first.
func (s *SQLite) ListKeys(ctx context.Context, f quota.KeyFilter) ([]quota.Key, error) {
	rows, err := s.r.QueryContext(ctx, `
		SELECT `+keyColumns+` FROM api_key_stats
		WHERE deleted_at IS NULL AND (?1 = 0 OR id < ?1)
		  AND (?2 = '' OR key_prefix LIKE ?2 || '%' ESCAPE '\' OR name LIKE '%' || ?2 || '%' ESCAPE '\' OR note LIKE '%' || ?2 || '%' ESCAPE '\')
		  AND `+statusCondition("?5", "?3")+`
		ORDER BY id DESC LIMIT ?4`, f.Before, escapeLike(f.Query), micros(f.Now), f.Limit, f.Status)
	if err != nil {
		return nil, wrap("list keys", err)
	}
	defer rows.Close()
	var keys []quota.Key
	for rows.Next() {
		k, err := scanSQLiteKey(rows)
		if err != nil {
			return nil, wrap("list keys", err)
		}
		keys = append(keys, k)
	}
	return keys, wrap("list keys", rows.Err())
}

// KeyEvents returns a key's events, oldest first.
func (s *SQLite) KeyEvents(ctx context.Context, id int64) ([]quota.Event, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT at, action, calls, before, after, detail FROM key_events WHERE key_id = ? ORDER BY id`, id)
	if err != nil {
		return nil, wrap("key events", err)
	}
	defer rows.Close()
	events := []quota.Event{}
	for rows.Next() {
		var (
			e                    quota.Event
			at                   int64
			calls, before, after sql.NullInt64
		)
		if err := rows.Scan(&at, &e.Action, &calls, &before, &after, &e.Detail); err != nil {
			return nil, wrap("key events", err)
		}
		e.At = time.UnixMicro(at).UTC()
		e.Calls, e.Before, e.After = intOrNil(calls), intOrNil(before), intOrNil(after)
		events = append(events, e)
	}
	return events, wrap("key events", rows.Err())
}

func intOrNil(v sql.NullInt64) *int64 {
	if !v.Valid {
		return nil
	}
	return &v.Int64
}

// KeyDaily returns a key's days with use from since on, oldest first.
func (s *SQLite) KeyDaily(ctx context.Context, keyID int64, since string) ([]quota.KeyDay, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT day, generations, units FROM key_daily WHERE key_id = ? AND day >= ? ORDER BY day`, keyID, since)
	if err != nil {
		return nil, wrap("key daily", err)
	}
	defer rows.Close()
	return scanKeyDays(rows)
}

func scanKeyDays(rows rowScanner) ([]quota.KeyDay, error) {
	var days []quota.KeyDay
	for rows.Next() {
		var d quota.KeyDay
		if err := rows.Scan(&d.Date, &d.Generations, &d.Units); err != nil {
			return nil, wrap("key daily", err)
		}
		days = append(days, d)
	}
	return days, wrap("key daily", rows.Err())
}

// sqliteCallsQuery is the usage log's statement on SQLite. A page of
// every key's calls in a time window is read newest first along the
// primary key (+c.started_at keeps SQLite off calls_started), where a
// recent window's page is found at once; unless byWindow: the window lies
// so far back that reading every newer call would cost more than sorting
// the window, found by calls_started (+c.id keeps SQLite off the primary
// key's order, which it would otherwise prefer to a sort for a window
// open at one end). One key's calls, and a whole window (the CSV), take
// their indexes.
func sqliteCallsQuery(f quota.CallFilter, byWindow bool) (string, []any) {
	started, order := "c.started_at", "c.id"
	if f.KeyID == 0 && f.Limit > 0 {
		if byWindow {
			order = "+c.id"
		} else {
			started = "+c.started_at"
		}
	}
	return callsQuery(f, started, order, sqlitePlaceholder, func(t time.Time) any { return micros(t) })
}

// sqliteWindowIDs finds the newest call's id and those of the first calls
// started at or after ?1 (the window's end) and ?2 (its start).
const sqliteWindowIDs = `SELECT
	(SELECT max(id) FROM calls),
	(SELECT id FROM calls WHERE started_at >= ?1 ORDER BY started_at LIMIT 1),
	(SELECT id FROM calls WHERE started_at >= ?2 ORDER BY started_at LIMIT 1)`

// windowCost is how many calls read along the primary key cost as much as
// one call of a window sorted through calls_started (read by the index,
// then its row and its key's, then sorted).
const windowCost = 4

// oldWindow tells whether a page of every key's calls in f's window
// is cheaper to find by sorting the window than by reading the calls from
// the cursor (or the newest) down to the window: whether more than
// windowCost times the window's calls lie between them. Both plans find
// the same calls; the counts are estimated from ids, which SQLite gives
// out in commit order, close to the order of starts, each end found by
// one search of calls_started.
func (s *SQLite) oldWindow(ctx context.Context, f quota.CallFilter) (bool, error) {
	if f.KeyID != 0 || f.Limit == 0 || f.To == nil {
		return false, nil
	}
	from := int64(math.MinInt64)
	if f.From != nil {
		from = micros(*f.From)
	}
	var newest, after, first sql.NullInt64
	err := s.r.QueryRowContext(ctx, sqliteWindowIDs, micros(*f.To), from).Scan(&newest, &after, &first)
	if err != nil || !after.Valid {
		return false, err // no call started after the window: it is the newest
	}
	top := newest.Int64
	if f.Before > 0 {
		top = min(top, f.Before-1)
	}
	return top-after.Int64 > windowCost*max(after.Int64-first.Int64, 0), nil
}

// Calls streams the calls a filter selects to each, newest first.
func (s *SQLite) Calls(ctx context.Context, f quota.CallFilter, each func(quota.Call) error) error {
	byWindow, err := s.oldWindow(ctx, f)
	if err != nil {
		return wrap("calls", err)
	}
	q, args := sqliteCallsQuery(f, byWindow)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return wrap("calls", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			c        quota.Call
			started  int64
			finished sql.NullInt64
			state    string
			status   int
		)
		if err := rows.Scan(&c.ID, &c.KeyID, &c.KeyPrefix, &c.RequestID, &started, &finished, &state, &status, &c.BatchSize, &c.Cost, &c.Target); err != nil {
			return wrap("calls", err)
		}
		c.StartedAt, c.FinishedAt = time.UnixMicro(started).UTC(), fromMicros(finished)
		finishCall(&c, state, status)
		if err := each(c); err != nil {
			return err
		}
	}
	return wrap("calls", rows.Err())
}

// PruneCalls deletes at most limit finished calls started before before.
func (s *SQLite) PruneCalls(ctx context.Context, before time.Time, limit int) (int, error) {
	res, err := s.w.ExecContext(ctx, `
		DELETE FROM calls WHERE id IN (
			SELECT id FROM calls WHERE started_at < ? AND state <> 'open' ORDER BY started_at LIMIT ?)`, micros(before), limit)
	if err != nil {
		return 0, wrap("prune calls", err)
	}
	n, err := res.RowsAffected()
	return int(n), wrap("prune calls", err)
}

// Audit reads the sums the books are checked with, in one statement so
// that they agree.
func (s *SQLite) Audit(ctx context.Context) (quota.Audit, error) {
	rows, err := s.r.QueryContext(ctx, auditQuery)
	if err != nil {
		return quota.Audit{}, wrap("audit", err)
	}
	defer rows.Close()
	return scanAudit(rows)
}

// auditQuery selects, per key, what the books are checked with, and with
// each row the site's total (one row of zeros when there is no key).
const auditQuery = `
	SELECT COALESCE(k.id, 0), COALESCE(k.key_prefix, ''), COALESCE(k.deleted_at IS NOT NULL, false),
	       CAST(COALESCE((SELECT sum(e.after - e.before) FROM key_events e WHERE e.key_id = k.id AND e.after IS NOT NULL), 0) AS BIGINT),
	       COALESCE(k.used_units, 0), COALESCE(k.remaining_calls, 0), COALESCE(k.successful_calls, 0),
	       CAST(COALESCE((SELECT sum(d.generations) FROM key_daily d WHERE d.key_id = k.id), 0) AS BIGINT),
	       CAST(COALESCE((SELECT sum(d.units) FROM key_daily d WHERE d.key_id = k.id), 0) AS BIGINT),
	       site.total
	FROM (SELECT CAST(COALESCE(sum(generations), 0) AS BIGINT) AS total FROM daily_generations) site
	LEFT JOIN api_key_stats k ON true
	ORDER BY k.id`

func scanAudit(rows rowScanner) (quota.Audit, error) {
	var a quota.Audit
	for rows.Next() {
		var k quota.KeyAudit
		if err := rows.Scan(&k.ID, &k.Prefix, &k.Deleted, &k.EventsChange, &k.UsedUnits, &k.RemainingCalls, &k.SuccessfulCalls,
			&k.DailyCalls, &k.DailyUnits, &a.SiteGenerations); err != nil {
			return a, wrap("audit", err)
		}
		if k.ID != 0 {
			a.Keys = append(a.Keys, k)
		}
	}
	return a, wrap("audit", rows.Err())
}
