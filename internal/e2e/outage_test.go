package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/testwait"
)

// TestStoreOutage cuts felix off its PostgreSQL under load: felix must say
// so (/readyz and generate answer 503 store_unavailable), forward nothing
// while it cannot record reservations, and recover by itself once the
// database is back, with balanced books.
func TestStoreOutage(t *testing.T) {
	seed := testSeed(t)
	databaseURL, viaProxy, proxy := proxiedDatabase(t)

	tgt := newTarget(t, seed, func(r *rand.Rand) (time.Duration, int) {
		return time.Duration(r.IntN(31)) * time.Millisecond, http.StatusOK
	})
	// A 2s hold: calls whose settle fails during the outage are released soon.
	f := startFelix(t, felixOptions{
		DatabaseURL: viaProxy, Target: tgt.URL(), Instance: "outage",
		TargetTimeout: time.Second, ReservationGrace: time.Second,
	})
	pid := f.cmd.Process.Pid
	l := openLedger(t, databaseURL) // the test reads the database directly
	admin := newClient(t)
	b := createKey(t, admin, f.URL, "outage", 100_000)

	// Background load through the whole test. The answers to requests
	// sent and answered while the store was cut are kept for the checks.
	var (
		cut          atomic.Bool // set after the cut, cleared before the restore
		cutMu        sync.Mutex
		whileCut     []answer
		loadWhileCut atomic.Int64
		probesSent   atomic.Int64 // the probes sent during the outage, below
	)
	keepIfCut := func(a answer, sentWhileCut bool) bool {
		if !sentWhileCut || !cut.Load() {
			return false
		}
		cutMu.Lock()
		whileCut = append(whileCut, a)
		cutMu.Unlock()
		return true
	}
	ctx, stopLoad := context.WithTimeout(context.Background(), 60*time.Second)
	defer stopLoad()
	hc := newClient(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5000 {
				if ctx.Err() != nil {
					return
				}
				sentWhileCut := cut.Load()
				a := generate(context.Background(), hc, f.URL, b.key)
				b.record(a)
				if keepIfCut(a, sentWhileCut) {
					loadWhileCut.Add(1)
				}
				if a.status != http.StatusOK {
					// No busy loop: during the outage a client sends one
					// request per probe, outside it it waits until felix
					// can write again.
					probed := probesSent.Load()
					testwait.For(time.Minute, func() bool {
						if ctx.Err() != nil {
							return true
						}
						if cut.Load() {
							return probesSent.Load() > probed
						}
						status, _ := readyz(f)
						return status == http.StatusOK
					})
				}
			}
		})
	}
	if err := waitUntil(15*time.Second, func() bool { return b.seen200.Load() >= 20 }); err != nil {
		t.Fatalf("load before the cut: %v (%s)", err, b)
	}
	okBefore := b.seen200.Load()

	proxy.cut()
	cut.Store(true)
	cutAt := time.Now()
	hitsAtCut := tgt.hits.Load()
	tally(store.PostgresKind, func(r *tallyRow) { r.faults++ })
	var code int
	var errCode string
	if !testwait.For(5*time.Second, func() bool {
		code, errCode = readyz(f)
		return code == http.StatusServiceUnavailable && errCode == "store_unavailable"
	}) {
		t.Fatalf("/readyz still answers %d %q 5s into the outage, want 503 store_unavailable", code, errCode)
	}
	notReadyAfter := time.Since(cutAt)
	// Probe until both the probes and the background load have sent
	// enough requests inside the outage.
	const probes = 20
	var slowest time.Duration
	for i := 0; i < probes || loadWhileCut.Load() < 5*probes; i++ {
		if i == 1000 || time.Since(cutAt) > 15*time.Second {
			t.Fatalf("the background load sent only %d requests in %d probes' time during the outage", loadWhileCut.Load(), i)
		}
		a := generate(context.Background(), hc, f.URL, b.key)
		probesSent.Add(1)
		b.record(a)
		keepIfCut(a, true)
		slowest = max(slowest, a.took)
	}
	if code, errCode := readyz(f); code != http.StatusServiceUnavailable || errCode != "store_unavailable" {
		t.Errorf("/readyz at the end of the outage: got %d %q, want 503 store_unavailable", code, errCode)
	}
	cut.Store(false)
	hitsWhileCut := tgt.hits.Load() - hitsAtCut
	outage := time.Since(cutAt)
	proxy.restore()

	// Every request sent and answered while the store was cut got 503
	// store_unavailable and never reached the target. (Calls admitted
	// just before the cut may still reach it: hitsWhileCut.)
	cutMu.Lock()
	answered := whileCut
	cutMu.Unlock()
	forwarded := 0
	for _, a := range answered {
		if a.status != http.StatusServiceUnavailable || a.code != "store_unavailable" || a.settleFailed() {
			t.Errorf("a request sent during the outage: got %v, want 503 store_unavailable, not forwarded", a)
		}
		if a.reqID == "" || tgt.received(a.reqID) {
			forwarded++
		}
	}
	if forwarded > 0 {
		t.Errorf("%d of the %d requests sent while felix could not record reservations reached the target (or had no request ID)", forwarded, len(answered))
	}

	recovered := waitRecovery(t, hc, f, b, "the database came back")
	if code, errCode := readyz(f); code != http.StatusOK {
		t.Errorf("/readyz after recovery: got %d %q, want 200", code, errCode)
	}
	// The background load recovers too, by itself.
	okAfterRestore := b.seen200.Load()
	if err := waitUntil(15*time.Second, func() bool { return b.seen200.Load() > okAfterRestore }); err != nil {
		t.Errorf("the background load got no 200 after the recovery: %v", err)
	}
	stopLoad()
	wg.Wait()
	if f.cmd.Process.Pid != pid || !f.running() {
		t.Fatalf("felix process %d is gone: it must recover without a restart", pid)
	}
	// Calls whose settle failed in the outage stay open until their deadline.
	wait := l.waitNoOpenCalls(t, 10*time.Second)
	t.Logf("outage of %s: /readyz 503 after %s, %d requests sent and answered during it, all 503 store_unavailable (slowest probe %s), target hits during the outage %d (admitted before the cut); 200 again %s after restore; open calls resolved %s later; %d × 200 before the cut, %d in all; %s",
		outage.Round(time.Millisecond), notReadyAfter.Round(time.Millisecond), len(answered), slowest.Round(time.Millisecond),
		hitsWhileCut, recovered.Round(time.Millisecond), wait.Round(time.Millisecond), okBefore, b.seen200.Load(), b)
	if n := b.lost.Load(); n != 0 {
		t.Errorf("%d requests ended in a transport error: felix must answer during an outage", n)
	}
	// A 503 after the target's 2xx withholds the answer; the call is
	// released, or charged if its settle committed but the confirmation was
	// lost in the cut (the one case Felix cannot know; see the README).
	b.mu.Lock()
	states := l.statesOf(t, b.settleIDs)
	b.mu.Unlock()
	t.Logf("calls whose 2xx answer was withheld (503): %d, by final state: %v", b.settleFail.Load(), states)
	if n := states["settled"]; n > 0 {
		var began []string
		for _, id := range b.settleIDs {
			var fin time.Time // the outcome time felix stamped before its first settle attempt
			err := l.db.QueryRow(`SELECT finished_at FROM calls WHERE state = 'settled' AND request_id = $1`, id).Scan(&fin)
			if err == nil {
				began = append(began, fmt.Sprintf("%s settle began %s before the cut", id, cutAt.Sub(fin).Round(time.Millisecond)))
			}
		}
		t.Logf("%d withheld calls were charged: their settle reached PostgreSQL and committed, its confirmation was lost in the cut: %v", n, began)
	}
	checkBooks(t, l, []*book{b})
	checkSiteStats(t, admin, f.URL, l)
}

// TestStoreStall freezes felix's PostgreSQL connections instead of
// cutting them (a network partition, a frozen server): felix must still
// answer generate with 503 store_unavailable in bounded time, as /readyz
// does, and recover by itself once the database moves again.
func TestStoreStall(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a frozen database; skipped in -short mode")
	}
	databaseURL, viaProxy, proxy := proxiedDatabase(t)
	tgt := newTarget(t, 1, always200(0))
	f := startFelix(t, felixOptions{
		DatabaseURL: viaProxy, Target: tgt.URL(), Instance: "stall",
		TargetTimeout: time.Second, ReservationGrace: time.Second,
	})
	l := openLedger(t, databaseURL)
	admin := newClient(t)
	b := createKey(t, admin, f.URL, "stall", 100)
	hc := newClient(t)
	if a := generate(context.Background(), hc, f.URL, b.key); a.status != http.StatusOK {
		t.Fatalf("before the stall: got %v, want 200", a)
	} else {
		b.record(a)
	}

	proxy.stall()
	tally(store.PostgresKind, func(r *tallyRow) { r.faults++ })
	stallAt := time.Now()
	code, errCode := readyz(f)
	readyTook := time.Since(stallAt)
	if code != http.StatusServiceUnavailable || errCode != "store_unavailable" {
		t.Errorf("/readyz during the stall: got %d %q after %s, want 503 store_unavailable", code, errCode, readyTook)
	}
	hitsBefore := tgt.hits.Load()
	const bound = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	a := generate(ctx, hc, f.URL, b.key)
	cancel()
	b.record(a)
	hits := tgt.hits.Load() - hitsBefore
	proxy.unstall()
	t.Logf("stall: /readyz %d after %s; generate: %v; target hits during the stall %d", code, readyTook.Round(time.Millisecond), a, hits)
	if hits != 0 {
		t.Errorf("the target received %d requests while felix could not record reservations", hits)
	}
	hung := a.err != nil
	if !hung && (a.status != http.StatusServiceUnavailable || a.code != "store_unavailable") {
		t.Errorf("generate during the stall: got %v, want 503 store_unavailable", a)
	}

	t.Logf("200 again %s after the stall ended", waitRecovery(t, hc, f, b, "the stall ended").Round(time.Millisecond))
	l.waitNoOpenCalls(t, 10*time.Second)
	checkBooks(t, l, []*book{b})
	if hung {
		t.Errorf("generate got no answer within %s while the store was stalled (%v), want 503 store_unavailable", bound, a.err)
	}

}

// waitRecovery sends generate calls for b until one succeeds, for at most
// 15 s after the fault (named by what) ended, and returns how long it took.
func waitRecovery(t *testing.T, hc *http.Client, f *felix, b *book, what string) time.Duration {
	t.Helper()
	start := time.Now()
	var a answer
	if !testwait.For(15*time.Second, func() bool {
		a = generate(context.Background(), hc, f.URL, b.key)
		b.record(a)
		return a.status == http.StatusOK
	}) {
		t.Fatalf("felix does not recover 15s after %s: last answer %v", what, a)
	}
	return time.Since(start)
}

// waitUntil polls cond until it holds, for at most timeout.
func waitUntil(timeout time.Duration, cond func() bool) error {
	if !testwait.For(timeout, cond) {
		return fmt.Errorf("condition not met within %s", timeout)
	}
	return nil
}

// proxiedDatabase returns a fresh PostgreSQL schema's URL, the same URL
// through a TCP proxy the test can cut or stall, and the proxy.
func proxiedDatabase(t *testing.T) (direct, viaProxy string, proxy *tcpProxy) {
	t.Helper()
	direct = storetest.URL(t, store.PostgresKind)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	proxy = startProxy(t, u.Host)
	u.Host = proxy.Addr()
	return direct, u.String(), proxy
}
