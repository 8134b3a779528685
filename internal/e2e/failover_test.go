package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/testwait"
)

// failoverRounds is the fault schedule of TestPostgresFailover: a crashed
// primary (pg_ctl stop -m immediate) twice, then a primary fenced with
// default_transaction_read_only while it still runs, the way an operator
// takes writes away from a primary before promoting its standby.
var failoverRounds = []string{"crash", "crash", "fence"}

// TestPostgresFailover runs felix on a multi-host DATABASE_URL with
// target_session_attrs=read-write in front of a primary and a synchronous
// standby, under load on a few keys, and takes the primary away in each
// round of failoverRounds: the standby is promoted, the old primary is
// rebuilt as the new primary's synchronous standby before the next round,
// and the roles swap.
// Felix must find the writable server again by itself (the same process
// serves 200s after each promotion), say store_read_only while the only
// servers are read-only, answer no 5xx but 503, deliver every answer the
// target gave (SPEC §4.7: a settle that fails during the switch is retried
// for as long as the call's hold allows), charge exactly the 200s its
// clients received, leave no call open after the hold, and keep the books.
func TestPostgresFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds PostgreSQL servers and fails them over under load; skipped in -short mode")
	}
	pg := newPGServers(t)
	seed := testSeed(t)
	primary, standby := pg.node("a"), pg.node("b")
	pg.initPrimary(primary)
	pg.startStandby(standby, primary)
	pg.makeSync(primary)

	databaseURL := fmt.Sprintf("postgres://postgres@%s,%s/postgres?sslmode=disable&target_session_attrs=read-write", primary.addr(), standby.addr())
	tgt := newTarget(t, seed, func(r *rand.Rand) (time.Duration, int) {
		return time.Duration(r.IntN(21)) * time.Millisecond, http.StatusOK
	})
	// A hold of 11 s (TARGET_TIMEOUT + RESERVATION_GRACE − 1 s): a settle
	// is retried while an attempt (the 3 s store timeout) still fits in
	// it, which leaves a call about 8 s to outlast a switch of a second or
	// two. (The defaults give it about two minutes.)
	f := startFelix(t, felixOptions{
		DatabaseURL: databaseURL, Target: tgt.URL(), Instance: "failover",
		TargetTimeout: 10 * time.Second, ReservationGrace: 2 * time.Second,
	})
	const hold = 11 * time.Second
	pid := f.cmd.Process.Pid
	admin := newClient(t)
	books := make([]*book, 3)
	for i := range books {
		books[i] = createKey(t, admin, f.URL, fmt.Sprintf("failover-%d", i), 1_000_000)
	}

	// Load: clients spread over the keys for the whole test, bounded in
	// count and time.
	var (
		ok200    atomic.Int64 // 200s received, all keys
		statusMu sync.Mutex
		statuses = map[string]int{} // every answer other than 200, by status and code
	)
	ctx, stopLoad := context.WithTimeout(context.Background(), 90*time.Second)
	defer stopLoad()
	hc := newClient(t)
	var wg sync.WaitGroup
	for i := range 8 {
		b := books[i%len(books)]
		wg.Go(func() {
			for range 20_000 {
				if ctx.Err() != nil {
					return
				}
				a := generate(context.Background(), hc, f.URL, b.key)
				b.record(a)
				if a.status == http.StatusOK && a.err == nil {
					ok200.Add(1)
					continue
				}
				statusMu.Lock()
				statuses[fmt.Sprintf("%d %s", a.status, a.code)]++
				statusMu.Unlock()
				// No busy loop while the database switches: after a
				// failure a client waits until felix can write again.
				testwait.For(time.Minute, func() bool {
					status, _ := readyz(f)
					return status == http.StatusOK || ctx.Err() != nil
				})
			}
		})
	}
	// progress waits until the clients have received n more 200s, for at
	// most 20 s, and returns when the first of them arrived.
	progress := func(n int64, what string) time.Time {
		t.Helper()
		base := ok200.Load()
		var first time.Time
		if !testwait.For(20*time.Second, func() bool {
			if first.IsZero() && ok200.Load() > base {
				first = time.Now()
			}
			return ok200.Load() >= base+n
		}) {
			stopLoad()
			t.Fatalf("%s: %d answers 200 in 20s, want %d: felix does not recover by itself", what, ok200.Load()-base, n)
		}
		if first.IsZero() {
			first = time.Now()
		}
		return first
	}
	withheld := func() (n int64) {
		for _, b := range books {
			n += b.settleFail.Load()
		}
		return n
	}

	progress(100, "before the first round")
	for round, kind := range failoverRounds {
		name := fmt.Sprintf("round %d (%s)", round+1, kind)
		withheldBefore := withheld()
		faultAt := time.Now()
		switch kind {
		case "crash":
			pg.stopImmediate(primary)
			// The standby is promoted once felix has found no writable
			// server: the switch is then surely a gap felix lived through.
			waitReadyz(t, f, http.StatusServiceUnavailable, "", name+", primary stopped, standby not yet promoted")
		case "fence":
			pg.must(pg.exec(primary, `ALTER SYSTEM SET default_transaction_read_only = on`, `SELECT pg_reload_conf()`))
			waitReadyz(t, f, http.StatusServiceUnavailable, "store_read_only", name+", primary fenced, standby not yet promoted")
		}
		promoteAt := time.Now()
		pg.promote(standby)
		tally(store.PostgresKind, func(r *tallyRow) { r.failovers++ })
		first := progress(50, name+", after the promotion")
		t.Logf("%s: primary %s lost; %s promoted %s later; 200 again %s after the promotion; answers withheld meanwhile: %d",
			name, primary.addr(), standby.addr(), promoteAt.Sub(faultAt).Round(time.Millisecond),
			first.Sub(promoteAt).Round(time.Millisecond), withheld()-withheldBefore)
		if kind == "fence" {
			pg.stopImmediate(primary)
		}
		if round == len(failoverRounds)-1 {
			break
		}
		// The old primary comes back as the new one's synchronous standby,
		// on the same port, so that the URL lists both again.
		pg.startStandby(primary, standby)
		pg.makeSync(standby)
		primary, standby = standby, primary
	}
	progress(50, "after the last round")
	stopLoad()
	wg.Wait()

	if f.cmd.Process.Pid != pid || !f.running() {
		t.Fatalf("felix process %d is gone: it must recover without a restart", pid)
	}
	waitReadyz(t, f, http.StatusOK, "", "after the last round")
	l := openLedger(t, databaseURL)
	// Calls whose release (or settle) failed in a switch stay open until
	// their hold ends; then any instance releases them.
	wait := l.waitNoOpenCalls(t, hold+15*time.Second)

	statusMu.Lock()
	var other []string
	for s, n := range statuses {
		other = append(other, fmt.Sprintf("%s ×%d", s, n))
		if strings.HasPrefix(s, "5") && !strings.HasPrefix(s, "503 ") {
			t.Errorf("clients got %d answers %s: no 5xx but 503 may be answered during a failover", n, s)
		}
	}
	statusMu.Unlock()
	sort.Strings(other)
	t.Logf("%d rounds: %d answers 200, others: %s; open calls resolved %s after the load stopped",
		len(failoverRounds), ok200.Load(), strings.Join(other, ", "), wait.Round(time.Millisecond))

	rows := l.keys(t)
	for _, b := range books {
		k := rows[b.id]
		if k == nil {
			continue // checkBooks reports it
		}
		if seen := b.seen200.Load(); k.successful != seen {
			t.Errorf("key %s: successfulCalls %d, but its clients received %d answers 200 (want equal: every charged call delivered, every delivered call charged)",
				b.name, k.successful, seen)
		}
		if n := b.settleFail.Load(); n > 0 {
			t.Errorf("key %s: %d answers the target gave were withheld (503 after the target's 200): a settle that fails during the switch must be retried for as long as the call's hold allows", b.name, n)
		}
		if n := b.lost.Load(); n > 0 {
			t.Errorf("key %s: %d requests got no answer (transport error)", b.name, n)
		}
	}
	checkBooks(t, l, books)
	checkSiteStats(t, admin, f.URL, l)
}

// waitReadyz polls f's /readyz until it answers status (and code, if not
// empty), for at most 15 s.
func waitReadyz(t *testing.T, f *felix, status int, code, when string) {
	t.Helper()
	var got int
	var gotCode string
	if testwait.For(15*time.Second, func() bool {
		got, gotCode = readyz(f)
		return got == status && (code == "" || gotCode == code)
	}) {
		return
	}
	t.Fatalf("/readyz %s: got %d %q for 15s, want %d %q", when, got, gotCode, status, code)
}
