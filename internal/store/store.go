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
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

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
// for SQLite. postgres:// and postgresql:// URLs select PostgreSQL;
// sqlite:PATH, file:PATH and a bare file path, as operators write it
// (./data/felix.db, /var/lib/felix/felix.db), select SQLite; "" means
// felix.db. A value that selects neither is a *URLError saying why.
func Parse(databaseURL string) (Kind, string, error) {
	if databaseURL == "" {
		return SQLiteKind, "felix.db", nil
	}
	scheme, rest, ok := cutScheme(databaseURL)
	if !ok {
		if isKeyValue(databaseURL) {
			return "", "", &URLError{"holds key=value connection settings, which Felix does not read"}
		}
		return sqlitePath(databaseURL)
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		if _, err := url.Parse(databaseURL); err != nil {
			return "", "", &URLError{"is not a valid URL (percent-encode special characters in the password)"}
		}
		return PostgresKind, databaseURL, nil
	case "sqlite", "file":
		// sqlite://x and sqlite:///x mean x and /x, as in URLs.
		return sqlitePath(strings.TrimPrefix(rest, "//"))
	}
	if rest != "" && rest[0] >= '0' && rest[0] <= '9' {
		return "", "", &URLError{"starts with a host and port but no scheme"}
	}
	return "", "", &URLError{fmt.Sprintf("has the unsupported scheme %q", scheme)}
}

// A URLError says why a DATABASE_URL selects no store. It never repeats
// the value, which may hold a password.
type URLError struct {
	Problem string // e.g. `has the unsupported scheme "mysql"`
}

func (e *URLError) Error() string { return "store: DATABASE_URL " + e.Problem }

// cutScheme splits a URL's scheme (RFC 3986: a letter, then letters,
// digits, "+", "-" or ".") from the rest; ok is false for a value without
// one, such as a file path.
func cutScheme(s string) (scheme, rest string, ok bool) {
	scheme, rest, ok = strings.Cut(s, ":")
	if !ok || scheme == "" || !isLetter(scheme[0]) {
		return "", "", false
	}
	for i := 1; i < len(scheme); i++ {
		if c := scheme[i]; !isLetter(c) && !('0' <= c && c <= '9') && c != '+' && c != '-' && c != '.' {
			return "", "", false
		}
	}
	return scheme, rest, true
}

// isKeyValue reports a value that starts like PostgreSQL's key=value
// connection settings ("host=db user=felix").
func isKeyValue(s string) bool {
	key, _, ok := strings.Cut(s, "=")
	return ok && key != "" && !strings.ContainsFunc(key, func(r rune) bool { return !('a' <= r && r <= 'z' || r == '_') })
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// sqlitePath checks the file a SQLite DATABASE_URL names.
func sqlitePath(path string) (Kind, string, error) {
	switch {
	case path == "":
		return "", "", &URLError{"names no SQLite file"}
	case strings.ContainsAny(path, "?#"):
		return "", "", &URLError{"has SQLite options after the file name, but Felix sets them itself"}
	case strings.HasSuffix(path, "/"):
		return "", "", &URLError{"names a folder, not a SQLite file"}
	}
	return SQLiteKind, path, nil
}

// Options tune a store. Zero values get defaults.
type Options struct {
	// MaxConns bounds the PostgreSQL pool (default: pool_max_conns in
	// DATABASE_URL, else pgx's: the greater of 4 and the number of CPUs).
	MaxConns int32
	// Observer is told about every group commit, for metrics; nil tells
	// nobody.
	Observer Observer
}

// Observer is told about every group commit of the calls' writes: how
// many writes it held, how long its transaction took and whether it
// failed. It is called from the commit loop, so it must be cheap.
type Observer interface {
	GroupCommitted(size int, elapsed time.Duration, err error)
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
	return OpenSQLite(ctx, dsn, o)
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
