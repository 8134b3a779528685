package store

import (
	"context"
	"fmt"

	"github.com/felix-gateway/felix/internal/quota"
)

// MigrateTo applies the migrations up to version, for tests that build a
// database of an older schema.
var MigrateTo = migrateTo

// TurnReadOnly makes s refuse writes from now on as a read-only server or
// file would: SQLite's writer connection gets query_only; PostgreSQL's
// pooled connections get default_transaction_read_only, as a server whose
// configuration changed would give them (open s with MaxConns 1 so that
// the setting reaches its only connection).
func TurnReadOnly(ctx context.Context, s Store) error {
	switch s := s.(type) {
	case *SQLite:
		_, err := s.w.ExecContext(ctx, `PRAGMA query_only = 1`)
		return err
	case *Postgres:
		_, err := s.pool.Exec(ctx, `SET default_transaction_read_only = on`)
		return err
	}
	return fmt.Errorf("TurnReadOnly: unknown store %T", s)
}

// TurnLock is the advisory lock the group commits of every Felix process
// on a PostgreSQL database take turns on.
const TurnLock = pgTurnLock

// CallsQuery is the usage log's statement for f in the SQL of a store of
// kind, with its arguments.
func CallsQuery(f quota.CallFilter, kind Kind) (string, []any) {
	if kind == PostgresKind {
		return pgCallsQuery(f)
	}
	return sqliteCallsQuery(f, false)
}

// SQLiteWindowIDs is the statement the SQLite store estimates a window's
// place among the calls with.
const SQLiteWindowIDs = sqliteWindowIDs

// SQLiteCallsQuery is the statement the SQLite store s reads the usage
// log with for f, which depends on where f's window lies in its calls.
func SQLiteCallsQuery(ctx context.Context, s Store, f quota.CallFilter) (string, []any, error) {
	byWindow, err := s.(*SQLite).oldWindow(ctx, f)
	q, args := sqliteCallsQuery(f, byWindow)
	return q, args, err
}

// SQLiteSweeps are the SQLite writer's orphan sweeps, by name.
var SQLiteSweeps = map[string]string{"release expired calls": sqliteReleaseExpired, "release an owner's calls": sqliteReleaseOwner}

// PreparedUsageStatements counts the usage log's statements prepared in
// the sessions of a PostgreSQL store's pool (open it with MaxConns 1 to
// see them all).
func PreparedUsageStatements(ctx context.Context, s Store) (int, error) {
	var n int
	// The pattern is split so that this statement does not match itself.
	err := s.(*Postgres).pool.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%FROM calls c JOIN ' || 'api_key_stats k%'`).Scan(&n)
	return n, err
}

// OpenCalls is how many calls the SQLite store s counts open, which its
// writer's gather goes by.
func OpenCalls(s Store) int64 { return s.(*SQLite).open.Load() }

// SetOpenCalls makes the SQLite store s count n calls open, as a count
// that drifted would.
func SetOpenCalls(s Store, n int64) { s.(*SQLite).open.Store(n) }
