package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

var t0 = time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)

func newKey(t *testing.T, s store.Store, hash string, remaining int64) quota.Key {
	t.Helper()
	k, err := s.CreateKey(context.Background(), quota.NewKey{Hash: hash, Prefix: "fx_abc", Name: "n-" + hash, Remaining: remaining, Now: t0})
	if err != nil {
		t.Fatalf("CreateKey(%s): %v", hash, err)
	}
	return k
}

func call(hash string, owner string, start time.Time) quota.ReserveRequest {
	return quota.ReserveRequest{KeyHash: hash, BatchSize: 1, Owner: owner, RequestID: "req", Start: start, Deadline: start.Add(time.Minute)}
}

func setRemaining(n int64, now time.Time) quota.KeyChange {
	return quota.KeyChange{Remaining: &n, Now: now}
}

// reserve reserves a call that must be admitted.
func reserve(t *testing.T, s store.Store, r quota.ReserveRequest) quota.Admission {
	t.Helper()
	a, err := s.Reserve(context.Background(), r)
	if err != nil || !a.Admitted() {
		t.Fatalf("Reserve(%s): got %+v, %v; want admitted", r.KeyHash, a, err)
	}
	return a
}

// ended is how a's call ended, for Settle or Release.
func ended(a quota.Admission, status int) quota.Outcome {
	return quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: status, At: t0, Day: "2026-03-01"}
}

func getKey(t *testing.T, s store.Store, hash string) quota.Key {
	t.Helper()
	k, err := s.KeyByHash(context.Background(), hash)
	if err != nil {
		t.Fatalf("KeyByHash(%s): %v", hash, err)
	}
	return k
}

type counts struct{ total, successful, remaining, reserved int64 }

func checkKey(t *testing.T, s store.Store, hash string, want counts) {
	t.Helper()
	k := getKey(t, s, hash)
	got := counts{k.TotalCalls, k.SuccessfulCalls, k.RemainingCalls, k.ReservedCalls}
	if got != want {
		t.Errorf("key %s: got (total, successful, remaining, reserved) = %v, want %v", hash, got, want)
	}
}

func TestKeys(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		k := newKey(t, s, "h1", 10)
		if k.ID == 0 || k.Prefix != "fx_abc" || k.Name != "n-h1" || k.RemainingCalls != 10 || !k.CreatedAt.Equal(t0) {
			t.Errorf("CreateKey: got %+v", k)
		}
		if _, err := s.CreateKey(ctx, quota.NewKey{Hash: "h1", Remaining: 1, Now: t0}); !errors.Is(err, quota.ErrKeyExists) {
			t.Errorf("duplicate CreateKey: got %v, want ErrKeyExists", err)
		}
		if _, err := s.KeyByHash(ctx, "nope"); !errors.Is(err, quota.ErrKeyNotFound) {
			t.Errorf("KeyByHash(unknown): got %v, want ErrKeyNotFound", err)
		}
		later := t0.Add(time.Hour)
		k, err := s.ChangeKey(ctx, quota.KeyRef{Hash: "h1"}, setRemaining(42, later))
		if err != nil || k.RemainingCalls != 42 || !k.UpdatedAt.Equal(later) {
			t.Errorf("ChangeKey(set 42): got %+v, %v; want 42 updated at %v", k, err, later)
		}
		if _, err := s.ChangeKey(ctx, quota.KeyRef{Hash: "nope"}, setRemaining(1, later)); !errors.Is(err, quota.ErrKeyNotFound) {
			t.Errorf("ChangeKey(unknown): got %v, want ErrKeyNotFound", err)
		}
		newKey(t, s, "h2", 0)
		newKey(t, s, "h3", 0)
		all, err := s.ListKeys(ctx, quota.KeyFilter{Limit: 10, Now: t0})
		if err != nil || len(all) != 3 || all[0].Name != "n-h3" {
			t.Errorf("ListKeys: got %d keys (first %+v), %v; want 3, newest first", len(all), all, err)
		}
		page, err := s.ListKeys(ctx, quota.KeyFilter{Limit: 1, Before: all[0].ID, Now: t0})
		if err != nil || len(page) != 1 || page[0].Name != "n-h2" {
			t.Errorf("ListKeys page 2: got %+v, %v; want n-h2", page, err)
		}
		found, err := s.ListKeys(ctx, quota.KeyFilter{Query: "H2", Limit: 10, Now: t0})
		if err != nil || len(found) != 1 || found[0].Name != "n-h2" {
			t.Errorf("ListKeys search: got %+v, %v; want n-h2", found, err)
		}
		none, err := s.ListKeys(ctx, quota.KeyFilter{Query: "%", Limit: 10, Now: t0})
		if err != nil || len(none) != 0 {
			t.Errorf("ListKeys search %%: got %d keys, %v; want none (LIKE escaped)", len(none), err)
		}
	})
}

func TestReserveSettleRelease(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		newKey(t, s, "k", 2)
		if a, err := s.Reserve(ctx, call("unknown", "a", t0)); err != nil || a.Admitted() || a.Key != nil {
			t.Fatalf("Reserve(unknown): got %+v, %v; want refused without a key", a, err)
		}
		c1 := reserve(t, s, call("k", "a", t0))
		c2 := reserve(t, s, call("k", "a", t0))
		if c1.KeyID != getKey(t, s, "k").ID || c1.Cost != 1 || c1.CallID == c2.CallID {
			t.Errorf("admissions %+v and %+v: want the key's id, cost 1, distinct calls", c1, c2)
		}
		a, err := s.Reserve(ctx, call("k", "a", t0))
		if err != nil || a.Admitted() || a.Key == nil || a.Key.RemainingCalls != 2 || a.Key.ReservedCalls != 2 {
			t.Fatalf("third Reserve of 2: got %+v, %v; want refused with the key's state (2 remaining, 2 reserved)", a, err)
		}
		checkKey(t, s, "k", counts{total: 2, successful: 0, remaining: 2, reserved: 2})

		if err := s.Settle(ctx, ended(c1, 200)); err != nil {
			t.Fatal(err)
		}
		if err := s.Settle(ctx, ended(c1, 200)); err != nil {
			t.Errorf("second Settle: got %v, want nil (idempotent)", err)
		}
		if err := s.Release(ctx, ended(c1, 500)); err != nil {
			t.Errorf("Release of settled call: got %v, want nil (no-op)", err)
		}
		checkKey(t, s, "k", counts{total: 2, successful: 1, remaining: 1, reserved: 1})

		if err := s.Release(ctx, ended(c2, 503)); err != nil {
			t.Fatal(err)
		}
		if err := s.Settle(ctx, ended(c2, 200)); !errors.Is(err, quota.ErrCallReleased) {
			t.Errorf("Settle of released call: got %v, want ErrCallReleased", err)
		}
		checkKey(t, s, "k", counts{total: 2, successful: 1, remaining: 1, reserved: 0})

		st, err := s.SiteStats(ctx, "2026-01-01")
		if err != nil {
			t.Fatal(err)
		}
		if st.TotalGenerations != 1 || len(st.Days) != 1 || st.Days[0] != (quota.Day{Date: "2026-03-01", Generations: 1}) {
			t.Errorf("SiteStats: got %+v, want total 1 on 2026-03-01", st)
		}
	})
}

// TestSetRemainingKeepsHolds: a set below the calls in flight is raised to
// their number, so that remaining cannot go negative when they succeed.
func TestSetRemainingKeepsHolds(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		newKey(t, s, "k", 5)
		var calls []quota.Admission
		for range 3 {
			calls = append(calls, reserve(t, s, call("k", "a", t0)))
		}
		k, err := s.ChangeKey(ctx, quota.KeyRef{Hash: "k"}, setRemaining(1, t0))
		if err != nil || k.RemainingCalls != 3 {
			t.Fatalf("SetRemaining(1) with 3 in flight: got remaining %d, %v; want 3", k.RemainingCalls, err)
		}
		for _, c := range calls {
			if err := s.Settle(ctx, ended(c, 200)); err != nil {
				t.Fatal(err)
			}
		}
		checkKey(t, s, "k", counts{total: 3, successful: 3, remaining: 0, reserved: 0})
	})
}

func TestReleaseOrphans(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		newKey(t, s, "k", 10)
		newKey(t, s, "j", 10)
		old := reserve(t, s, call("k", "dead", t0))                      // deadline t0+1m
		reserve(t, s, call("j", "dead", t0))                             // deadline t0+1m
		live := reserve(t, s, call("k", "live", t0.Add(50*time.Second))) // deadline t0+1m50s
		mine := reserve(t, s, call("j", "me", t0.Add(55*time.Second)))   // deadline t0+1m55s
		n, err := s.ReleaseExpired(ctx, t0.Add(61*time.Second))
		if err != nil || n != 2 {
			t.Fatalf("ReleaseExpired: got %d, %v; want 2", n, err)
		}
		if err := s.Settle(ctx, ended(old, 200)); !errors.Is(err, quota.ErrCallReleased) {
			t.Errorf("Settle of expired call: got %v, want ErrCallReleased", err)
		}
		n, err = s.ReleaseOwner(ctx, "me", t0.Add(56*time.Second))
		if err != nil || n != 1 {
			t.Fatalf("ReleaseOwner: got %d, %v; want 1", n, err)
		}
		if err := s.Settle(ctx, ended(mine, 200)); !errors.Is(err, quota.ErrCallReleased) {
			t.Errorf("Settle of owner-released call: got %v, want ErrCallReleased", err)
		}
		if err := s.Settle(ctx, ended(live, 200)); err != nil {
			t.Errorf("Settle of live call: %v", err)
		}
		checkKey(t, s, "k", counts{total: 2, successful: 1, remaining: 9, reserved: 0})
		checkKey(t, s, "j", counts{total: 2, successful: 0, remaining: 10, reserved: 0})
	})
}

// TestSQLiteCountsOpenCalls: the open calls the SQLite writer counts
// (its gather waits for more writes when many are open) follow every way
// a call opens and ends, only once each; a store opened on a database
// with open calls starts from them, and a sweep (the recovery loop's,
// every second) sets the count right if it ever drifted.
func TestSQLiteCountsOpenCalls(t *testing.T) {
	url := storetest.URL(t, store.SQLiteKind)
	s := storetest.Open(t, url)
	ctx := context.Background()
	check := func(when string, s store.Store, want int64) {
		t.Helper()
		if got := store.OpenCalls(s); got != want {
			t.Errorf("%s: %d calls counted open, want %d", when, got, want)
		}
	}
	newKey(t, s, "k", 5)
	var calls []quota.Admission
	for range 5 {
		calls = append(calls, reserve(t, s, call("k", "a", t0)))
	}
	if a, err := s.Reserve(ctx, call("k", "a", t0)); err != nil || a.Admitted() {
		t.Fatalf("sixth Reserve of 5: got %+v, %v; want refused", a, err)
	}
	check("5 admitted, 1 refused", s, 5)
	for range 2 {
		if err := s.Settle(ctx, ended(calls[0], 200)); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, ended(calls[1], 500)); err != nil {
			t.Fatal(err)
		}
	}
	check("one settled and one released, twice each", s, 3)
	if n, err := s.ReleaseExpired(ctx, t0.Add(61*time.Second)); err != nil || n != 3 {
		t.Fatalf("ReleaseExpired: got %d, %v; want 3", n, err)
	}
	check("the rest expired", s, 0)
	reserve(t, s, call("k", "b", t0.Add(2*time.Minute)))
	reserve(t, s, call("k", "b", t0.Add(2*time.Minute)))
	check("2 more admitted", s, 2)
	s.Close()

	s = storetest.Open(t, url)
	check("opened again", s, 2)
	if n, err := s.ReleaseOwner(ctx, "b", t0.Add(3*time.Minute)); err != nil || n != 2 {
		t.Fatalf("ReleaseOwner: got %d, %v; want 2", n, err)
	}
	check("the owner's released", s, 0)

	reserve(t, s, call("k", "c", t0.Add(4*time.Minute)))
	store.SetOpenCalls(s, 100)
	if n, err := s.ReleaseExpired(ctx, t0.Add(4*time.Minute)); err != nil || n != 0 {
		t.Fatalf("ReleaseExpired: got %d, %v; want 0", n, err)
	}
	check("a sweep after the count drifted to 100", s, 1)
}

// TestConcurrentReserve is invariant 1 at the store: N concurrent
// reservations against R remaining admit exactly min(N, R).
func TestConcurrentReserve(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		s := storetest.Open(t, url)
		ctx := context.Background()
		const n, r = 200, 50
		newKey(t, s, "k", r)
		var admitted, refused atomic.Int64
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				a, err := s.Reserve(ctx, call("k", "a", t0))
				switch {
				case err != nil:
					t.Error(err)
				case !a.Admitted():
					refused.Add(1)
				default:
					admitted.Add(1)
					if i%2 == 0 {
						err = s.Settle(ctx, ended(a, 200))
					} else {
						err = s.Release(ctx, ended(a, 500))
					}
					if err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		k := getKey(t, s, "k")
		if admitted.Load()+refused.Load() != n || k.TotalCalls != admitted.Load() {
			t.Errorf("admitted %d + refused %d, want %d; totalCalls %d", admitted.Load(), refused.Load(), n, k.TotalCalls)
		}
		if k.RemainingCalls+k.SuccessfulCalls != r || k.ReservedCalls != 0 || k.RemainingCalls < 0 {
			t.Errorf("books: remaining %d + successful %d != %d (reserved %d)", k.RemainingCalls, k.SuccessfulCalls, r, k.ReservedCalls)
		}
		st, err := s.SiteStats(ctx, "2026-03-01")
		if err != nil || st.TotalGenerations != k.SuccessfulCalls {
			t.Errorf("site total %d, want successfulCalls %d (%v)", st.TotalGenerations, k.SuccessfulCalls, err)
		}
	})
}

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = store.Migrate(context.Background(), url) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
		if err := store.Migrate(context.Background(), url); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
	})
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind store.Kind
		dsn  string
	}{
		{"", store.SQLiteKind, "felix.db"},
		{"sqlite:/tmp/x.db", store.SQLiteKind, "/tmp/x.db"},
		{"sqlite:///tmp/x.db", store.SQLiteKind, "/tmp/x.db"},
		{"file:x.db", store.SQLiteKind, "x.db"},
		{"SQLite:x.db", store.SQLiteKind, "x.db"},
		{"sqlite://x.db", store.SQLiteKind, "x.db"},
		{"postgres://u@h/db", store.PostgresKind, "postgres://u@h/db"},
		{"postgresql://u@h/db", store.PostgresKind, "postgresql://u@h/db"},
		// Bare file paths, as operators write them, whether the file exists or not.
		{"./data/felix.db", store.SQLiteKind, "./data/felix.db"},
		{"/var/lib/felix/felix.db", store.SQLiteKind, "/var/lib/felix/felix.db"},
		{"felix.db", store.SQLiteKind, "felix.db"},
		{"../felix.db", store.SQLiteKind, "../felix.db"},
		{"data/felix:v2.db", store.SQLiteKind, "data/felix:v2.db"},
	} {
		kind, dsn, err := store.Parse(tc.url)
		if err != nil || kind != tc.kind || dsn != tc.dsn {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q", tc.url, kind, dsn, err, tc.kind, tc.dsn)
		}
	}
	for _, tc := range []struct{ url, problem string }{
		{"mysql://u:hunter2@h/db", `has the unsupported scheme "mysql"`},
		{"http://db.example.com/felix", `has the unsupported scheme "http"`},
		{"localhost:5432/felix", "host and port but no scheme"},
		{"host=db user=felix password=hunter2", "key=value"},
		{"postgres://u:p#ss@h/db", "not a valid URL"},
		{"sqlite:", "names no SQLite file"},
		{"file:felix.db?mode=ro", "SQLite options"},
		{"./felix.db?mode=ro", "SQLite options"},
		{"/var/lib/felix/", "folder"},
	} {
		_, _, err := store.Parse(tc.url)
		var ue *store.URLError
		if !errors.As(err, &ue) || !strings.Contains(ue.Problem, tc.problem) {
			t.Errorf("Parse(%q): got %v, want a URLError saying %q", tc.url, err, tc.problem)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "p#ss")) {
			t.Errorf("Parse(%q): error %q repeats the value", tc.url, err)
		}
	}
}

// TestMigrationsMatch: both stores have the same migrations, by name, so
// that a schema change is never made for one store only.
func TestMigrationsMatch(t *testing.T) {
	names := func(kind store.Kind) []string {
		entries, err := os.ReadDir(filepath.Join("migrations", string(kind)))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	sqlite, postgres := names(store.SQLiteKind), names(store.PostgresKind)
	if !slices.Equal(sqlite, postgres) || len(sqlite) == 0 {
		t.Errorf("migrations differ: sqlite %v, postgres %v", sqlite, postgres)
	}
}
