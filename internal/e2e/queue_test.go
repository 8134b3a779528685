package e2e

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/testwait"
)

// TestShutdownDrainsQueue: on SIGTERM, calls waiting for a target (one
// GPU, TARGET_MAX_IN_FLIGHT=1) are served while SHUTDOWN_TIMEOUT lasts;
// those still waiting near its end are answered 503 queue_timeout with
// Retry-After and released, never sent. Felix exits in time with no call
// open and the books right.
func TestShutdownDrainsQueue(t *testing.T) {
	eachStore(t, func(t *testing.T, kind store.Kind, databaseURL string) {
		const calls, initial = 12, 100
		const job, shutdownTimeout = 300 * time.Millisecond, 2 * time.Second
		tgt := newTarget(t, 1, always200(job))
		f := startFelix(t, felixOptions{
			DatabaseURL: databaseURL, Target: tgt.URL(), Instance: "queue-drain",
			ShutdownTimeout: shutdownTimeout, Env: []string{"TARGET_MAX_IN_FLIGHT=1"},
		})
		l := openLedger(t, databaseURL)
		b := createKey(t, newClient(t), f.URL, "queue-drain", initial)
		hc := newClient(t)
		answers := make([]answer, calls)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() { answers[i] = generate(context.Background(), hc, f.URL, b.key) })
		}
		waitQueueLength(t, hc, f, calls-1)

		termAt := time.Now()
		f.interrupt()
		code, exited := f.waitExit(shutdownTimeout + 5*time.Second)
		took := time.Since(termAt)
		wg.Wait()
		var served, turnedAway, cut int64
		for i, a := range answers {
			b.record(a)
			switch {
			case a.err == nil && a.status == http.StatusOK && a.target:
				served++
			case a.status == http.StatusServiceUnavailable && a.code == "queue_timeout" && a.retryAfter != "":
				turnedAway++
			case a.err != nil:
				cut++ // running when the time ran out
			default:
				t.Errorf("call %d: got %v, want 200, or 503 queue_timeout with Retry-After", i, a)
			}
		}
		t.Logf("%s: %d calls, 1 running and %d queued at SIGTERM; %d served, %d answered 503, %d cut; exited %v (code %d) %s after SIGTERM",
			kind, calls, calls-1, served, turnedAway, cut, exited, code, took.Round(time.Millisecond))
		switch {
		case !exited:
			t.Fatalf("felix still runs %s after SIGTERM (SHUTDOWN_TIMEOUT %s)", took, shutdownTimeout)
		case code != 0:
			t.Errorf("felix exited with code %d after SIGTERM, want 0", code)
		case took > shutdownTimeout+time.Second:
			t.Errorf("felix exited %s after SIGTERM, want about SHUTDOWN_TIMEOUT %s", took, shutdownTimeout)
		}
		// 12 jobs of 300 ms cannot all run in 2 s: some are turned away.
		if served < 1 || turnedAway < 1 || cut > 1 {
			t.Errorf("got %d served, %d answered 503 and %d cut; want some of each of the first two and at most the one running cut", served, turnedAway, cut)
		}
		if hits := tgt.hits.Load(); hits != served+cut {
			t.Errorf("the target received %d calls, want %d (the ones served or running): a turned-away call was sent", hits, served+cut)
		}
		if n := l.openCalls(t); n != 0 {
			t.Errorf("%d calls still open after felix exited", n)
		}
		checkBooks(t, l, []*book{b})
	})
}

// waitQueueLength polls GET /api/targets until n calls wait.
func waitQueueLength(t *testing.T, hc *http.Client, f *felix, n int) {
	t.Helper()
	var got struct{ Queue struct{ Length int } }
	if !testwait.For(10*time.Second, func() bool {
		status, err := getJSON(hc, f.URL+"/api/targets", adminToken, &got)
		return err == nil && status == http.StatusOK && got.Queue.Length == n
	}) {
		t.Fatalf("%d calls queued after 10s, want %d", got.Queue.Length, n)
	}
}
