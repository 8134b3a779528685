package store_test

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
)

func tryReserve(t *testing.T, s store.Store, r quota.ReserveRequest) quota.Admission {
	t.Helper()
	a, err := s.Reserve(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRateLimit: the token bucket lives in the key row and the reserving
// write: a burst of up to N, then one call every period/N; a refused call
// takes no slot and moves no counter.
func TestRateLimit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		k := newKey(t, s, "k", 100)
		change(t, s, k.ID, quota.KeyChange{RateLimit: &quota.RateLimit{Requests: 3, Per: "second"}})
		at := func(d time.Duration) quota.ReserveRequest { return call("k", "a", t0.Add(d)) }
		for i := range 3 {
			if !tryReserve(t, s, at(0)).Admitted() {
				t.Fatalf("call %d of the burst of 3 refused", i+1)
			}
		}
		for range 5 {
			a := tryReserve(t, s, at(100*time.Millisecond))
			if a.Admitted() || a.Key == nil || a.Key.RateLimit == nil || a.Key.RateTAT != t0.Add(time.Second).UnixMicro()-1 {
				t.Fatalf("a 4th call in the same second: %+v; want refused with the bucket's state", a)
			}
		}
		if !tryReserve(t, s, at(333334*time.Microsecond)).Admitted() {
			t.Error("a call one interval after the burst was refused")
		}
		if tryReserve(t, s, at(400*time.Millisecond)).Admitted() {
			t.Error("a second call within the next interval was admitted")
		}
		checkKey(t, s, "k", counts{total: 4, remaining: 100, reserved: 4})
	})
}

// TestConcurrencyCap: at most maxConcurrent calls of a key in flight; a
// call that ends frees its place.
func TestConcurrencyCap(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		k := newKey(t, s, "k", 100)
		change(t, s, k.ID, quota.KeyChange{MaxConcurrent: ptr[int64](2)})
		first := reserve(t, s, call("k", "a", t0))
		reserve(t, s, call("k", "a", t0))
		if a := tryReserve(t, s, call("k", "a", t0)); a.Admitted() || a.Key.InFlight != 2 {
			t.Fatalf("a 3rd call with 2 in flight: %+v; want refused, 2 in flight", a)
		}
		if err := s.Settle(ctx, ended(first, 200)); err != nil {
			t.Fatal(err)
		}
		third := reserve(t, s, call("k", "a", t0))
		if err := s.Release(ctx, ended(third, 500)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.ReleaseExpired(ctx, t0.Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("ReleaseExpired: %d, %v", n, err)
		}
		if k := getKey(t, s, "k"); k.InFlight != 0 || k.ReservedCalls != 0 {
			t.Errorf("after every call ended: in flight %d, reserved %d; want 0", k.InFlight, k.ReservedCalls)
		}
	})
}

// TestCostPerImage is invariant 1 with costs: 20 concurrent calls of 3
// images on 20 remaining admit exactly 6; a success charges its cost to
// remaining and usedUnits, 1 to successfulCalls.
func TestCostPerImage(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		k := newKey(t, s, "k", 20)
		change(t, s, k.ID, quota.KeyChange{CostPerImage: ptr(true)})
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				r := call("k", "a", t0)
				r.BatchSize = 3
				a, err := s.Reserve(ctx, r)
				if err != nil || !a.Admitted() {
					return
				}
				if a.Cost != 3 {
					t.Errorf("cost %d, want 3", a.Cost)
				}
				admitted.Add(1)
				if err := s.Settle(ctx, ended(a, 200)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		got := getKey(t, s, "k")
		if admitted.Load() != 6 || got.SuccessfulCalls != 6 || got.UsedUnits != 18 || got.RemainingCalls != 2 {
			t.Errorf("admitted %d; key %+v; want 6 admitted, 6 successful, 18 units used, 2 remaining", admitted.Load(), got)
		}
		one := tryReserve(t, s, call("k", "a", t0))
		if !one.Admitted() || one.Cost != 1 {
			t.Fatalf("a call of 1 image with 2 remaining: %+v, want admitted at cost 1", one)
		}
		// A failed call gives its whole cost back: with the call of 1
		// released, one of 2 images fits, and once it fails too the key
		// holds nothing.
		if err := s.Release(ctx, ended(one, 500)); err != nil {
			t.Fatal(err)
		}
		r := call("k", "a", t0)
		r.BatchSize = 2
		two := tryReserve(t, s, r)
		if !two.Admitted() || two.Cost != 2 {
			t.Fatalf("a call of 2 images with 2 remaining and none held: %+v, want admitted at cost 2", two)
		}
		if err := s.Release(ctx, ended(two, 500)); err != nil {
			t.Fatal(err)
		}
		if got := getKey(t, s, "k"); got.ReservedCalls != 0 || got.InFlight != 0 || got.RemainingCalls != 2 || got.SuccessfulCalls != 6 {
			t.Errorf("after two failed calls of 1 and 2 images: %+v; want nothing held, 2 remaining, 6 successful", got)
		}
		daily, err := s.KeyDaily(ctx, k.ID, "2026-01-01")
		if err != nil || len(daily) != 1 || daily[0].Generations != 6 || daily[0].Units != 18 {
			t.Errorf("key daily: %+v, %v; want 6 generations, 18 units", daily, err)
		}
	})
}

// TestRefillOnce: a due refill sets remaining calls once, however many
// instances apply it, as a refilled event; one not due does nothing.
func TestRefillOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		k := newKey(t, s, "k", 3)
		due := t0.Add(time.Minute)
		change(t, s, k.ID, quota.KeyChange{Refill: &quota.Refill{Calls: 50, Every: "day"}, RefillNextAt: &due})
		if ids, err := s.DueRefills(ctx, t0); err != nil || len(ids) != 0 {
			t.Fatalf("DueRefills before it is due: %v, %v", ids, err)
		}
		next := due.Add(24 * time.Hour)
		refill := quota.KeyChange{RefillDue: true, RefillNextAt: &next, Now: due}
		if ids, err := s.DueRefills(ctx, due); err != nil || len(ids) != 1 || ids[0] != k.ID {
			t.Fatalf("DueRefills when due: %v, %v", ids, err)
		}
		var wg sync.WaitGroup
		for range 5 { // five instances at once
			wg.Go(func() {
				if _, err := s.ChangeKey(ctx, quota.KeyRef{ID: k.ID}, refill); err != nil && !errors.Is(err, quota.ErrKeyNotFound) {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		got := getKey(t, s, "k")
		if got.RemainingCalls != 50 || got.RefillNextAt == nil || !got.RefillNextAt.Equal(next) {
			t.Errorf("after the refill: remaining %d, next %v; want 50 and %v", got.RemainingCalls, got.RefillNextAt, next)
		}
		if ev := events(t, s, k.ID); ev != "created(0→3) updated[refill] refilled(3→50) " {
			t.Errorf("events: %s; want one refill", ev)
		}
	})
}
