package e2e

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/testwait"
)

// TestCrashRecovery is invariant 3 (nothing lost): felix is SIGKILLed at
// a random moment under concurrent load, ten times, and restarted with the
// same INSTANCE_ID, which releases its own orphaned calls at start; then
// once more restarted under another INSTANCE_ID, so that only the deadline
// rule (TARGET_TIMEOUT + RESERVATION_GRACE) releases them. After every
// recovery the books must balance and every charge must match an answer a
// client received or lost to the kill.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("kills felix eleven times per store; skipped in -short mode")
	}
	seed := testSeed(t)
	eachStore(t, func(t *testing.T, kind store.Kind, databaseURL string) {
		rng := rand.New(rand.NewPCG(seed, uint64(len(kind))))
		tgt := newTarget(t, seed, func(r *rand.Rand) (time.Duration, int) {
			status := http.StatusOK
			if r.IntN(10) == 0 {
				status = http.StatusInternalServerError
			}
			return time.Duration(r.IntN(31)) * time.Millisecond, status
		})
		opts := felixOptions{
			DatabaseURL: databaseURL, Target: tgt.URL(), Instance: "crash-a",
			TargetTimeout: 5 * time.Second, ReservationGrace: time.Second, ShutdownTimeout: 5 * time.Second,
		}
		f := startFelix(t, opts)
		l := openLedger(t, databaseURL)
		admin := newClient(t)
		books := []*book{
			createKey(t, admin, f.URL, "big", 1_000_000),
			createKey(t, admin, f.URL, "mid", 3000),
			createKey(t, admin, f.URL, "small", 60), // runs out: 429s under load
		}
		big, mid, small := books[0], books[1], books[2]

		const rounds = 10
		var kills, orphansTotal, sentTotal int64
		for round := range rounds + 1 {
			deadlineRound := round == rounds
			if deadlineRound {
				// Only 200s, so that no release of a failed call can
				// outlive the process and pass for an early release.
				tgt.setPlan(func(r *rand.Rand) (time.Duration, int) {
					return time.Duration(50+r.IntN(100)) * time.Millisecond, http.StatusOK
				})
			}
			// Between rounds the operator sometimes tops the small key up.
			if rng.IntN(3) == 0 {
				n := int64(20 + rng.IntN(40))
				change, err := setRemaining(admin, f.URL, small, n)
				if err != nil {
					t.Fatalf("round %d: set small key: %v", round, err)
				}
				t.Logf("round %d: set small key to %d (change %+d)", round, n, change)
			}
			// The moments of the round, counted in answers the load has
			// had (not in time, so that a slow machine kills as far into
			// the load as a fast one): the kill, and maybe an operator's
			// change of the mid key before it.
			killAfter := int64(20 + rng.IntN(400))
			setAfter := int64(-1)
			if rng.IntN(2) == 0 {
				setAfter = int64(1 + rng.IntN(20))
			}
			setTo := int64(100 + rng.IntN(3000))

			// The deadline rule needs calls open at the kill: in that
			// round the target holds its answers back from killAfter on,
			// and the kill waits until it holds one.
			var holder *fakeTarget
			if deadlineRound {
				holder = tgt
			}
			st := loadUntilKill(t, f, books, seed+uint64(round)*7919, killAfter, holder, func(answered func() int64) {
				if setAfter < 0 {
					return
				}
				if !testwait.For(10*time.Second, func() bool { return answered() >= setAfter }) {
					t.Errorf("round %d: the load had %d answers in 10s, want %d before the mid key's change", round, answered(), setAfter)
					return
				}
				change, err := setRemaining(admin, f.URL, mid, setTo)
				if err != nil {
					t.Errorf("round %d: set mid key during load: %v", round, err)
					return
				}
				t.Logf("round %d: set mid key to %d after %d answers, during load (change %+d)", round, setTo, setAfter, change)
			})
			kills++
			sentTotal += st.sent
			orphans := l.openCallIDs(t)
			orphansTotal += int64(len(orphans))

			next := opts
			if round == rounds-1 {
				// The process killed in the last round has
				// TARGET_TIMEOUT=1s and RESERVATION_GRACE=1s: its orphans
				// must be released within 2s of their start.
				next.TargetTimeout, next.ReservationGrace = time.Second, time.Second
			}
			if deadlineRound {
				next.Instance = "crash-b"
				if len(orphans) == 0 {
					t.Errorf("round %d: no call was open at the kill: the deadline rule was not exercised", round)
				}
			}
			f = f.restart(t, next)
			stillOpen := l.openCalls(t)
			l.waitNoOpenCalls(t, 10*time.Second)
			recovered := time.Since(st.killedAt)
			t.Logf("round %d: SIGKILL %s after %d answers: sent %d (200 %d, 429 %d, target 500 %d, lost %d), refused %d, open at kill %d; restarted as %s: released at start %d, open when ready %d, none open %s after the kill",
				round, opts.Instance, killAfter, st.sent, st.ok, st.quota, st.target5xx, st.lost, st.refused, len(orphans),
				next.Instance, f.releasedAtStart(), stillOpen, recovered.Round(time.Millisecond))
			fate := l.fates(t, orphans)
			t.Logf("round %d: fate of the %d calls open at the kill: %d settled by statements that outlived the process, %d released by the owner's restart, %d released at their deadline",
				round, len(orphans), fate.settled, fate.early, fate.late)
			if !deadlineRound {
				if stillOpen != 0 {
					t.Errorf("round %d: %d calls still open when the restarted %s was ready: its own orphans must be released at start", round, stillOpen, next.Instance)
				}
				if fate.late != 0 {
					t.Errorf("round %d: %d orphans waited for their deadline although their owner restarted", round, fate.late)
				}
			} else {
				if n := f.releasedAtStart(); n != 0 {
					t.Errorf("round %d: %s released %d calls at start, but none were its own", round, next.Instance, n)
				}
				// Another owner's orphans wait for their deadline, then
				// the deadline rule releases them, no later than
				// TARGET_TIMEOUT + RESERVATION_GRACE after they started.
				if fate.early != 0 {
					t.Errorf("round %d: %d orphans of another instance released before their deadline", round, fate.early)
				}
				if fate.late == 0 {
					t.Errorf("round %d: no orphan was released by the deadline rule", round)
				}
				held := l.longestHeld(t, orphans)
				t.Logf("round %d: longest an orphan stayed open: %s (TARGET_TIMEOUT + RESERVATION_GRACE = 2s)", round, held.Round(time.Millisecond))
				if limit := 2*time.Second + time.Second; held > limit { // 1s of slack for a loaded machine
					t.Errorf("round %d: an orphan stayed open %s, want ≤ TARGET_TIMEOUT + RESERVATION_GRACE = 2s (+1s slack)", round, held)
				}
				if recovered > 10*time.Second {
					t.Errorf("round %d: orphans released %s after the kill, want ≤ 10s", round, recovered)
				}
			}
			opts = next
			checkBooks(t, l, books)
			checkSiteStats(t, admin, f.URL, l)
			if t.Failed() {
				t.Fatalf("round %d: books do not balance after recovery", round)
			}
		}
		t.Logf("%s: %d kills, %d requests sent, %d calls open at the kills, all recovered", kind, kills, sentTotal, orphansTotal)
		rows := l.keys(t)
		for _, b := range []*book{big, mid, small} {
			t.Logf("totals %s; charged without the client receiving the answer: %d (bound: %d answers lost to kills)",
				b, rows[b.id].successful-b.seen200.Load(), b.lost.Load())
			if n := b.storeDown.Load() + b.settleFail.Load(); n > 0 {
				t.Errorf("key %s: %d answers 503 store_unavailable although the store never failed", b.name, n)
			}
		}
		f.terminate()
		if code, ok := f.waitExit(10 * time.Second); !ok || code != 0 {
			t.Errorf("after SIGTERM: exited %v with code %d, want exit 0 within 10s", ok, code)
		}
	})
}

// loadStats are the figures of one load phase.
type loadStats struct {
	sent, ok, quota, target5xx, lost, refused int64
	killedAt                                  time.Time
}

// loadUntilKill drives 16 workers against f, SIGKILLs f once they have
// had killAfter answers (and during has returned, so that an admin change
// made during the load has its answer; during gets the answers so far),
// and returns once every worker has stopped. With a
// holder, the kill also waits until that target holds an answer back, so
// that at least one call is surely open when felix dies.
func loadUntilKill(t *testing.T, f *felix, books []*book, seed uint64, killAfter int64, holder *fakeTarget, during func(answered func() int64)) loadStats {
	t.Helper()
	const workers = 16
	const maxPerWorker = 2000
	hc := newClient(t)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stopped atomic.Bool
	var sent, ok, quota, target5xx, lost, refused atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for range maxPerWorker {
				if stopped.Load() || ctx.Err() != nil {
					return
				}
				// Weighted keys: big 60%, mid 25%, small 15%.
				var b *book
				switch p := rng.IntN(100); {
				case p < 60:
					b = books[0]
				case p < 85:
					b = books[1]
				default:
					b = books[2]
				}
				a := generate(ctx, hc, f.URL, b.key)
				b.record(a)
				switch {
				case a.refused():
					refused.Add(1)
					return // the process is gone
				case a.err != nil:
					lost.Add(1)
				case a.status == http.StatusOK:
					ok.Add(1)
				case a.status == http.StatusTooManyRequests:
					quota.Add(1)
				case a.target:
					target5xx.Add(1)
				}
				sent.Add(1)
			}
		})
	}
	duringDone := make(chan struct{})
	go func() { during(sent.Load); close(duringDone) }()
	if !testwait.For(8*time.Second, func() bool { return sent.Load() >= killAfter }) {
		t.Fatalf("the load had %d answers in 8s, want %d before the kill", sent.Load(), killAfter)
	}
	<-duringDone
	if holder != nil {
		holder.hold()
		defer holder.release()
		if err := holder.waitHeld(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	f.kill()
	killedAt := time.Now()
	stopped.Store(true)
	wg.Wait()
	return loadStats{sent: sent.Load(), ok: ok.Load(), quota: quota.Load(), target5xx: target5xx.Load(), lost: lost.Load(), refused: refused.Load(), killedAt: killedAt}
}
