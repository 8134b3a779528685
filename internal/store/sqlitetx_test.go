package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
)

func openTestSQLite(t *testing.T) *SQLite {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "felix.db")
	if err := Migrate(ctx, "sqlite:"+path); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLite(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testKey is a key as the tests use it: its ID and its hash.
type testKey struct {
	ID   int64
	Hash string
}

func createTestKey(t *testing.T, s *SQLite, remaining int64) testKey {
	t.Helper()
	hash := "h-" + t.Name()
	k, err := s.CreateKey(context.Background(), quota.NewKey{Hash: hash, Prefix: "fx_test", Remaining: remaining, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return testKey{ID: k.ID, Hash: hash}
}

// TestSQLiteGroupRollsBack: when one write of a group fails, the group's
// other writes are undone with it, and the writer connection is left
// outside any transaction, ready for the next group.
func TestSQLiteGroupRollsBack(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	k := createTestKey(t, s, 10)
	now := time.Now()
	// An open call holding 5 that its key does not hold: releasing it
	// breaks CHECK (reserved_calls >= 0).
	res, err := s.w.ExecContext(ctx, `INSERT INTO calls (key_id, cost, owner, started_at, deadline) VALUES (?, 5, 't', 0, 0)`, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	badCall, _ := res.LastInsertId()
	good := callWrite{kind: reserveWrite, reserve: quota.ReserveRequest{KeyHash: k.Hash, Owner: "t", Start: now, Deadline: now.Add(time.Minute)}}
	bad := callWrite{kind: releaseWrite, outcome: quota.Outcome{CallID: badCall, KeyID: k.ID, Cost: 5, At: now}}
	if err := s.commitGroup(ctx, []callWrite{good, bad}, make([]callResult, 2)); err == nil {
		t.Fatal("a group with a failing write committed")
	}
	got, err := s.KeyByHash(ctx, k.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got.TotalCalls != 0 || got.ReservedCalls != 0 {
		t.Fatalf("after the failed group: total %d, reserved %d; want 0 and 0 (the good write undone too)", got.TotalCalls, got.ReservedCalls)
	}
	a, err := s.Reserve(ctx, good.reserve)
	if err != nil || !a.Admitted() {
		t.Fatalf("reserve after the failed group: %+v, %v", a, err)
	}
	if err := s.Settle(ctx, quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: 200, At: now, Day: "2026-11-25"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.KeyByHash(ctx, k.Hash); got.SuccessfulCalls != 1 || got.RemainingCalls != 9 {
		t.Errorf("after one call: successful %d, remaining %d; want 1 and 9", got.SuccessfulCalls, got.RemainingCalls)
	}
}

// TestSQLiteNewWriterConnection: when database/sql replaces the writer's
// connection, the writes prepare their statements on the new one.
func TestSQLiteNewWriterConnection(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	k := createTestKey(t, s, 10)
	s.w.SetMaxIdleConns(0) // every group now gets a fresh connection
	var conns []any
	for range 3 {
		a, err := s.Reserve(ctx, quota.ReserveRequest{KeyHash: k.Hash, Owner: "t", Start: time.Now(), Deadline: time.Now().Add(time.Minute)})
		if err != nil || !a.Admitted() {
			t.Fatalf("reserve: %+v, %v", a, err)
		}
		conns = append(conns, s.tx.conn)
		if err := s.Settle(ctx, quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: 200, At: time.Now(), Day: "2026-11-25"}); err != nil {
			t.Fatalf("settle: %v", err)
		}
	}
	if conns[0] == conns[1] || conns[1] == conns[2] {
		t.Error("the writes kept one connection; the test did not replace it")
	}
	if got, _ := s.KeyByHash(ctx, k.Hash); got.SuccessfulCalls != 3 || got.RemainingCalls != 7 {
		t.Errorf("successful %d, remaining %d; want 3 and 7", got.SuccessfulCalls, got.RemainingCalls)
	}
}

// TestSQLiteEndChecksKeyAndCost: the writer settles or releases a call
// with the key and cost its outcome names (it reads neither back); an
// outcome that names another key or cost neither settles nor releases,
// and moves no counter.
func TestSQLiteEndChecksKeyAndCost(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	k := createTestKey(t, s, 10)
	o, err := s.CreateKey(ctx, quota.NewKey{Hash: "h-other", Prefix: "fx_other", Remaining: 10, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	other := testKey{ID: o.ID, Hash: "h-other"}
	now := time.Now()
	a, err := s.Reserve(ctx, quota.ReserveRequest{KeyHash: k.Hash, BatchSize: 1, Owner: "t", Start: now, Deadline: now.Add(time.Minute)})
	if err != nil || !a.Admitted() || a.Cost != 1 {
		t.Fatalf("reserve: %+v, %v", a, err)
	}
	right := quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: 200, At: now, Day: "2026-11-25"}
	for _, tc := range []struct {
		name string
		o    quota.Outcome
	}{
		{"another cost", quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: 2, Status: 200, At: now, Day: "2026-11-25"}},
		{"no cost", quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Status: 200, At: now, Day: "2026-11-25"}},
		{"another key", quota.Outcome{CallID: a.CallID, KeyID: other.ID, Cost: a.Cost, Status: 200, At: now, Day: "2026-11-25"}},
	} {
		if err := s.Settle(ctx, tc.o); err == nil {
			t.Errorf("settle with %s: no error", tc.name)
		}
		if err := s.Release(ctx, tc.o); err != nil {
			t.Errorf("release with %s: %v", tc.name, err)
		}
	}
	for _, h := range []string{k.Hash, other.Hash} {
		want := int64(0)
		if h == k.Hash {
			want = 1 // the call, still open
		}
		if got, _ := s.KeyByHash(ctx, h); got.SuccessfulCalls != 0 || got.RemainingCalls != 10 || got.ReservedCalls != want || got.InFlight != want {
			t.Errorf("key %s after the wrong outcomes: successful %d, remaining %d, reserved %d, in flight %d; want 0, 10, %d and %d",
				h, got.SuccessfulCalls, got.RemainingCalls, got.ReservedCalls, got.InFlight, want, want)
		}
	}
	if err := s.Settle(ctx, right); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.KeyByHash(ctx, k.Hash); got.SuccessfulCalls != 1 || got.RemainingCalls != 9 || got.ReservedCalls != 0 {
		t.Errorf("after the right outcome: successful %d, remaining %d, reserved %d; want 1, 9 and 0", got.SuccessfulCalls, got.RemainingCalls, got.ReservedCalls)
	}
	b, err := s.Reserve(ctx, quota.ReserveRequest{KeyHash: k.Hash, BatchSize: 1, Owner: "t", Start: now, Deadline: now.Add(time.Minute)})
	if err != nil || !b.Admitted() {
		t.Fatalf("reserve: %+v, %v", b, err)
	}
	if err := s.Release(ctx, quota.Outcome{CallID: b.CallID, KeyID: b.KeyID, Cost: b.Cost, Status: 500, At: now}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.KeyByHash(ctx, k.Hash); got.SuccessfulCalls != 1 || got.RemainingCalls != 9 || got.ReservedCalls != 0 || got.InFlight != 0 {
		t.Errorf("after the right release: successful %d, remaining %d, reserved %d, in flight %d; want 1, 9, 0 and 0", got.SuccessfulCalls, got.RemainingCalls, got.ReservedCalls, got.InFlight)
	}
}

// TestSQLiteGroupEndsCallsFirst: in one group, calls end before new ones
// are reserved (any order of concurrent writes is theirs), so a reserve
// sees the slot a settle of the same group gives back; and a key with
// several settles in one group is charged for each.
func TestSQLiteGroupEndsCallsFirst(t *testing.T) {
	s := openTestSQLite(t)
	ctx := context.Background()
	k := createTestKey(t, s, 10)
	one := int64(1)
	if _, err := s.ChangeKey(ctx, quota.KeyRef{ID: k.ID}, quota.KeyChange{MaxConcurrent: &one}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	call := quota.ReserveRequest{KeyHash: k.Hash, BatchSize: 1, Owner: "t", Start: now, Deadline: now.Add(time.Minute)}
	first, err := s.Reserve(ctx, call)
	if err != nil || !first.Admitted() {
		t.Fatalf("reserve: %+v, %v", first, err)
	}
	if a, err := s.Reserve(ctx, call); err != nil || a.Admitted() {
		t.Fatalf("a second call in flight of a key with maxConcurrent 1: %+v, %v; want refused", a, err)
	}
	end := func(a quota.Admission) callWrite {
		return callWrite{kind: settleWrite, outcome: quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: 200, At: now, Day: "2026-11-25"}}
	}
	results := make([]callResult, 2)
	if err := s.commitGroup(ctx, []callWrite{{kind: reserveWrite, reserve: call}, end(first)}, results); err != nil {
		t.Fatal(err)
	}
	if !results[1].changed || results[0].callID == 0 {
		t.Fatalf("group [reserve, settle]: %+v; want the settle applied and the reserve admitted", results)
	}
	second := quota.Admission{CallID: results[0].callID, KeyID: results[0].keyID, Cost: results[0].cost}
	if _, err := s.ChangeKey(ctx, quota.KeyRef{ID: k.ID}, quota.KeyChange{ClearMaxConcurrent: true}); err != nil {
		t.Fatal(err)
	}
	third, err := s.Reserve(ctx, call)
	if err != nil || !third.Admitted() {
		t.Fatalf("reserve: %+v, %v", third, err)
	}
	results = make([]callResult, 2)
	if err := s.commitGroup(ctx, []callWrite{end(second), end(third)}, results); err != nil || !results[0].changed || !results[1].changed {
		t.Fatalf("group of two settles of one key: %+v, %v", results, err)
	}
	got, _ := s.KeyByHash(ctx, k.Hash)
	if got.SuccessfulCalls != 3 || got.RemainingCalls != 7 || got.ReservedCalls != 0 || got.UsedUnits != 3 || got.InFlight != 0 {
		t.Errorf("after three settled calls: successful %d, remaining %d, reserved %d, used %d, in flight %d; want 3, 7, 0, 3 and 0", got.SuccessfulCalls, got.RemainingCalls, got.ReservedCalls, got.UsedUnits, got.InFlight)
	}
	if got.TotalCalls != 3 {
		t.Errorf("total calls %d; want 3 (the refused call is not counted)", got.TotalCalls)
	}
}
