package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestPostgresTurnAfterFailedGroup: a group that fails on PostgreSQL gives
// its turn up (the turn is a session-level lock, which a rollback alone
// would keep), so the groups of other processes are not stopped by it,
// and the store goes on writing.
func TestPostgresTurnAfterFailedGroup(t *testing.T) {
	url := storetest.URL(t, store.PostgresKind)
	s := storetest.Open(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k, err := s.CreateKey(ctx, quota.NewKey{Hash: "turn", Prefix: "turn", Remaining: 10, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	settle := func(a quota.Admission, day string) error {
		return s.Settle(ctx, quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: 200, At: time.Now(), Day: day})
	}
	reserve := func() quota.Admission {
		t.Helper()
		now := time.Now()
		a, err := s.Reserve(ctx, quota.ReserveRequest{KeyHash: "turn", BatchSize: 1, Owner: "t", Start: now, Deadline: now.Add(time.Minute)})
		if err != nil || !a.Admitted() {
			t.Fatalf("reserve: %+v, %v", a, err)
		}
		return a
	}
	a := reserve()
	// A day PostgreSQL cannot read as a date fails the settle's statement,
	// and with it the group's transaction.
	if err := settle(a, "not a day"); err == nil {
		t.Fatal("a settle with an unreadable day succeeded")
	}

	// Another session (another Felix process) can take the turn at once.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var took bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, 'calls'::regclass::oid::int)`, int32(store.TurnLock)).Scan(&took); err != nil {
		t.Fatal(err)
	}
	if !took {
		t.Fatal("after a failed group, a session still holds the turn: every other process's group would wait for it")
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}

	// And this store goes on: the call settles, another one too.
	if err := settle(a, "2026-12-01"); err != nil {
		t.Fatalf("settle after the failed group: %v", err)
	}
	if err := settle(reserve(), "2026-12-01"); err != nil {
		t.Fatalf("settle of a new call: %v", err)
	}
	got, err := s.KeyByID(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.SuccessfulCalls != 2 || got.RemainingCalls != 8 || got.ReservedCalls != 0 {
		t.Errorf("key after two settled calls: successful %d, remaining %d, reserved %d; want 2, 8, 0", got.SuccessfulCalls, got.RemainingCalls, got.ReservedCalls)
	}
}
