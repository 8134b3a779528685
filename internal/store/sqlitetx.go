package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/felix-gateway/felix/internal/quota"
)

// sqliteTx is what a group of SQLite writes runs in: the writer
// connection's own prepared statements, driven below database/sql. A
// call's five statements cost about half as much CPU there (no statement
// wrappers, row objects or argument conversion per call, measured with
// the store's BenchmarkCall), and the writer is the gateway's busiest
// goroutine.
//
// It is used only by the group's goroutine, and only inside
// sql.Conn.Raw on the writer pool's single connection, so the statements
// never outlive or leave the connection they were prepared on.
type sqliteTx struct {
	conn  any // the driver connection the statements belong to
	stmts sqliteStmts
	args  []driver.NamedValue
	row   []driver.Value
	// open is the number of open calls a group with a sweep counted at
	// its end; counted says it did.
	open    int64
	counted bool
}

// sqliteStmts are the writer's statements, prepared once per connection
// (the transaction's own too: parsing BEGIN and COMMIT again for every
// group cost about 1% of Felix's CPU under load).
type sqliteStmts struct {
	begin, commit, rollback driver.Stmt

	reserve, insertCall, attachIdem, settleCall, chargeKey, countDay, countKeyDay, releaseCall, unreserve, releaseExpired, releaseOwner, countOpen driver.Stmt
}

// The orphan sweeps: they find open calls by the partial index calls_open
// (WHERE state = 'open'), whatever the size of the history. The owner's
// sweep says +started_at so that SQLite cannot take calls_started for it,
// which would read every call started before now (TestSweepPlansSQLite).
const (
	sqliteReleaseExpired = `
		UPDATE calls SET state = 'released', finished_at = ?1
		WHERE state = 'open' AND deadline < ?1 RETURNING key_id, cost`
	sqliteReleaseOwner = `
		UPDATE calls SET state = 'released', finished_at = ?1
		WHERE state = 'open' AND owner = ?2 AND +started_at < ?1 RETURNING key_id, cost`
)

// sqliteCountOpen counts the open calls (by calls_open too), for the
// writer's count of them: at open and in every group with a sweep.
const sqliteCountOpen = `SELECT count(*) FROM calls WHERE state = 'open'`

// each lists the statements with their SQL, for preparing and closing.
func (st *sqliteStmts) each() []struct {
	stmt *driver.Stmt
	sql  string
} {
	return []struct {
		stmt *driver.Stmt
		sql  string
	}{
		{&st.begin, `BEGIN IMMEDIATE`},
		{&st.commit, `COMMIT`},
		{&st.rollback, `ROLLBACK`},
		{&st.reserve, `
			UPDATE api_key_stats
			SET reserved_calls = reserved_calls + (CASE WHEN cost_per_image THEN ?1 ELSE 1 END), in_flight = in_flight + 1,
			    total_calls = total_calls + 1, updated_at = ?2, last_used_at = ?2,
			    rate_tat = CASE WHEN rate_interval IS NULL THEN rate_tat ELSE max(rate_tat, ?2) + rate_interval END
			WHERE key_hash = ?3 AND NOT disabled AND (expires_at IS NULL OR expires_at > ?2)
			  AND (rate_interval IS NULL OR max(rate_tat, ?2) + rate_interval - ?2 <= rate_interval * rate_requests)
			  AND (max_concurrent IS NULL OR in_flight < max_concurrent)
			  AND remaining_calls - reserved_calls >= (CASE WHEN cost_per_image THEN ?1 ELSE 1 END)
			RETURNING id, CASE WHEN cost_per_image THEN ?1 ELSE 1 END`},
		{&st.insertCall, `
			INSERT INTO calls (key_id, cost, batch_size, owner, request_id, started_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?)`},
		{&st.attachIdem, `
			UPDATE idempotency SET call_id = ?1 WHERE key_id = ?2 AND idem_key = ?3`},
		// An outcome names the call's key and cost, as its reservation
		// returned them; the call is settled (or released) only if they
		// are its own.
		{&st.settleCall, `
			UPDATE calls SET state = 'settled', status = ?1, finished_at = ?2, target = ?3
			WHERE id = ?4 AND state = 'open' AND key_id = ?5 AND cost = ?6`},
		{&st.chargeKey, `
			UPDATE api_key_stats
			SET remaining_calls = remaining_calls - ?1, reserved_calls = reserved_calls - ?1, used_units = used_units + ?1,
			    in_flight = in_flight - ?2, successful_calls = successful_calls + ?2, updated_at = ?3
			WHERE id = ?4`},
		{&st.countDay, `
			INSERT INTO daily_generations (day, generations) VALUES (?1, ?2)
			ON CONFLICT (day) DO UPDATE SET generations = generations + ?2`},
		{&st.countKeyDay, `
			INSERT INTO key_daily (key_id, day, generations, units) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (key_id, day) DO UPDATE SET generations = generations + ?3, units = units + ?4`},
		{&st.releaseCall, `
			UPDATE calls SET state = 'released', status = ?1, finished_at = ?2, target = ?3
			WHERE id = ?4 AND state = 'open' AND key_id = ?5 AND cost = ?6`},
		{&st.unreserve, `
			UPDATE api_key_stats SET reserved_calls = reserved_calls - ?1, in_flight = in_flight - ?2, updated_at = ?3 WHERE id = ?4`},
		{&st.releaseExpired, sqliteReleaseExpired},
		{&st.releaseOwner, sqliteReleaseOwner},
		{&st.countOpen, sqliteCountOpen},
	}
}

// prepare (re)prepares the statements when dc is not the connection they
// were prepared on (the first group, or database/sql replaced a broken
// connection; the old statements went with it).
func (t *sqliteTx) prepare(ctx context.Context, dc any) error {
	if t.conn == dc {
		return nil
	}
	c, ok := dc.(driver.ConnPrepareContext)
	if !ok {
		return fmt.Errorf("sqlite driver connection %T cannot prepare statements", dc)
	}
	t.conn = nil
	for _, s := range t.stmts.each() {
		st, err := c.PrepareContext(ctx, s.sql)
		if err != nil {
			t.close()
			return fmt.Errorf("prepare %s: %w", strings.Join(strings.Fields(s.sql), " "), err)
		}
		*s.stmt = st
	}
	t.conn = dc
	return nil
}

// close finalizes the statements; call it inside Raw on their connection.
func (t *sqliteTx) close() {
	for _, s := range t.stmts.each() {
		if *s.stmt != nil {
			(*s.stmt).Close()
			*s.stmt = nil
		}
	}
	t.conn = nil
}

// errNotBegun marks a group whose transaction could not start (another
// process holds the write lock past the group's deadline): nothing was
// written, and retrying each write alone would only wait again.
var errNotBegun = errors.New("sqlite: transaction not begun")

// sqliteRolledBack: a group that began and then failed was rolled back
// (run makes sure), so its writes may be retried alone.
func sqliteRolledBack(err error) bool { return !errors.Is(err, errNotBegun) }

// run executes writes in one IMMEDIATE transaction and commits it;
// on any error it rolls back, so that nothing of the group was written.
func (t *sqliteTx) run(ctx context.Context, writes []callWrite, results []callResult) error {
	// BEGIN waits for another process's write lock (busy_timeout) no
	// longer than ctx; the statements and COMMIT run without a context,
	// which spares the driver a goroutine per statement.
	t.counted = false
	if _, err := t.stmts.begin.(driver.StmtExecContext).ExecContext(ctx, nil); err != nil {
		return errors.Join(errNotBegun, err)
	}
	err := t.apply(writes, results)
	if err == nil {
		_, err = t.exec(t.stmts.commit)
	}
	if err != nil {
		if _, rbErr := t.exec(t.stmts.rollback); rbErr != nil {
			// The connection's state is unknown: have database/sql drop it.
			return errors.Join(err, rbErr, driver.ErrBadConn)
		}
	}
	return err
}

func (t *sqliteTx) bind(args []any) []driver.NamedValue {
	t.args = t.args[:0]
	for i, a := range args {
		t.args = append(t.args, driver.NamedValue{Ordinal: i + 1, Value: a})
	}
	return t.args
}

// exec runs a statement.
func (t *sqliteTx) exec(st driver.Stmt, args ...any) (driver.Result, error) {
	return st.(driver.StmtExecContext).ExecContext(context.Background(), t.bind(args))
}

// queryRow runs a statement and reads its first row's integer columns
// into dest; found is false when it returned no row.
func (t *sqliteTx) queryRow(st driver.Stmt, dest []*int64, args ...any) (found bool, err error) {
	err = t.query(st, dest, func() bool { found = true; return false }, args)
	return found, err
}

// queryEach runs a statement and calls each after reading every row's
// integer columns into dest.
func (t *sqliteTx) queryEach(st driver.Stmt, dest []*int64, each func(), args ...any) error {
	return t.query(st, dest, func() bool { each(); return true }, args)
}

// query reads rows into dest, calling row after each until it returns
// false.
func (t *sqliteTx) query(st driver.Stmt, dest []*int64, row func() (more bool), args []any) (err error) {
	rows, err := st.(driver.StmtQueryContext).QueryContext(context.Background(), t.bind(args))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, rows.Close()) }()
	if cap(t.row) < len(dest) {
		t.row = make([]driver.Value, len(dest))
	}
	vals := t.row[:len(dest)]
	for {
		if err := rows.Next(vals); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		for i, v := range vals {
			n, ok := v.(int64)
			if !ok {
				return fmt.Errorf("column %d is %T, not an integer", i, v)
			}
			*dest[i] = n
		}
		if !row() {
			return nil
		}
	}
}

// commitGroup runs a group of writes in one transaction on the writer
// connection.
func (s *SQLite) commitGroup(ctx context.Context, writes []callWrite, results []callResult) error {
	c, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Raw(func(dc any) error {
		if err := s.tx.prepare(ctx, dc); err != nil {
			return err
		}
		err := s.tx.run(ctx, writes, results)
		switch {
		case err == nil && s.tx.counted:
			s.open.Store(s.tx.open)
		case err == nil:
			s.open.Add(openedCalls(writes, results))
		}
		if v, ok := dc.(driver.Validator); errors.Is(err, driver.ErrBadConn) || ok && !v.IsValid() {
			// database/sql will drop this connection: finalize its
			// statements while it is open; the next group prepares anew.
			s.tx.close()
		}
		return err
	})
}

// openedCalls is how many calls a committed group opened, less those its
// settles and releases ended. (A group with a sweep counts the open calls
// itself: see apply.)
func openedCalls(writes []callWrite, results []callResult) int64 {
	var n int64
	for i, w := range writes {
		switch r := results[i]; {
		case w.kind == reserveWrite && r.callID != 0:
			n++
		case (w.kind == settleWrite || w.kind == releaseWrite) && r.changed:
			n--
		}
	}
	return n
}

// closeTx finalizes the writer's statements on their connection.
func (s *SQLite) closeTx() {
	c, err := s.w.Conn(context.Background())
	if err != nil {
		return
	}
	defer c.Close()
	c.Raw(func(dc any) error {
		if s.tx.conn == dc {
			s.tx.close()
		}
		return nil
	})
}

// apply runs each write's statements, filling in its result. The writes
// of a group are concurrent calls, so any order is theirs: the calls
// ending (settles, releases, sweeps) go first, so that the reserves after
// them see their keys' calls in flight already given back. A key is
// charged once for all its settled calls, and the daily counts (the
// site's, each key's) are added once per day and key, at the end.
func (t *sqliteTx) apply(writes []callWrite, results []callResult) error {
	var (
		days    dailyCounts
		charges = map[int64]charge{}
	)
	for i, w := range writes {
		var err error
		switch w.kind {
		case reserveWrite:
			continue // below
		case settleWrite:
			if results[i].changed, err = t.end(t.stmts.settleCall, w.outcome); results[i].changed {
				charges[w.outcome.KeyID] = charges[w.outcome.KeyID].add(w.outcome)
				days.add(w.outcome.KeyID, w.outcome.Day, w.outcome.Cost)
			}
		case releaseWrite:
			if results[i].changed, err = t.end(t.stmts.releaseCall, w.outcome); results[i].changed {
				_, err = t.exec(t.stmts.unreserve, w.outcome.Cost, int64(1), micros(w.outcome.At), w.outcome.KeyID)
			}
		case sweepWrite:
			results[i].released, err = t.sweep(w.sweep)
		default:
			err = fmt.Errorf("unknown write kind %d", w.kind)
		}
		if err != nil {
			return err
		}
	}
	for keyID, c := range charges {
		if _, err := t.exec(t.stmts.chargeKey, c.cost, c.calls, c.at, keyID); err != nil {
			return err
		}
	}
	for i, w := range writes {
		if w.kind == reserveWrite {
			var err error
			if results[i], err = t.reserve(w.reserve); err != nil {
				return err
			}
		}
	}
	for day, n := range days.site {
		if _, err := t.exec(t.stmts.countDay, day, n); err != nil {
			return err
		}
	}
	for kd, c := range days.keys {
		if _, err := t.exec(t.stmts.countKeyDay, kd.keyID, kd.day, c.generations, c.units); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(writes, func(w callWrite) bool { return w.kind == sweepWrite }) {
		// The recovery loop's sweeps also count the open calls, so that
		// the writer's count of them (openedCalls) is exact again after
		// each recovery interval whatever happened before.
		found, err := t.queryRow(t.stmts.countOpen, []*int64{&t.open})
		t.counted = found && err == nil
		return err
	}
	return nil
}

// charge is what a group's settled calls take from one key.
type charge struct{ cost, calls, at int64 }

func (c charge) add(o quota.Outcome) charge {
	return charge{c.cost + o.Cost, c.calls + 1, max(c.at, micros(o.At))}
}

// end settles or releases an open call with the call statement; changed
// is false when it was not open, or when the outcome's key or cost are not
// the call's.
func (t *sqliteTx) end(call driver.Stmt, o quota.Outcome) (changed bool, err error) {
	res, err := t.exec(call, int64(o.Status), micros(o.At), o.Target, o.CallID, o.KeyID, o.Cost)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// reserve admits a call when the key's conditions hold.
func (t *sqliteTx) reserve(r quota.ReserveRequest) (callResult, error) {
	var keyID, cost int64
	if admitted, err := t.queryRow(t.stmts.reserve, []*int64{&keyID, &cost}, r.BatchSize, micros(r.Start), r.KeyHash); !admitted || err != nil {
		return callResult{}, err
	}
	res, err := t.exec(t.stmts.insertCall, keyID, cost, r.BatchSize, r.Owner, r.RequestID, micros(r.Start), micros(r.Deadline))
	if err != nil {
		return callResult{}, err
	}
	id, err := res.LastInsertId()
	if err == nil && r.IdempotencyKey != "" {
		_, err = t.exec(t.stmts.attachIdem, id, keyID, r.IdempotencyKey)
	}
	return callResult{callID: id, keyID: keyID, cost: cost}, err
}

// sweep releases the open calls it selects and gives their keys back
// their holds.
func (t *sqliteTx) sweep(sw sweep) (int, error) {
	at := micros(sw.now)
	st, args := t.stmts.releaseExpired, []any{at}
	if sw.owner != "" {
		st, args = t.stmts.releaseOwner, []any{at, sw.owner}
	}
	type hold struct{ cost, calls int64 }
	held := map[int64]hold{}
	n := 0
	var keyID, cost int64
	err := t.queryEach(st, []*int64{&keyID, &cost}, func() {
		h := held[keyID]
		held[keyID] = hold{h.cost + cost, h.calls + 1}
		n++
	}, args...)
	if err != nil {
		return 0, err
	}
	for keyID, h := range held {
		if _, err := t.exec(t.stmts.unreserve, h.cost, h.calls, at, keyID); err != nil {
			return 0, err
		}
	}
	return n, nil
}
