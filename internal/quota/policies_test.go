package quota_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

func ptr[T any](v T) *T { return &v }

// clock is a fake clock tests move by hand.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func withClock(c *clock) func(*quota.Options) {
	return func(o *quota.Options) { o.Now = c.now }
}

func refusedWith(t *testing.T, err error, want quota.Refusal) *quota.RefusedError {
	t.Helper()
	var r *quota.RefusedError
	if !errors.As(err, &r) || r.Reason != want {
		t.Fatalf("got %v, want refused: %s", err, want)
	}
	return r
}

// TestRefusalOrder: when several refusals apply, the first of SPEC §4.3's
// order answers, and a rate-limited call learns when to retry.
func TestRefusalOrder(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		c := newClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
		svc, _ := newService(t, db, withClock(c))
		ctx := context.Background()
		k, key, err := svc.CreateKey(ctx, quota.KeySpec{Remaining: 1, Policies: quota.Policies{
			RateLimit: &quota.RateLimit{Requests: 2, Per: "minute"}, MaxConcurrent: ptr[int64](1),
		}})
		if err != nil {
			t.Fatal(err)
		}
		call := func() error {
			_, err := svc.Reserve(ctx, quota.CallRequest{Key: key})
			return err
		}
		if err := call(); err != nil {
			t.Fatal(err) // 1 in flight, 0 left beyond it, 1 rate slot left
		}
		refusedWith(t, call(), quota.ConcurrencyLimited) // concurrency before exhausted
		if err := call(); err == nil {
			t.Fatal("admitted")
		}
		// The bucket (2 per minute) had 2 slots: one taken, the refusals took none.
		svc.ChangeKey(ctx, k.ID, quota.KeyChange{MaxConcurrent: ptr[int64](10), Remaining: ptr[int64](10)})
		if err := call(); err != nil {
			t.Fatalf("the second call of the burst: %v", err)
		}
		r := refusedWith(t, call(), quota.RateLimited) // rate before concurrency and exhausted
		if r.RetryAfter <= 29*time.Second || r.RetryAfter > 30*time.Second {
			t.Errorf("Retry-After %v, want 30 s (one call every 30 s)", r.RetryAfter)
		}
		svc.ChangeKey(ctx, k.ID, quota.KeyChange{Disabled: ptr(true)})
		refusedWith(t, call(), quota.Disabled) // disabled before rate limited
		svc.ChangeKey(ctx, k.ID, quota.KeyChange{Disabled: ptr(false), ExpiresAt: ptr(c.now())})
		refusedWith(t, call(), quota.Expired)
		svc.DeleteKey(ctx, k.ID)
		refusedWith(t, call(), quota.UnknownKey)
	})
}

// TestRefillAcrossMidnight: two instances with a clock that crosses
// midnight in the statistics time zone refill the key once, at the start
// of the day.
func TestRefillAcrossMidnight(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		berlin, _ := time.LoadLocation("Europe/Berlin")
		c := newClock(time.Date(2026, 3, 1, 22, 59, 0, 0, time.UTC)) // 23:59 in Berlin
		setup := func(o *quota.Options) { o.Now, o.Location = c.now, berlin }
		a, s := newService(t, db, setup)
		bo := quota.Options{Ledger: s, Keys: s, Usage: s, Owner: "b"}
		setup(&bo)
		b := quota.NewService(bo)
		ctx := context.Background()
		k, key, err := a.CreateKey(ctx, quota.KeySpec{Remaining: 5, Policies: quota.Policies{Refill: &quota.Refill{Calls: 100, Every: "day"}}})
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Date(2026, 3, 2, 0, 0, 0, 0, berlin); k.RefillNextAt == nil || !k.RefillNextAt.Equal(want) {
			t.Fatalf("first refill due %v, want %v", k.RefillNextAt, want)
		}
		r, err := a.Reserve(ctx, quota.CallRequest{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := a.Refill(ctx); n != 0 || err != nil {
			t.Fatalf("refill before midnight: %d, %v", n, err)
		}
		c.add(90 * time.Second) // 00:00:30 in Berlin
		for _, svc := range []*quota.Service{a, b, a, b} {
			if _, err := svc.Refill(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Settle(ctx, 200); err != nil { // a call from before the refill
			t.Fatal(err)
		}
		got, err := a.KeyByID(ctx, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.RemainingCalls != 99 || !got.RefillNextAt.Equal(time.Date(2026, 3, 3, 0, 0, 0, 0, berlin)) {
			t.Errorf("after the refill and one success: remaining %d, next %v; want 99 and the next midnight", got.RemainingCalls, got.RefillNextAt)
		}
		events, _ := a.KeyEvents(ctx, k.ID)
		refills := 0
		for _, e := range events {
			if e.Action == quota.ActionRefilled {
				refills++
				if *e.Before != 5 || *e.After != 100 {
					t.Errorf("refilled event %+v, want 5 → 100", e)
				}
			}
		}
		if refills != 1 {
			t.Errorf("%d refilled events, want 1", refills)
		}
		if bad, err := a.Books(ctx); err != nil || len(bad) != 0 {
			t.Errorf("books: %v, %v", bad, err)
		}
		c.set(time.Date(2026, 3, 31, 12, 0, 0, 0, berlin))
		a.ChangeKey(ctx, k.ID, quota.KeyChange{Refill: &quota.Refill{Calls: 7, Every: "month"}})
		got, _ = a.KeyByID(ctx, k.ID)
		if want := time.Date(2026, 4, 1, 0, 0, 0, 0, berlin); !got.RefillNextAt.Equal(want) {
			t.Errorf("monthly refill due %v, want %v", got.RefillNextAt, want)
		}
	})
}
