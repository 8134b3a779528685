package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/felix-gateway/felix/internal/quota"
)

// Readiness (/readyz) asks Writable. A load balancer polls it every
// second or so on every instance, sometimes several balancers at once, so
// each answer must cost little, and be true the moment it is given (503 as
// soon as writes fail, 200 as soon as they work again: results are not
// reused). What keeps it cheap:
//
//   - the probe is the smallest write on the path calls' writes take, in
//     one transaction bounded by probeTimeout: on PostgreSQL a statement
//     that updates no row (one round trip; no WAL, no transaction id, no
//     fsync), so n instances polled k times a second cost the shared
//     server n·k trivial statements a second; on SQLite, which has one
//     instance, one rewritten header page (one WAL frame and fsync, less
//     than the smallest call) and a look at the room left on its disk;
//   - polls that arrive while a probe runs share it: a store that hangs
//     never has more than one probe per instance waiting for it.
//
// It fails where calls' writes fail: a read-only server or file, a lock
// held by another process (the probe waits for it as a call would, until
// probeTimeout), on SQLite a full disk or an I/O error. What it cannot see
// on PostgreSQL is a commit stuck waiting for a synchronous standby:
// seeing that would take a real commit, with its WAL flush, every poll.
const probeTimeout = 2 * time.Second

// probeShare runs a store's write probe for Writable, one at a time:
// callers that arrive while it runs get its result. The zero value is
// ready to use.
type probeShare struct {
	mu      sync.Mutex
	running *probeRun // nil when no probe runs
}

type probeRun struct {
	done chan struct{} // closed when err is set
	err  error
}

// check waits for a probe (starting one unless one runs) or for ctx. The
// probe runs detached from ctx, bounded by probeTimeout, so that a caller
// who gives up does not fail it for the others.
func (p *probeShare) check(ctx context.Context, probe func(ctx context.Context) error) error {
	p.mu.Lock()
	run := p.running
	if run == nil {
		run = &probeRun{done: make(chan struct{})}
		p.running = run
		go func() {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
			run.err = probe(pctx)
			cancel()
			p.mu.Lock()
			p.running = nil
			p.mu.Unlock()
			close(run.done)
		}()
	}
	p.mu.Unlock()
	select {
	case <-run.done:
		return run.err
	case <-ctx.Done():
		return fmt.Errorf("store: writable: %w", ctx.Err())
	}
}

// pgProbe takes the locks a call's writes take, on every table they
// write, and is refused where they would be (a read-only transaction
// raises 25006 before looking for rows), but changes no row.
const pgProbe = `
	WITH k AS (UPDATE api_key_stats SET id = id WHERE false),
	     c AS (UPDATE calls SET id = id WHERE false),
	     u AS (UPDATE key_daily SET day = day WHERE false)
	UPDATE daily_generations SET day = day WHERE false`

// Writable reports whether PostgreSQL accepts writes: nil, an error
// wrapping quota.ErrReadOnly (a standby, default_transaction_read_only, no
// writable server among the URL's hosts), or why it could not tell.
func (p *Postgres) Writable(ctx context.Context) error {
	return p.probes.check(ctx, func(ctx context.Context) error {
		_, err := p.pool.Exec(ctx, pgProbe)
		return wrap("writable", err)
	})
}

// Writable reports whether the SQLite file accepts writes: nil, an error
// wrapping quota.ErrReadOnly, or why not (another process holds the write
// lock, the disk is full). Through the writer connection, between two
// groups of calls, it rewrites the header's user_version with its own
// value, and checks the room left on the file's disk: a one-page write
// may still fit in the WAL's old frames where a call's few pages no
// longer do.
func (s *SQLite) Writable(ctx context.Context) error {
	return s.probes.check(ctx, func(ctx context.Context) error {
		tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: takes the write lock
		if err != nil {
			return wrap("writable", err)
		}
		defer tx.Rollback()
		var (
			v          int64
			seq        int
			name, file string
		)
		if err := tx.QueryRowContext(ctx, `PRAGMA database_list`).Scan(&seq, &name, &file); err != nil {
			return wrap("writable", err)
		}
		if err := diskRoom(file); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
			return wrap("writable", err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v)); err != nil {
			return wrap("writable", err)
		}
		return wrap("writable", tx.Commit())
	})
}

// minFreeBytes is the room SQLite's file needs on its disk to be called
// writable: a call's commit appends a few pages to the WAL, checkpoints
// grow the file; below this, calls start failing with SQLITE_FULL.
const minFreeBytes = 1 << 20

// errDiskFull says that the disk of the SQLite file is (nearly) full.
var errDiskFull = errors.New("store: the disk holding the SQLite file is full")

func diskRoom(file string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(file), &st); err != nil {
		return fmt.Errorf("store: writable: %w", err)
	}
	if free := st.Bavail * uint64(st.Bsize); free < minFreeBytes {
		return fmt.Errorf("%w (%d bytes left for %s)", errDiskFull, free, file)
	}
	return nil
}

// readOnly marks err with quota.ErrReadOnly when its cause is a store
// that refuses writes, so that the HTTP layer can say so.
func readOnly(err error) error {
	if err == nil || errors.Is(err, quota.ErrReadOnly) {
		return err
	}
	var pgErr *pgconn.PgError
	var liteErr *sqlite.Error
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "25006", // read_only_sql_transaction
		errors.Is(err, pgconn.ErrReadOnlyConnection), // no host passed target_session_attrs=read-write
		errors.As(err, &liteErr) && liteErr.Code()&0xff == sqlite3.SQLITE_READONLY:
		return fmt.Errorf("%w: %w", quota.ErrReadOnly, err)
	}
	return err
}

// errReadOnlyServer refuses a pooled connection to a server that reports
// itself read-only.
var errReadOnlyServer = fmt.Errorf("%w: the PostgreSQL server is in recovery or has default_transaction_read_only on", quota.ErrReadOnly)

// hostTimeout is how long each host of a multi-host DATABASE_URL gets to
// answer a new connection when the URL sets no connect_timeout, so that a
// host that is gone without refusing (powered off, partitioned) does not
// keep Felix from the next one.
const hostTimeout = 2 * time.Second

// forFailover makes a pool find the writable server again by itself after
// a failover:
//   - a connection to a server that became read-only (promoted away from,
//     fenced with default_transaction_read_only) is dropped at its next
//     use instead of failing every write it is given; the next
//     connection goes through target_session_attrs again. PostgreSQL 14
//     and later report both settings on every connection.
//   - connections to a server that went away are dropped by pgx itself
//     (a broken connection is closed, and the pool destroys closed ones;
//     idle ones are pinged before use).
//   - with several hosts, each gets hostTimeout to answer (see above).
func forFailover(cfg *pgxpool.Config) {
	cfg.PrepareConn = func(_ context.Context, c *pgx.Conn) (bool, error) {
		pc := c.PgConn()
		if pc.ParameterStatus("in_hot_standby") == "on" || pc.ParameterStatus("default_transaction_read_only") == "on" {
			return false, errReadOnlyServer
		}
		return true, nil
	}
	cc := &cfg.ConnConfig.Config
	hosts := map[string]bool{fmt.Sprintf("%s:%d", cc.Host, cc.Port): true}
	for _, fb := range cc.Fallbacks {
		hosts[fmt.Sprintf("%s:%d", fb.Host, fb.Port)] = true
	}
	if cc.ConnectTimeout == 0 && len(hosts) > 1 {
		cc.ConnectTimeout = hostTimeout
	}
}

// Reachable checks that the database of databaseURL answers, without
// needing Felix's tables: on PostgreSQL one connection (which passes
// target_session_attrs, if the URL sets it) and a ping. A SQLite file has
// no server to wait for.
func Reachable(ctx context.Context, databaseURL string) error {
	kind, dsn, err := Parse(databaseURL)
	if err != nil || kind != PostgresKind {
		return err
	}
	cfg, err := pgxConfig(dsn)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("store: postgres: %w", readOnly(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return wrap("ping", conn.Ping(ctx))
}
