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

// TestGracefulShutdown is the SPEC's graceful shutdown: on SIGTERM felix
// stops accepting, lets the calls in flight finish, settles them and exits
// 0 within SHUTDOWN_TIMEOUT.
func TestGracefulShutdown(t *testing.T) {
	eachStore(t, func(t *testing.T, kind store.Kind, databaseURL string) {
		const inFlight, initial = 20, 100
		const shutdownTimeout = 8 * time.Second
		tgt := newTarget(t, 1, always200(time.Second))
		f := startFelix(t, felixOptions{
			DatabaseURL: databaseURL, Target: tgt.URL(), Instance: "graceful",
			TargetTimeout: 5 * time.Second, ShutdownTimeout: shutdownTimeout,
		})
		l := openLedger(t, databaseURL)
		b := createKey(t, newClient(t), f.URL, "graceful", initial)

		hc := newClient(t)
		answers, wg := sendInFlight(t, hc, f, tgt, b, inFlight)
		termAt := time.Now()
		f.interrupt()

		// A new request while draining is refused: felix closes its
		// listener before it logs that it is shutting down.
		if err := f.waitLog("shutting down: draining in-flight requests", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		late := generate(context.Background(), newClient(t), f.URL, b.key)
		b.record(late)
		if !late.refused() {
			t.Errorf("request sent while draining: got %v, want connection refused", late)
		}

		wg.Wait()
		code, exited := f.waitExit(shutdownTimeout + 2*time.Second)
		took := time.Since(termAt)
		for i, a := range answers {
			b.record(a)
			if a.status != http.StatusOK || !a.target || a.err != nil {
				t.Errorf("request %d in flight at SIGTERM: got %v, want the target's 200", i, a)
			}
		}
		t.Logf("%s: %d requests in flight at SIGTERM, %d answered 200; exited %v (code %d) %s after SIGTERM; target saw %d",
			kind, inFlight, b.seen200.Load(), exited, code, took.Round(time.Millisecond), tgt.hits.Load())
		switch {
		case !exited:
			t.Fatalf("felix still runs %s after SIGTERM (SHUTDOWN_TIMEOUT %s)", took, shutdownTimeout)
		case code != 0:
			t.Errorf("felix exited with code %d after SIGTERM, want 0", code)
		case took > shutdownTimeout:
			t.Errorf("felix exited %s after SIGTERM, want within SHUTDOWN_TIMEOUT %s", took, shutdownTimeout)
		}
		if n := l.openCalls(t); n != 0 {
			t.Errorf("%d calls still open after a graceful shutdown", n)
		}
		if k := l.keys(t)[b.id]; k == nil || k.successful != inFlight || k.remaining != initial-inFlight {
			t.Errorf("key after shutdown: %+v, want successful %d, remaining %d", k, inFlight, initial-inFlight)
		}
		if hits := tgt.hits.Load(); hits != inFlight {
			t.Errorf("the target received %d requests, want %d", hits, inFlight)
		}
		checkBooks(t, l, []*book{b})
	})
}

// TestShutdownTimeout: calls still in flight when SHUTDOWN_TIMEOUT ends
// are cut off; they must be released (not charged) before felix exits,
// not left open for recovery.
func TestShutdownTimeout(t *testing.T) {
	eachStore(t, func(t *testing.T, kind store.Kind, databaseURL string) {
		const inFlight, initial = 5, 100
		const shutdownTimeout = time.Second
		tgt := newTarget(t, 1, always200(20*time.Second))
		f := startFelix(t, felixOptions{
			DatabaseURL: databaseURL, Target: tgt.URL(), Instance: "drain-timeout",
			TargetTimeout: 30 * time.Second, ShutdownTimeout: shutdownTimeout,
		})
		l := openLedger(t, databaseURL)
		b := createKey(t, newClient(t), f.URL, "drain-timeout", initial)
		hc := newClient(t)
		answers, wg := sendInFlight(t, hc, f, tgt, b, inFlight)
		termAt := time.Now()
		f.interrupt()
		code, exited := f.waitExit(shutdownTimeout + 5*time.Second)
		took := time.Since(termAt)
		wg.Wait()
		for _, a := range answers {
			b.record(a)
		}
		open := l.openCalls(t)
		t.Logf("%s: %d calls in flight beyond SHUTDOWN_TIMEOUT %s: exited %v (code %d) %s after SIGTERM; clients: %s; open calls after exit: %d",
			kind, inFlight, shutdownTimeout, exited, code, took.Round(time.Millisecond), b, open)
		if !exited {
			t.Fatalf("felix still runs %s after SIGTERM with SHUTDOWN_TIMEOUT %s", took, shutdownTimeout)
		}
		if took > shutdownTimeout+2*time.Second {
			t.Errorf("felix exited %s after SIGTERM, want about SHUTDOWN_TIMEOUT %s", took, shutdownTimeout)
		}
		if k := l.keys(t)[b.id]; k == nil || k.successful != 0 {
			t.Errorf("key after shutdown: %+v, want successful 0", k)
		}
		if open != 0 {
			t.Errorf("%d calls cut off at the shutdown timeout are still open after felix exited: they must be released before exit", open)
		}

	})
}

// sendInFlight starts n generate calls for b and returns once all of them
// have reached the target; wg ends when their answers are in.
func sendInFlight(t *testing.T, hc *http.Client, f *felix, tgt *fakeTarget, b *book, n int) ([]answer, *sync.WaitGroup) {
	t.Helper()
	answers := make([]answer, n)
	wg := &sync.WaitGroup{}
	for i := range answers {
		wg.Go(func() { answers[i] = generate(context.Background(), hc, f.URL, b.key) })
	}
	if !testwait.For(10*time.Second, func() bool { return tgt.hits.Load() >= int64(n) }) {
		t.Fatalf("only %d of %d requests reached the target within 10s", tgt.hits.Load(), n)
	}
	return answers, wg
}
