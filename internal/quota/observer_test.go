package quota_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// ledgerLog is a quota.Observer that counts what it is told.
type ledgerLog struct {
	mu                                                     sync.Mutex
	opened, closed, settleFailed, releaseFailed, recovered int
}

func (l *ledgerLog) add(p *int, n int) { l.mu.Lock(); *p += n; l.mu.Unlock() }
func (l *ledgerLog) CallOpened()       { l.add(&l.opened, 1) }
func (l *ledgerLog) CallClosed()       { l.add(&l.closed, 1) }
func (l *ledgerLog) SettleFailed()     { l.add(&l.settleFailed, 1) }
func (l *ledgerLog) ReleaseFailed()    { l.add(&l.releaseFailed, 1) }
func (l *ledgerLog) Recovered(n int)   { l.add(&l.recovered, n) }

// TestObserver: the ledger tells its observer of every call opened and
// closed, of a settle that failed (the call was recovered meanwhile) and
// of the calls recovery released.
func TestObserver(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		log := &ledgerLog{}
		var mu sync.Mutex
		now := time.Now()
		const hold = time.Minute
		svc, _ := newService(t, db, func(o *quota.Options) {
			o.Observer = log
			o.Hold = hold
			o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		})
		ctx := context.Background()
		_, key, err := svc.CreateKey(ctx, quota.KeySpec{Remaining: 10})
		if err != nil {
			t.Fatal(err)
		}
		var calls []*quota.Reservation
		for range 3 {
			r, err := svc.Reserve(ctx, quota.CallRequest{Key: key, RequestID: "observed"})
			if err != nil {
				t.Fatal(err)
			}
			calls = append(calls, r)
		}
		if err := calls[0].Settle(ctx, 200); err != nil {
			t.Fatal(err)
		}
		if err := calls[1].Release(ctx, 500); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		now = now.Add(hold + time.Second)
		mu.Unlock()
		if n, err := svc.ReleaseExpired(ctx); n != 1 || err != nil {
			t.Fatalf("ReleaseExpired: got %d, %v; want 1, nil", n, err)
		}
		if err := calls[2].Settle(ctx, 200); !errors.Is(err, quota.ErrCallReleased) {
			t.Fatalf("settle after recovery: got %v, want ErrCallReleased", err)
		}
		got := [5]int{log.opened, log.closed, log.settleFailed, log.releaseFailed, log.recovered}
		if want := [5]int{3, 3, 1, 0, 1}; got != want {
			t.Errorf("observed (opened, closed, settle failed, release failed, recovered) %v, want %v", got, want)
		}
	})
}
