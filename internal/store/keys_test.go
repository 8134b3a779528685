package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

func change(t *testing.T, s store.Store, id int64, c quota.KeyChange) quota.Key {
	t.Helper()
	if c.Now.IsZero() {
		c.Now = t0
	}
	k, err := s.ChangeKey(context.Background(), quota.KeyRef{ID: id}, c)
	if err != nil {
		t.Fatalf("ChangeKey(%d, %+v): %v", id, c, err)
	}
	return k
}

func events(t *testing.T, s store.Store, id int64) string {
	t.Helper()
	ev, err := s.KeyEvents(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := ""
	for _, e := range ev {
		out += e.Action
		if e.Before != nil {
			out += fmt.Sprintf("(%d→%d)", *e.Before, *e.After)
		}
		if e.Detail != "" {
			out += "[" + e.Detail + "]"
		}
		out += " "
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// TestChangeKey: every operator change applies atomically with its event,
// and the events alone prove remainingCalls.
func TestChangeKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		k := newKey(t, s, "k", 10)
		change(t, s, k.ID, quota.KeyChange{TopUp: 5})
		calls := []quota.Admission{reserve(t, s, call("k", "a", t0)), reserve(t, s, call("k", "a", t0)), reserve(t, s, call("k", "a", t0))}

		if _, err := s.ChangeKey(ctx, quota.KeyRef{ID: k.ID}, quota.KeyChange{TopUp: -13, Now: t0}); !errors.Is(err, quota.ErrInsufficientCalls) {
			t.Errorf("top-up of -13 with 15 remaining and 3 in flight: got %v, want ErrInsufficientCalls", err)
		}
		checkKey(t, s, "k", counts{total: 3, remaining: 15, reserved: 3})
		change(t, s, k.ID, quota.KeyChange{TopUp: -12})
		if got := change(t, s, k.ID, quota.KeyChange{Remaining: ptr[int64](1)}); got.RemainingCalls != 3 {
			t.Errorf("set 1 with 3 in flight: remaining %d, want 3", got.RemainingCalls)
		}
		later := t0.Add(time.Hour)
		got := change(t, s, k.ID, quota.KeyChange{Name: ptr("acme"), Note: ptr("pays monthly"), ExpiresAt: &later, Disabled: ptr(true)})
		if got.Name != "acme" || got.Note != "pays monthly" || !got.Disabled || got.ExpiresAt == nil || !got.ExpiresAt.Equal(later) {
			t.Errorf("after the update: %+v", got)
		}
		change(t, s, k.ID, quota.KeyChange{Disabled: ptr(false), ClearExpiry: true})
		change(t, s, k.ID, quota.KeyChange{Name: ptr("acme")}) // no change: no event

		want := "created(0→10) topup(10→15) topup(15→3) set(3→3) updated[name, note, expiresAt] disabled updated[expiresAt] enabled "
		if got := events(t, s, k.ID); got != want {
			t.Errorf("events:\n got %s\nwant %s", got, want)
		}
		for _, c := range calls {
			if err := s.Settle(ctx, ended(c, 200)); err != nil {
				t.Fatal(err)
			}
		}
		checkKey(t, s, "k", counts{total: 3, successful: 3, remaining: 0})
		if _, err := s.ChangeKey(ctx, quota.KeyRef{ID: k.ID + 100}, quota.KeyChange{TopUp: 1, Now: t0}); !errors.Is(err, quota.ErrKeyNotFound) {
			t.Errorf("ChangeKey of an unknown id: got %v, want ErrKeyNotFound", err)
		}
	})
}

// TestRefusals: a disabled, expired or deleted key admits nothing and its
// counters do not move; the store reports the key's state (nil when
// deleted), from which quota tells why.
func TestRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		k := newKey(t, s, "k", 10)
		refused := func(what string) *quota.Key {
			t.Helper()
			a, err := s.Reserve(ctx, call("k", "a", t0))
			if err != nil || a.Admitted() {
				t.Fatalf("%s: got %+v, %v; want refused", what, a, err)
			}
			return a.Key
		}
		change(t, s, k.ID, quota.KeyChange{Disabled: ptr(true)})
		if st := refused("disabled"); st == nil || !st.Disabled {
			t.Errorf("disabled: state %+v, want the key, disabled", st)
		}
		change(t, s, k.ID, quota.KeyChange{Disabled: ptr(false), ExpiresAt: ptr(t0)})
		if st := refused("expired at the call's start"); st == nil || st.ExpiresAt == nil {
			t.Errorf("expired: state %+v, want the key with its expiry", st)
		}
		change(t, s, k.ID, quota.KeyChange{ExpiresAt: ptr(t0.Add(time.Second))})
		inFlight := reserve(t, s, call("k", "a", t0)) // before the expiry: admitted
		change(t, s, k.ID, quota.KeyChange{Delete: true})
		if st := refused("deleted"); st != nil {
			t.Errorf("deleted: state %+v, want none", st)
		}
		if _, err := s.KeyByID(ctx, k.ID); !errors.Is(err, quota.ErrKeyNotFound) {
			t.Errorf("KeyByID of a deleted key: %v, want ErrKeyNotFound", err)
		}
		if _, err := s.KeyByHash(ctx, "k"); !errors.Is(err, quota.ErrKeyNotFound) {
			t.Errorf("KeyByHash of a deleted key: %v, want ErrKeyNotFound", err)
		}
		if err := s.Settle(ctx, ended(inFlight, 200)); err != nil {
			t.Errorf("a call in flight when its key was deleted must still settle: %v", err)
		}
		if got := events(t, s, k.ID); got != "created(0→10) disabled updated[expiresAt] enabled updated[expiresAt] deleted " {
			t.Errorf("events of the deleted key: %s", got)
		}
		again := newKey(t, s, "k", 1) // the same plaintext may be created again
		if again.ID == k.ID {
			t.Errorf("re-created key has the deleted key's id %d", k.ID)
		}
		a, err := s.Audit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Keys) != 2 || !a.Keys[0].Deleted || a.Keys[0].SuccessfulCalls != 1 || a.SiteGenerations != 1 {
			t.Errorf("audit after delete: %+v; want the deleted key kept with its success", a)
		}
	})
}

// TestConcurrentTopUps: top-ups are atomic: 50 concurrent +1 add exactly 50.
func TestConcurrentTopUps(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		k := newKey(t, s, "k", 0)
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if _, err := s.ChangeKey(context.Background(), quota.KeyRef{ID: k.ID}, quota.KeyChange{TopUp: 1, Now: t0}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		checkKey(t, s, "k", counts{remaining: 50})
		ev, err := s.KeyEvents(context.Background(), k.ID)
		if err != nil || len(ev) != 51 {
			t.Errorf("%d events, %v; want 51 (created and 50 top-ups)", len(ev), err)
		}
	})
}

// TestListKeys: filters by status and text, and keyset paging.
func TestListKeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		active := newKey(t, s, "active", 5)
		disabled := newKey(t, s, "disabled", 5)
		expired := newKey(t, s, "expired", 5)
		empty := newKey(t, s, "empty", 0)
		deleted := newKey(t, s, "deleted", 5)
		change(t, s, disabled.ID, quota.KeyChange{Disabled: ptr(true)})
		change(t, s, expired.ID, quota.KeyChange{ExpiresAt: ptr(t0.Add(-time.Second)), Note: ptr("trial ended")})
		change(t, s, deleted.ID, quota.KeyChange{Delete: true})
		ids := func(f quota.KeyFilter) []int64 {
			t.Helper()
			f.Now, f.Limit = t0, max(f.Limit, 10)
			keys, err := s.ListKeys(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, k := range keys {
				out = append(out, k.ID)
			}
			return out
		}
		for _, tc := range []struct {
			f    quota.KeyFilter
			want []int64
		}{
			{quota.KeyFilter{}, []int64{empty.ID, expired.ID, disabled.ID, active.ID}},
			{quota.KeyFilter{Status: quota.StatusActive}, []int64{empty.ID, active.ID}},
			{quota.KeyFilter{Status: quota.StatusDisabled}, []int64{disabled.ID}},
			{quota.KeyFilter{Status: quota.StatusExpired}, []int64{expired.ID}},
			{quota.KeyFilter{Status: quota.StatusExhausted}, []int64{empty.ID}},
			{quota.KeyFilter{Query: "TRIAL"}, []int64{expired.ID}},
			{quota.KeyFilter{Before: expired.ID}, []int64{disabled.ID, active.ID}},
		} {
			if got := ids(tc.f); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("ListKeys(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		}
	})
}

// TestUsageLog: every admitted call is a row with its outcome, filters and
// paging select them, and pruning drops old rows without touching a
// counter, a daily history or the books.
func TestUsageLog(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		k := newKey(t, s, "k", 10)
		newKey(t, s, "j", 10)
		at := func(d time.Duration) quota.ReserveRequest { r := call("k", "a", t0.Add(d)); r.BatchSize = 2; return r }
		ok := reserve(t, s, at(0))
		failed := reserve(t, s, at(time.Hour))
		open := reserve(t, s, at(2*time.Hour))
		other := reserve(t, s, call("j", "a", t0))
		finished := quota.Outcome{CallID: ok.CallID, KeyID: ok.KeyID, Cost: ok.Cost, Status: 201, At: t0.Add(1500 * time.Millisecond), Day: "2026-03-01", Target: "http://gpu1"}
		if err := s.Settle(ctx, finished); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, quota.Outcome{CallID: failed.CallID, KeyID: failed.KeyID, Cost: failed.Cost, Status: 500, At: t0.Add(time.Hour), Target: "http://gpu2"}); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, ended(other, 0)); err != nil {
			t.Fatal(err)
		}
		list := func(f quota.CallFilter) []quota.Call {
			t.Helper()
			var out []quota.Call
			if err := s.Calls(ctx, f, func(c quota.Call) error { out = append(out, c); return nil }); err != nil {
				t.Fatal(err)
			}
			return out
		}
		all := list(quota.CallFilter{KeyID: k.ID})
		if len(all) != 3 || all[0].ID != open.CallID || all[2].ID != ok.CallID {
			t.Fatalf("calls of key k: %+v; want 3, newest first", all)
		}
		c := all[2]
		if c.Outcome != quota.OutcomeSuccess || c.Status == nil || *c.Status != 201 || c.LatencyMs == nil || *c.LatencyMs != 1500 ||
			c.BatchSize != 2 || c.Cost != 1 || c.Target != "http://gpu1" || c.KeyPrefix != "fx_abc" || c.RequestID != "req" || !c.StartedAt.Equal(t0) {
			t.Errorf("the settled call: %+v", c)
		}
		if o := all[0]; o.Outcome != quota.OutcomeOpen || o.Status != nil || o.FinishedAt != nil || o.LatencyMs != nil {
			t.Errorf("the open call: %+v", o)
		}
		if f := all[1]; f.Outcome != quota.OutcomeFailed || *f.Status != 500 || f.Target != "http://gpu2" {
			t.Errorf("the failed call: %+v", f)
		}
		for _, tc := range []struct {
			name string
			f    quota.CallFilter
			want int
		}{
			{"every key", quota.CallFilter{}, 4},
			{"failed", quota.CallFilter{Outcome: quota.OutcomeFailed}, 2},
			{"from", quota.CallFilter{From: ptr(t0.Add(time.Hour))}, 2},
			{"to", quota.CallFilter{To: ptr(t0.Add(time.Hour))}, 2},
			{"page", quota.CallFilter{Limit: 2}, 2},
			{"after the cursor", quota.CallFilter{Before: open.CallID}, 2},
		} {
			if got := list(tc.f); len(got) != tc.want {
				t.Errorf("%s: %d calls, want %d", tc.name, len(got), tc.want)
			}
		}

		before, _ := s.Audit(ctx)
		daily, _ := s.KeyDaily(ctx, k.ID, "2026-01-01")
		n, err := s.PruneCalls(ctx, t0.Add(90*time.Minute), 1000)
		if err != nil || n != 3 {
			t.Fatalf("PruneCalls: %d, %v; want 3 (the open call is kept)", n, err)
		}
		if got := list(quota.CallFilter{}); len(got) != 1 || got[0].ID != open.CallID {
			t.Errorf("after pruning: %+v, want the open call alone", got)
		}
		after, _ := s.Audit(ctx)
		daily2, _ := s.KeyDaily(ctx, k.ID, "2026-01-01")
		if fmt.Sprint(before) != fmt.Sprint(after) || fmt.Sprint(daily) != fmt.Sprint(daily2) {
			t.Errorf("pruning changed the books: %+v → %+v, daily %v → %v", before, after, daily, daily2)
		}
		if want := "[{2026-03-01 1 1}]"; fmt.Sprint(daily2) != want {
			t.Errorf("key daily: %v, want %s", daily2, want)
		}
		checkKey(t, s, "k", counts{total: 3, successful: 1, remaining: 9, reserved: 1})
	})
}
