package store

import (
	"context"
	"database/sql"
	"errors"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/felix-gateway/felix/internal/quota"
)

// Idempotency-Keys (SPEC §4.3). A claim is a row per (API key,
// Idempotency-Key) saying what the first call did: in flight (with its
// call, once admitted), succeeded (with its answer when kept) or failed.
// Claims run in a transaction of their own that locks the row, so two
// instances never both claim one key.

// idemRow is a claim's row.
type idemRow struct {
	bodyHash    string
	state       string
	callID      int64 // 0 until a call was admitted
	requestID   string
	deadline    time.Time
	expires     time.Time
	status      int
	contentType string
	body        []byte
	stored      bool // body holds the answer
}

// idemTx is a claim's transaction, in a store's own SQL.
type idemTx interface {
	// keyID returns the id of the API key (not deleted) or ErrKeyNotFound.
	keyID(hash string) (int64, error)
	// lock reads the claim's row and locks it until the transaction ends.
	lock(keyID int64, key string) (idemRow, bool, error)
	// insert adds the claim's row unless one exists (another instance's).
	insert(keyID int64, c quota.IdemClaim) (bool, error)
	// replace makes the locked row a new claim.
	replace(keyID int64, c quota.IdemClaim) error
	// callState returns the state of a call.
	callState(id int64) (string, error)
}

// claimIdempotency decides a claim: a new or expired key, or one whose
// first call failed, is claimed; otherwise it tells what the first call
// did.
func claimIdempotency(tx idemTx, c quota.IdemClaim) (quota.IdemResult, error) {
	keyID, err := tx.keyID(c.KeyHash)
	if errors.Is(err, quota.ErrKeyNotFound) {
		return quota.IdemResult{State: quota.IdemNoKey}, nil
	} else if err != nil {
		return quota.IdemResult{}, err
	}
	row, found, err := tx.lock(keyID, c.Key)
	if err != nil {
		return quota.IdemResult{}, err
	}
	if !found {
		inserted, err := tx.insert(keyID, c)
		if err != nil || inserted {
			return quota.IdemResult{State: quota.IdemClaimed}, err
		}
		// Another instance claimed it meanwhile: judge its row.
		if row, found, err = tx.lock(keyID, c.Key); err != nil || !found {
			return quota.IdemResult{State: quota.IdemInProgress}, err
		}
	}
	if row.expires.After(c.Now) {
		if row.bodyHash != c.BodyHash {
			return quota.IdemResult{State: quota.IdemReused}, nil
		}
		succeeded := quota.IdemResult{State: quota.IdemSucceeded, RequestID: row.requestID}
		switch row.state {
		case "succeeded":
			succeeded.Stored, succeeded.Status, succeeded.ContentType, succeeded.Body = row.stored, row.status, row.contentType, row.body
			return succeeded, nil
		case "in_flight":
			state := ""
			if row.callID != 0 {
				if state, err = tx.callState(row.callID); err != nil {
					return quota.IdemResult{}, err
				}
			}
			switch {
			case state == "settled":
				return succeeded, nil // charged, but its answer was never kept (Felix stopped mid-body)
			case state == "open", state == "" && row.deadline.After(c.Now):
				return quota.IdemResult{State: quota.IdemInProgress, RequestID: row.requestID}, nil
			}
			// Its call was released, or it never got one: it failed.
		}
	}
	return quota.IdemResult{State: quota.IdemClaimed}, tx.replace(keyID, c)
}

// The SQL of claims, written for PostgreSQL; lite() rewrites it for SQLite.
const (
	idemKeyID = `SELECT id FROM api_key_stats WHERE key_hash = $1 AND deleted_at IS NULL`
	idemLock  = `SELECT body_hash, state, COALESCE(call_id, 0), request_id, deadline, expires_at,
		COALESCE(status, 0), COALESCE(content_type, ''), body FROM idempotency WHERE key_id = $1 AND idem_key = $2`
	idemInsert = `INSERT INTO idempotency (key_id, idem_key, body_hash, state, request_id, deadline, expires_at)
		VALUES ($1, $2, $3, 'in_flight', $4, $5, $6) ON CONFLICT (key_id, idem_key) DO NOTHING`
	idemReplace = `UPDATE idempotency SET body_hash = $3, state = 'in_flight', call_id = NULL, request_id = $4,
		deadline = $5, expires_at = $6, status = NULL, content_type = NULL, body = NULL
		WHERE key_id = $1 AND idem_key = $2`
	idemCallState = `SELECT state FROM calls WHERE id = $1`
	idemFinish    = `UPDATE idempotency SET state = $3, status = $4, content_type = $5, body = $6
		WHERE key_id = (SELECT id FROM api_key_stats WHERE key_hash = $1) AND idem_key = $2 AND state = 'in_flight'`
	idemPrune = `DELETE FROM idempotency WHERE expires_at < $1`
)

var dollarParam = regexp.MustCompile(`\$(\d+)`)

// lite rewrites PostgreSQL's $N parameters as SQLite's ?N, which bind by
// number as they do (SQLite numbers $N parameters by first appearance).
func lite(q string) string { return dollarParam.ReplaceAllString(q, "?$1") }

// finishState is the row's state for how a claimed call ended.
func finishState(f quota.IdemFinish) (state string, status, contentType, body any) {
	if !f.Succeeded {
		return "failed", nil, nil, nil
	}
	if !f.Stored {
		return "succeeded", f.Status, nil, nil
	}
	body = f.Body
	if f.Body == nil {
		body = []byte{} // stored and empty, not "not kept"
	}
	return "succeeded", f.Status, f.ContentType, body
}

// SQLite.

type sqliteIdemTx struct {
	ctx context.Context
	tx  *sql.Tx
}

func (t sqliteIdemTx) keyID(hash string) (int64, error) {
	var id int64
	err := t.tx.QueryRowContext(t.ctx, lite(idemKeyID), hash).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, quota.ErrKeyNotFound
	}
	return id, err
}

func (t sqliteIdemTx) lock(keyID int64, key string) (idemRow, bool, error) {
	var r idemRow
	var deadline, expires int64
	err := t.tx.QueryRowContext(t.ctx, lite(idemLock), keyID, key).Scan(&r.bodyHash, &r.state, &r.callID, &r.requestID, &deadline, &expires,
		&r.status, &r.contentType, &r.body)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	r.deadline, r.expires, r.stored = time.UnixMicro(deadline), time.UnixMicro(expires), r.body != nil
	return r, err == nil, err
}

func (t sqliteIdemTx) insert(keyID int64, c quota.IdemClaim) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, lite(idemInsert), keyID, c.Key, c.BodyHash, c.RequestID, micros(c.Deadline), micros(c.Expires))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t sqliteIdemTx) replace(keyID int64, c quota.IdemClaim) error {
	_, err := t.tx.ExecContext(t.ctx, lite(idemReplace), keyID, c.Key, c.BodyHash, c.RequestID, micros(c.Deadline), micros(c.Expires))
	return err
}

func (t sqliteIdemTx) callState(id int64) (string, error) {
	var state string
	err := t.tx.QueryRowContext(t.ctx, lite(idemCallState), id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil // pruned: long over
	}
	return state, err
}

// ClaimIdempotency claims an Idempotency-Key in a writer transaction.
func (s *SQLite) ClaimIdempotency(ctx context.Context, c quota.IdemClaim) (quota.IdemResult, error) {
	var res quota.IdemResult
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = claimIdempotency(sqliteIdemTx{ctx, tx}, c)
		return err
	})
	return res, wrap("claim idempotency key", err)
}

// FinishIdempotency records how a claimed call ended.
func (s *SQLite) FinishIdempotency(ctx context.Context, f quota.IdemFinish) error {
	state, status, contentType, body := finishState(f)
	_, err := s.w.ExecContext(ctx, lite(idemFinish), f.KeyHash, f.Key, state, status, contentType, body)
	return wrap("finish idempotency key", err)
}

// PruneIdempotency forgets the Idempotency-Keys that expired before now.
func (s *SQLite) PruneIdempotency(ctx context.Context, now time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, lite(idemPrune), micros(now))
	if err != nil {
		return 0, wrap("prune idempotency keys", err)
	}
	n, err := res.RowsAffected()
	return int(n), wrap("prune idempotency keys", err)
}

// PostgreSQL.

type pgIdemTx struct {
	ctx context.Context
	tx  pgx.Tx
}

func (t pgIdemTx) keyID(hash string) (int64, error) {
	var id int64
	err := t.tx.QueryRow(t.ctx, idemKeyID, hash).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, quota.ErrKeyNotFound
	}
	return id, err
}

func (t pgIdemTx) lock(keyID int64, key string) (idemRow, bool, error) {
	var r idemRow
	err := t.tx.QueryRow(t.ctx, idemLock+` FOR UPDATE`, keyID, key).Scan(&r.bodyHash, &r.state, &r.callID, &r.requestID, &r.deadline, &r.expires,
		&r.status, &r.contentType, &r.body)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	r.stored = r.body != nil
	return r, err == nil, err
}

func (t pgIdemTx) insert(keyID int64, c quota.IdemClaim) (bool, error) {
	tag, err := t.tx.Exec(t.ctx, idemInsert, keyID, c.Key, c.BodyHash, c.RequestID, c.Deadline, c.Expires)
	return tag.RowsAffected() == 1, err
}

func (t pgIdemTx) replace(keyID int64, c quota.IdemClaim) error {
	_, err := t.tx.Exec(t.ctx, idemReplace, keyID, c.Key, c.BodyHash, c.RequestID, c.Deadline, c.Expires)
	return err
}

func (t pgIdemTx) callState(id int64) (string, error) {
	var state string
	err := t.tx.QueryRow(t.ctx, idemCallState, id).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return state, err
}

// ClaimIdempotency claims an Idempotency-Key in a transaction that locks
// its row.
func (p *Postgres) ClaimIdempotency(ctx context.Context, c quota.IdemClaim) (quota.IdemResult, error) {
	var res quota.IdemResult
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		var err error
		res, err = claimIdempotency(pgIdemTx{ctx, tx}, c)
		return err
	})
	return res, wrap("claim idempotency key", err)
}

// FinishIdempotency records how a claimed call ended.
func (p *Postgres) FinishIdempotency(ctx context.Context, f quota.IdemFinish) error {
	state, status, contentType, body := finishState(f)
	_, err := p.pool.Exec(ctx, idemFinish, f.KeyHash, f.Key, state, status, contentType, body)
	return wrap("finish idempotency key", err)
}

// PruneIdempotency forgets the Idempotency-Keys that expired before now.
func (p *Postgres) PruneIdempotency(ctx context.Context, now time.Time) (int, error) {
	tag, err := p.pool.Exec(ctx, idemPrune, now)
	return int(tag.RowsAffected()), wrap("prune idempotency keys", err)
}
