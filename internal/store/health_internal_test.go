package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/testwait"
)

// TestReadOnlyMarks: the errors of a store that refuses writes, and only
// those, are marked quota.ErrReadOnly.
func TestReadOnlyMarks(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"25006 read_only_sql_transaction", &pgconn.PgError{Code: "25006", Message: "cannot execute UPDATE in a read-only transaction"}, true},
		{"25006 wrapped", fmt.Errorf("batch: %w", &pgconn.PgError{Code: "25006"}), true},
		{"no writable host (target_session_attrs)", fmt.Errorf("connect: %w", pgconn.ErrReadOnlyConnection), true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, false},
		{"connection lost", errors.New("unexpected EOF"), false},
		{"timeout", context.DeadlineExceeded, false},
	}
	for _, c := range cases {
		got := errors.Is(readOnly(c.err), quota.ErrReadOnly)
		if got != c.want {
			t.Errorf("%s: got read-only %v, want %v", c.name, got, c.want)
		}
		if !errors.Is(readOnly(c.err), c.err) {
			t.Errorf("%s: the cause is lost", c.name)
		}
		if got := errors.Is(wrap("reserve", c.err), quota.ErrReadOnly); got != c.want {
			t.Errorf("%s: wrap: got read-only %v, want %v", c.name, got, c.want)
		}
	}
	if readOnly(nil) != nil {
		t.Errorf("readOnly(nil) is not nil")
	}
}

// TestProbeShare: callers that come while a probe runs wait for it
// instead of starting their own, and may give up at once; a caller who
// comes after it ended gets a new probe (readiness is never stale).
func TestProbeShare(t *testing.T) {
	var p probeShare
	var probes atomic.Int64
	release := make(chan error)
	probe := func(ctx context.Context) error {
		probes.Add(1)
		select {
		case err := <-release:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { first <- p.check(ctx, probe) }()
	testwait.Until(t, 10*time.Second, "the first probe", func() bool { return probes.Load() > 0 })
	gone, cancel := context.WithCancel(ctx)
	cancel()
	for range 20 {
		if err := p.check(gone, probe); !errors.Is(err, context.Canceled) {
			t.Fatalf("caller whose context ended: got %v, want context.Canceled", err)
		}
	}
	if n := probes.Load(); n != 1 {
		t.Errorf("callers that came while a probe ran started %d probes, want none", n-1)
	}
	failed := errors.New("locked")
	release <- failed
	if err := <-first; !errors.Is(err, failed) {
		t.Errorf("caller of the probe: got %v, want its failure", err)
	}

	go func() { release <- nil }()
	if err := p.check(ctx, probe); err != nil || probes.Load() != 2 {
		t.Errorf("after the failure: got %v after %d probes, want nil from a second probe", err, probes.Load())
	}
}

// TestForFailoverHostTimeout: with several hosts and no connect_timeout,
// each host gets hostTimeout, so that one that never answers does not
// keep Felix from the next; what the URL says is kept.
func TestForFailoverHostTimeout(t *testing.T) {
	cases := []struct {
		url  string
		want time.Duration
	}{
		{"postgres://u@h1:5432/felix", 0},
		{"postgres://u@h1:5432/felix?sslmode=prefer", 0}, // TLS, then plain, to one host
		{"postgres://u@h1:5432,h2:5432/felix?target_session_attrs=read-write", hostTimeout},
		{"postgres://u@h1,h2/felix?sslmode=disable", hostTimeout},
		{"postgres://u@h1:5432,h2:5432/felix?connect_timeout=7", 7 * time.Second},
		{"postgres://u@h1:5432/felix?connect_timeout=7", 7 * time.Second},
	}
	for _, c := range cases {
		cfg, err := pgxConfig(c.url)
		if err != nil {
			t.Fatalf("%s: %v", c.url, err)
		}
		if got := cfg.ConnConfig.ConnectTimeout; got != c.want {
			t.Errorf("%s: got per-host connect timeout %s, want %s", c.url, got, c.want)
		}
		if cfg.PrepareConn == nil {
			t.Errorf("%s: no PrepareConn: connections to a read-only server would be kept", c.url)
		}
	}
}

// TestDiskRoom: a file on a disk with no room left is not writable.
// procfs always reports 0 bytes free.
func TestDiskRoom(t *testing.T) {
	if err := diskRoom(filepath.Join(t.TempDir(), "felix.db")); err != nil {
		t.Errorf("a file in the test's temporary folder: %v", err)
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		t.Skip("no procfs to stand for a full disk")
	}
	if err := diskRoom("/proc/self/felix.db"); !errors.Is(err, errDiskFull) {
		t.Errorf("a file on a disk with 0 bytes free: got %v, want errDiskFull", err)
	}
}
