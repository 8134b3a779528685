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
	bad := callWrite{kind: releaseWrite, outcome: quota.Outcome{CallID: badCall, KeyID: k.ID, At: now}}
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
	if err := s.Settle(ctx, quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Status: 200, At: now, Day: "2026-11-25"}); err != nil {
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
		if err := s.Settle(ctx, quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Status: 200, At: time.Now(), Day: "2026-11-25"}); err != nil {
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
