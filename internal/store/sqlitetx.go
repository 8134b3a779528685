package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
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
	stmts map[string]driver.Stmt
	args  []driver.NamedValue
	row   []driver.Value
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
	t.conn, t.stmts = nil, map[string]driver.Stmt{}
	for name, q := range sqliteStmts {
		st, err := c.PrepareContext(ctx, q)
		if err != nil {
			t.close()
			return fmt.Errorf("prepare %s: %w", name, err)
		}
		t.stmts[name] = st
	}
	t.conn = dc
	return nil
}

// close finalizes the statements; call it inside Raw on their connection.
func (t *sqliteTx) close() {
	for _, st := range t.stmts {
		st.Close()
	}
	t.conn, t.stmts = nil, nil
}

// run executes ops in one IMMEDIATE transaction on dc and commits it; on
// any error it rolls back, so that nothing of the group was written.
func (t *sqliteTx) run(ctx context.Context, dc any, ops []*groupOp[*sqliteTx]) error {
	c, ok := dc.(driver.ExecerContext)
	if !ok {
		return fmt.Errorf("sqlite driver connection %T cannot execute", dc)
	}
	// BEGIN waits for another process's write lock (busy_timeout) no
	// longer than ctx; the statements and COMMIT run without a context,
	// which spares the driver a goroutine per statement.
	if _, err := c.ExecContext(ctx, "BEGIN IMMEDIATE", nil); err != nil {
		return err
	}
	err := func() error {
		for _, op := range ops {
			if err := op.run(t); err != nil {
				return err
			}
		}
		_, err := c.ExecContext(context.Background(), "COMMIT", nil)
		return err
	}()
	if err != nil {
		if _, rbErr := c.ExecContext(context.Background(), "ROLLBACK", nil); rbErr != nil {
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

// exec runs the named statement.
func (t *sqliteTx) exec(name string, args ...any) (driver.Result, error) {
	return t.stmts[name].(driver.StmtExecContext).ExecContext(context.Background(), t.bind(args))
}

// queryRow runs the named statement and reads its first row's integer
// columns into dest; found is false when it returned no row.
func (t *sqliteTx) queryRow(name string, dest []*int64, args ...any) (found bool, err error) {
	err = t.query(name, dest, func() bool { found = true; return false }, args)
	return found, err
}

// queryEach runs the named statement and calls each after reading every
// row's integer columns into dest.
func (t *sqliteTx) queryEach(name string, dest []*int64, each func(), args ...any) error {
	return t.query(name, dest, func() bool { each(); return true }, args)
}

// query reads rows into dest, calling row after each until it returns
// false.
func (t *sqliteTx) query(name string, dest []*int64, row func() (more bool), args []any) (err error) {
	rows, err := t.stmts[name].(driver.StmtQueryContext).QueryContext(context.Background(), t.bind(args))
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
				return fmt.Errorf("%s: column %d is %T, not an integer", name, i, v)
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
func (s *SQLite) commitGroup(ctx context.Context, ops []*groupOp[*sqliteTx]) error {
	c, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Raw(func(dc any) error {
		if err := s.tx.prepare(ctx, dc); err != nil {
			return err
		}
		err := s.tx.run(ctx, dc, ops)
		if v, ok := dc.(driver.Validator); errors.Is(err, driver.ErrBadConn) || ok && !v.IsValid() {
			// database/sql will drop this connection: finalize its
			// statements while it is open; the next group prepares anew.
			s.tx.close()
		}
		return err
	})
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
