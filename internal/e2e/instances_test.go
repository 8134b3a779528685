package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestThreeInstances runs three felix processes on one PostgreSQL schema,
// started at once (their migrations take turns under the advisory lock).
func TestThreeInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("three processes under load; skipped in -short mode")
	}
	seed := testSeed(t)
	databaseURL := storetest.URL(t, store.PostgresKind)
	tgt := newTarget(t, seed, func(r *rand.Rand) (time.Duration, int) {
		return time.Duration(r.IntN(11)) * time.Millisecond, http.StatusOK
	})
	l := openLedger(t, databaseURL)
	optsOf := func(i int) felixOptions {
		return felixOptions{
			DatabaseURL: databaseURL, Target: tgt.URL(), Instance: fmt.Sprintf("node-%d", i),
			TargetTimeout: 5 * time.Second, ShutdownTimeout: 10 * time.Second,
		}
	}
	nodes := make([]*felix, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { nodes[i], errs[i] = launchFelix(t, optsOf(i)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start three instances at once: %v", err)
	}
	admin := newClient(t)
	var books []*book
	parent := t // owns the processes, also those restarted in a subtest

	// Invariant 1 across processes: a key with R calls hit by N > R
	// concurrent requests spread over the three gets exactly R successes.
	t.Run("no overspend", func(t *testing.T) {
		const R, N, workers = 300, 500, 100
		b := createKey(t, admin, nodes[0].URL, "shared-300", R)
		books = append(books, b)
		hitsBefore := tgt.hits.Load()
		hc := newClient(t)
		var next atomic.Int64
		perNode := make([]atomic.Int64, len(nodes))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				<-start
				for {
					i := next.Add(1) - 1
					if i >= N {
						return
					}
					n := int(i % int64(len(nodes)))
					a := generate(context.Background(), hc, nodes[n].URL, b.key)
					b.record(a)
					if a.status == http.StatusOK {
						perNode[n].Add(1)
					}
				}
			})
		}
		began := time.Now()
		close(start)
		wg.Wait()
		hits := tgt.hits.Load() - hitsBefore
		t.Logf("%d requests over 3 instances in %s: %d × 200 (per instance %d/%d/%d), %d × 429, target saw %d; %s",
			N, time.Since(began).Round(time.Millisecond), b.seen200.Load(), perNode[0].Load(), perNode[1].Load(), perNode[2].Load(),
			b.seen429.Load(), hits, b)
		if got := b.seen200.Load(); got != R {
			t.Errorf("got %d answers 200, want exactly R = %d", got, R)
		}
		if got := b.seen429.Load(); got != N-R {
			t.Errorf("got %d answers 429 quota_exhausted, want exactly N − R = %d", got, N-R)
		}
		if hits != R {
			t.Errorf("the target received %d requests, want exactly %d", hits, R)
		}
		if rows := l.keys(t); rows[b.id] == nil || rows[b.id].remaining != 0 {
			t.Errorf("remaining calls: got %+v, want 0", rows[b.id])
		}
		checkBooks(t, l, books)
	})

	// A rolling restart under load: one instance stops with SIGTERM and
	// starts again on the same port while clients keep going. Requests it
	// refuses are retried elsewhere; no request that was accepted may fail.
	t.Run("rolling restart", func(t *testing.T) {
		const workers = 12
		b := createKey(t, admin, nodes[0].URL, "rolling", 1_000_000)
		books = append(books, b)
		hitsBefore := tgt.hits.Load()
		hc := newClient(t)
		const victim = 1
		var (
			down      atomic.Bool // the victim is stopping or stopped
			next      atomic.Int64
			notSent   atomic.Int64 // refused, retried elsewhere
			cut       atomic.Int64 // closed by the stopping victim before any answer, retried
			bad       atomic.Int64
			badMu     sync.Mutex
			badS      []string
			afterBack atomic.Int64 // 200s from the restarted victim
			restarted atomic.Bool
		)
		fail := func(format string, args ...any) {
			bad.Add(1)
			badMu.Lock()
			if len(badS) < 5 {
				badS = append(badS, fmt.Sprintf(format, args...))
			}
			badMu.Unlock()
		}
		// The load runs until the restarted instance has served, within
		// a bound.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// The restarted victim listens on the same address.
		urls := make([]string, len(nodes))
		for i, f := range nodes {
			urls[i] = f.URL
		}
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range 5000 {
					if ctx.Err() != nil {
						return
					}
					n := int(next.Add(1) % int64(len(nodes)))
					for attempt := 0; ; attempt++ {
						// Not ctx: a request in flight at the end must finish.
						a := generate(context.Background(), hc, urls[n], b.key)
						wasDown := down.Load()
						switch {
						case a.refused() && n == victim && wasDown:
							notSent.Add(1)
						case a.err != nil && n == victim && wasDown && closedBeforeAnswer(a.err):
							cut.Add(1)
						case a.err != nil:
							fail("instance %d: %v", n, a)
						case a.status == http.StatusOK && a.target:
							b.seen200.Add(1)
							if n == victim && restarted.Load() {
								afterBack.Add(1)
							}
						default:
							fail("instance %d: %v", n, a)
						}
						if a.err == nil || attempt == 5 {
							break
						}
						n = (n + 1) % len(nodes) // retry on the next instance
					}
				}
			})
		}
		// Load on all three (round robin) before the victim stops ...
		if err := waitUntil(15*time.Second, func() bool { return b.seen200.Load() >= 60 }); err != nil {
			t.Fatalf("load before the restart: %v (%d × 200)", err, b.seen200.Load())
		}
		down.Store(true)
		stopAt := time.Now()
		nodes[victim].interrupt()
		code, exited := nodes[victim].waitExit(15 * time.Second)
		stopped := time.Since(stopAt)
		if !exited || code != 0 {
			t.Errorf("instance %d after SIGTERM: exited %v with code %d after %s, want exit 0", victim, exited, code, stopped)
		}
		nodes[victim] = nodes[victim].restart(parent, optsOf(victim))
		restarted.Store(true)
		down.Store(false)
		back := time.Since(stopAt)
		// ... and the restarted one serves its share again.
		if err := waitUntil(15*time.Second, func() bool { return afterBack.Load() >= 20 }); err != nil {
			t.Errorf("the restarted instance answered %d requests, want 20: %v", afterBack.Load(), err)
		}
		cancel()
		wg.Wait()
		hits := tgt.hits.Load() - hitsBefore
		t.Logf("rolling restart of instance %d: exited in %s, ready again %s after SIGTERM; %d × 200 (%d from the restarted instance), %d refused and retried, %d cut before any answer and retried, %d bad; target saw %d",
			victim, stopped.Round(time.Millisecond), back.Round(time.Millisecond), b.seen200.Load(), afterBack.Load(),
			notSent.Load(), cut.Load(), bad.Load(), hits)
		if n := bad.Load(); n > 0 {
			t.Errorf("%d requests failed on an open connection or got an error answer, e.g. %v", n, badS)
		}
		// Nothing was cut while being served: every call the target saw
		// reached a client, and was charged once.
		if hits != b.seen200.Load() {
			t.Errorf("the target received %d requests, but clients got %d answers 200", hits, b.seen200.Load())
		}
		rows := l.keys(t)
		if k := rows[b.id]; k == nil || k.successful != b.seen200.Load() || k.total != b.seen200.Load() {
			t.Errorf("key rolling: %+v, want successful = total = %d answers 200", k, b.seen200.Load())
		}
		checkBooks(t, l, books)
		checkSiteStats(t, admin, nodes[0].URL, l)
	})

	for i, f := range nodes {
		f.terminate()
		if code, ok := f.waitExit(15 * time.Second); !ok || code != 0 {
			t.Errorf("instance %d after SIGTERM: exited %v with code %d, want 0", i, ok, code)
		}
	}
}

// closedBeforeAnswer reports a connection the server closed before any
// answer: an idle keep-alive connection closed by a stopping server just as
// a request was sent on it, or a connection still in the listen backlog.
// The server never read such a request.
func closedBeforeAnswer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		// net/http's errServerClosedIdle, which it does not export.
		strings.Contains(err.Error(), "server closed idle connection")
}
