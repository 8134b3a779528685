// Package storetest gives tests fresh, isolated databases of both kinds.
//
// PostgreSQL tests run when FELIX_TEST_DATABASE_URL is set (e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable); each call gets
// its own schema, dropped when the test ends. Without the variable they
// are skipped, except when CI is set: then they fail, so that a missing
// database can never pass unnoticed.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver for Dump

	"github.com/felix-gateway/felix/internal/store"
)

// EnvURL names the variable holding the PostgreSQL server for tests.
const EnvURL = "FELIX_TEST_DATABASE_URL"

// Kinds lists the store kinds every store test runs against.
var Kinds = []store.Kind{store.SQLiteKind, store.PostgresKind}

// Each runs f as a subtest once per store kind with a fresh database URL.
func Each(t *testing.T, f func(t *testing.T, databaseURL string)) {
	t.Helper()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) { f(t, URL(t, kind)) })
	}
}

// URL returns the DATABASE_URL of a fresh, empty, unmigrated database.
func URL(t testing.TB, kind store.Kind) string {
	t.Helper()
	if kind == store.SQLiteKind {
		return "sqlite:" + filepath.Join(t.TempDir(), "felix.db")
	}
	return postgresURL(t)
}

// Open migrates databaseURL and opens it; the store closes when t ends.
func Open(t testing.TB, databaseURL string) store.Store {
	t.Helper()
	return OpenWith(t, databaseURL, store.Options{})
}

// OpenWith is Open with options (e.g. an Observer).
func OpenWith(t testing.TB, databaseURL string, o store.Options) store.Store {
	t.Helper()
	ctx := context.Background()
	if err := store.Migrate(ctx, databaseURL); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(ctx, databaseURL, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func postgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: PostgreSQL tests must run in CI (e.g. %s=postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", EnvURL, EnvURL)
		}
		t.Skipf("%s is not set: skipping PostgreSQL", EnvURL)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("PostgreSQL at %s: %v (is the server running?)", EnvURL, err)
	}
	defer conn.Close(ctx)
	schema := "felix_test_" + strings.ToLower(rand.Text()[:12])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop test schema: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop test schema: %v", err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return fmt.Sprint(u)
}

// Tables lists every table of Felix's schema.
var Tables = []string{"api_key_stats", "calls", "daily_generations"}

// Dump returns every row of every table of databaseURL as text, read
// directly with SQL, for tests that look for what must not be stored.
func Dump(t testing.TB, databaseURL string) string {
	t.Helper()
	db := openSQL(t, databaseURL)
	defer db.Close()
	var out strings.Builder
	for _, table := range Tables {
		rows, err := db.Query("SELECT * FROM " + table)
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		cols, _ := rows.Columns()
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("dump %s: %v", table, err)
			}
			fmt.Fprintf(&out, "%s:", table)
			for _, v := range vals {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				fmt.Fprintf(&out, " %v", v)
			}
			out.WriteByte('\n')
		}
		if err := rows.Close(); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
	}
	return out.String()
}

// LockWrites takes databaseURL's write lock from a connection of its own,
// as a backup or a maintenance script would: SQLite's (BEGIN EXCLUSIVE)
// or, on PostgreSQL, an EXCLUSIVE lock on Felix's tables (reads go on,
// writes wait). The returned function gives the lock back; it also runs
// when the test ends.
func LockWrites(t testing.TB, databaseURL string) (unlock func()) {
	t.Helper()
	db := openSQL(t, databaseURL)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lock := "BEGIN EXCLUSIVE"
	if kind, _, _ := store.Parse(databaseURL); kind == store.PostgresKind {
		lock = "BEGIN; LOCK TABLE " + strings.Join(Tables, ", ") + " IN EXCLUSIVE MODE"
	}
	if _, err := conn.ExecContext(ctx, lock); err != nil {
		t.Fatalf("take the write lock: %v", err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
				t.Errorf("give the write lock back: %v", err)
			}
			conn.Close()
			db.Close()
		})
	}
	t.Cleanup(unlock)
	return unlock
}

// openSQL opens databaseURL with database/sql, outside any store.
func openSQL(t testing.TB, databaseURL string) *sql.DB {
	t.Helper()
	kind, dsn, err := store.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	driver := "sqlite"
	if kind == store.PostgresKind {
		driver = "pgx"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// SilentServer returns the address of a server that accepts TCP
// connections and never answers, like a database host that hangs.
func SilentServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return ln.Addr().String()
}
