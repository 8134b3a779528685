package quota_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"

	"github.com/felix-gateway/felix/internal/testwait"
)

// newService returns a Service on a fresh store of db, with its options
// set by configure.
func newService(t *testing.T, db string, configure func(*quota.Options)) (*quota.Service, store.Store) {
	t.Helper()
	s := storetest.Open(t, db)
	o := quota.Options{Ledger: s, Keys: s, Usage: s, Owner: "test"}
	if configure != nil {
		configure(&o)
	}
	return quota.NewService(o), s
}

func keyState(t *testing.T, svc *quota.Service, key string) quota.Key {
	t.Helper()
	k, err := svc.Key(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestCallersLeave: callers that give up while their reservations are
// queued or being committed leave nothing held: each reservation is
// either never applied or released at once, without waiting for the hold.
func TestCallersLeave(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		svc, _ := newService(t, db, nil)
		_, key, err := svc.CreateKey(context.Background(), quota.KeySpec{Remaining: 1000})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		const callers, cancelAfter = 300, 40
		var admitted atomic.Int64
		var kept []*quota.Reservation
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				r, err := svc.Reserve(ctx, quota.CallRequest{Key: key, RequestID: "leaving"})
				switch {
				case err == nil:
					mu.Lock()
					kept = append(kept, r)
					mu.Unlock()
					if admitted.Add(1) == cancelAfter {
						cancel() // the rest of the callers leave now
					}
				case !errors.Is(err, context.Canceled):
					t.Errorf("Reserve: got %v, want success or context.Canceled", err)
				}
			})
		}
		wg.Wait()
		cancel()
		if len(kept) == callers {
			t.Fatalf("every caller was admitted before any left: the test did not test")
		}
		for _, r := range kept {
			if err := r.Release(context.Background(), 500); err != nil {
				t.Fatal(err)
			}
		}
		if k := keyState(t, svc, key); k.ReservedCalls != 0 || k.RemainingCalls != 1000 {
			t.Errorf("after %d callers kept and %d left: reserved %d, remaining %d; want 0 and 1000 without waiting for recovery",
				len(kept), callers-len(kept), k.ReservedCalls, k.RemainingCalls)
		}
	})
}

// TestLockedAcrossStoreTimeout: another connection holds the write lock
// longer than the store timeout and the calls' hold, as a backup can.
// Reservations meanwhile fail and leave nothing behind once the lock
// lifts; settles are retried until the hold runs out and then give up,
// and a call whose settle gave up (its answer withheld) is never charged.
func TestLockedAcrossStoreTimeout(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		const hold = 1500 * time.Millisecond
		svc, _ := newService(t, db, func(o *quota.Options) {
			o.StoreTimeout = 200 * time.Millisecond
			o.Hold = hold
		})
		ctx := context.Background()
		_, key, err := svc.CreateKey(ctx, quota.KeySpec{Remaining: 100})
		if err != nil {
			t.Fatal(err)
		}
		var inFlight []*quota.Reservation
		for range 4 {
			r, err := svc.Reserve(ctx, quota.CallRequest{Key: key, RequestID: "before-lock"})
			if err != nil {
				t.Fatal(err)
			}
			inFlight = append(inFlight, r)
		}

		unlock := storetest.LockWrites(t, db)
		var wg sync.WaitGroup
		settleErrs := make([]error, len(inFlight))
		for i, r := range inFlight {
			wg.Go(func() { settleErrs[i] = r.Settle(ctx, 200) })
		}
		reserveErrs := make([]error, 10)
		for i := range reserveErrs {
			wg.Go(func() { _, reserveErrs[i] = svc.Reserve(ctx, quota.CallRequest{Key: key, RequestID: "during-lock"}) })
		}
		wg.Wait() // the settles give up when the hold runs out
		unlock()

		for i, err := range reserveErrs {
			if !errors.Is(err, quota.ErrUnavailable) {
				t.Errorf("reserve %d during the lock: got %v, want ErrUnavailable", i, err)
			}
		}
		for i, err := range settleErrs {
			if !errors.Is(err, quota.ErrUnavailable) {
				t.Errorf("settle %d during the lock: got %v, want ErrUnavailable (withheld)", i, err)
			}
		}
		// Nothing of what failed was applied when the lock lifted: only
		// the 4 calls from before are counted and held.
		if k := keyState(t, svc, key); k.TotalCalls != 4 || k.ReservedCalls != 4 || k.SuccessfulCalls != 0 {
			t.Errorf("after the lock: total %d, reserved %d, successful %d; want 4, 4, 0", k.TotalCalls, k.ReservedCalls, k.SuccessfulCalls)
		}
		// Recovery releases the withheld calls once their hold is over:
		// never charged.
		testwait.Until(t, 10*time.Second, "the withheld calls to be released after their hold", func() bool {
			if _, err := svc.ReleaseExpired(ctx); err != nil {
				t.Fatal(err)
			}
			return keyState(t, svc, key).ReservedCalls == 0
		})
		if k := keyState(t, svc, key); k.SuccessfulCalls != 0 || k.RemainingCalls != 100 {
			t.Errorf("after recovery: successful %d, remaining %d; want 0 and 100", k.SuccessfulCalls, k.RemainingCalls)
		}
	})
}
