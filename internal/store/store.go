// Package store implements quota.Store twice: embedded SQLite (the
// default) and PostgreSQL through pgx. Both apply the same schema from
// migrations embedded in the binary.
package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/felix-gateway/felix/internal/quota"
)

//go:embed migrations
var migrations embed.FS

// Kind names a store implementation.
type Kind string

// The store kinds.
const (
	SQLiteKind   Kind = "sqlite"
	PostgresKind Kind = "postgres"
)

// Parse tells which store a DATABASE_URL selects and returns what that
// store needs to open it: a connection string for PostgreSQL, a file path
// for SQLite ("felix.db" when the URL is empty).
func Parse(databaseURL string) (Kind, string, error) {
	if databaseURL == "" {
		return SQLiteKind, "felix.db", nil
	}
	scheme, rest, _ := strings.Cut(databaseURL, ":")
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return PostgresKind, databaseURL, nil
	case "sqlite", "file":
		// sqlite://x and sqlite:///x mean x and /x, as in URLs.
		return SQLiteKind, strings.TrimPrefix(rest, "//"), nil
	}
	return "", "", fmt.Errorf("store: DATABASE_URL %q is neither postgres://… nor sqlite:PATH", databaseURL)
}

// Options tune a store. Zero values get defaults.
type Options struct {
	// MaxConns bounds the PostgreSQL pool (default: pgx's, 4 per core).
	MaxConns int32
}

// Store is what both implementations are: every role quota needs, and
// Close.
type Store interface {
	quota.Ledger
	quota.Keys
	quota.Usage
	Close() error
}

var (
	_ Store = (*SQLite)(nil)
	_ Store = (*Postgres)(nil)
)

// Open opens the store a DATABASE_URL selects. It does not migrate.
func Open(ctx context.Context, databaseURL string, o Options) (Store, error) {
	kind, dsn, err := Parse(databaseURL)
	if err != nil {
		return nil, err
	}
	if kind == PostgresKind {
		return OpenPostgres(ctx, dsn, o)
	}
	return OpenSQLite(ctx, dsn)
}

// Migrate applies every embedded migration not yet applied. On PostgreSQL
// it holds an advisory lock, so instances starting together take turns.
func Migrate(ctx context.Context, databaseURL string) error {
	return migrateTo(ctx, databaseURL, 0)
}

// migrateTo applies the migrations up to version, or all when it is 0.
func migrateTo(ctx context.Context, databaseURL string, version int64) error {
	kind, dsn, err := Parse(databaseURL)
	if err != nil {
		return err
	}
	var (
		db      *sql.DB
		dialect goose.Dialect
		opts    = []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	)
	switch kind {
	case PostgresKind:
		cfg, err := pgxConfig(dsn)
		if err != nil {
			return err
		}
		db = stdlib.OpenDB(*cfg.ConnConfig)
		dialect = goose.DialectPostgres
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("store: migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	default:
		// SQLite has no advisory lock: processes migrating one file take
		// turns through an flock on the file itself (independent of
		// SQLite's own fcntl locks on Linux).
		unlock, err := lockFile(dsn)
		if err != nil {
			return err
		}
		defer unlock()
		if db, err = openSQLiteDB(dsn, 1); err != nil {
			return err
		}
		dialect = goose.DialectSQLite3
	}
	defer db.Close()
	sub, err := fs.Sub(migrations, "migrations/"+string(kind))
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	p, err := goose.NewProvider(dialect, db, sub, opts...)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	up := p.Up
	if version > 0 {
		up = func(ctx context.Context) ([]*goose.MigrationResult, error) { return p.UpTo(ctx, version) }
	}
	if _, err := up(ctx); err != nil {
		return fmt.Errorf("store: migrate %s: %w", kind, err)
	}
	return nil
}

// lockFile takes an exclusive flock on path (creating the file if needed)
// and returns its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
