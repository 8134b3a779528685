package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/felix-gateway/felix/internal/quota"
)

// SQLite is the embedded store: one file in WAL mode, a single writer
// connection (SQLite allows one writer at a time; queuing in Go is cheaper
// than SQLITE_BUSY retries) and a small pool of readers. The writes of
// calls (reserve, settle, release) are group-committed: each is durable
// before it returns, and concurrent ones share a commit.
type SQLite struct {
	w, r   *sql.DB
	tx     sqliteTx                      // the writer's statements; used by writes' goroutine only
	writes *group[callWrite, callResult] // the calls' writes, committed in groups
	probes probeShare                    // Writable's (health.go)
	open   atomic.Int64                  // open calls as last committed; kept by the writer
}

// sqlitePragmas are applied to every connection. synchronous=FULL makes
// each commit durable before Felix forwards the call it admits.
var sqlitePragmas = []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(1)"}

func openSQLiteDB(path string, conns int) (*sql.DB, error) {
	q := url.Values{"_txlock": {"immediate"}}
	for _, p := range sqlitePragmas {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxLifetime(0)
	return db, nil
}

// OpenSQLite opens (creating if needed) the database file at path.
// o.MaxConns does not apply: SQLite has one writer.
func OpenSQLite(ctx context.Context, path string, o Options) (*SQLite, error) {
	w, err := openSQLiteDB(path, 1)
	if err != nil {
		return nil, err
	}
	r, err := openSQLiteDB(path, 4)
	if err != nil {
		w.Close()
		return nil, err
	}
	s := &SQLite{w: w, r: r}
	// Prepare now, so that a database without Felix's tables is reported
	// at once.
	c, err := w.Conn(ctx)
	if err == nil {
		err = c.Raw(func(dc any) error { return s.tx.prepare(ctx, dc) })
		c.Close()
	}
	var open int64
	if err == nil {
		err = w.QueryRowContext(ctx, sqliteCountOpen).Scan(&open)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("store: sqlite %s: %w (run `felix migrate` first?)", path, err)
	}
	s.open.Store(open)
	s.writes = newGroup(s.commitGroup, sqliteRolledBack, o.Observer)
	s.writes.gather = s.gatherTarget
	return s, nil
}

// sqliteGatherFrom is how many open calls make the writer wait for more
// writes before a commit.
const sqliteGatherFrom = 8

// gatherTarget is how many queued writes the next commit waits for (at
// most maxGather): none while fewer than sqliteGatherFrom calls are open,
// so that a quiet gateway commits each write at once; under load, as many
// as there are open calls, each of which ends with a write soon. At c=64
// this doubles the writes per commit, and the commits' fixed work (BEGIN
// and COMMIT, the WAL frames of the pages every group touches, the fsync)
// is shared by twice as many calls (docs/performance.md, "Gathering
// writes").
func (s *SQLite) gatherTarget() int {
	if n := int(s.open.Load()); n >= sqliteGatherFrom {
		return n
	}
	return 0
}

// Close stops the writer and closes both pools.
func (s *SQLite) Close() error {
	if s.writes != nil {
		s.writes.close()
	}
	s.closeTx()
	return errors.Join(s.w.Close(), s.r.Close())
}

// Ping checks that the file can be read.
func (s *SQLite) Ping(ctx context.Context) error { return s.r.PingContext(ctx) }

func micros(t time.Time) int64 { return t.UnixMicro() }

// Reserve admits a call: the conditional update of the key and the insert
// of the open call commit together or not at all.
func (s *SQLite) Reserve(ctx context.Context, r quota.ReserveRequest) (quota.Admission, error) {
	res, err := s.writes.do(ctx, callWrite{kind: reserveWrite, reserve: r})
	if err != nil {
		return quota.Admission{}, wrap("reserve", err)
	}
	return admission(res, func() (quota.Key, error) { return s.KeyByHash(ctx, r.KeyHash) })
}

// Settle charges an open call, its key and its day in one transaction.
func (s *SQLite) Settle(ctx context.Context, o quota.Outcome) error {
	res, err := s.writes.do(ctx, callWrite{kind: settleWrite, outcome: o})
	if err != nil || res.changed {
		return wrap("settle", err)
	}
	var state string
	err = s.r.QueryRowContext(ctx, `SELECT state FROM calls WHERE id = ?`, o.CallID).Scan(&state)
	return settled(o.CallID, state, err)
}

// Release frees an open call without charging it.
func (s *SQLite) Release(ctx context.Context, o quota.Outcome) error {
	_, err := s.writes.do(ctx, callWrite{kind: releaseWrite, outcome: o})
	return wrap("release", err)
}

// ReleaseExpired releases open calls past their deadline.
func (s *SQLite) ReleaseExpired(ctx context.Context, now time.Time) (int, error) {
	res, err := s.writes.do(ctx, callWrite{kind: sweepWrite, sweep: sweep{now: now}})
	return res.released, wrap("release expired", err)
}

// ReleaseOwner releases open calls of owner started before now.
func (s *SQLite) ReleaseOwner(ctx context.Context, owner string, now time.Time) (int, error) {
	res, err := s.writes.do(ctx, callWrite{kind: sweepWrite, sweep: sweep{owner: owner, now: now}})
	return res.released, wrap("release owner", err)
}

// SiteStats returns the total of all days and the days from since on,
// read in one statement so that they agree.
func (s *SQLite) SiteStats(ctx context.Context, since string) (quota.SiteStats, error) {
	rows, err := s.r.QueryContext(ctx, siteStatsQuery(`?1`, `d.day`), since)
	if err != nil {
		return quota.SiteStats{}, wrap("site stats", err)
	}
	defer rows.Close()
	return scanSiteStats(rows)
}
