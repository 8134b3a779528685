package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestMigrateKeepsBooks: a database written by the first schema (keys,
// settled, released and open calls, the daily history) migrates to the
// current one with every count kept, and its books balance afterwards.
func TestMigrateKeepsBooks(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		if err := store.MigrateTo(ctx, url, 1); err != nil {
			t.Fatal(err)
		}
		kind, dsn, _ := store.Parse(url)
		driver, ph, ts := "sqlite", "?", func(t time.Time) any { return t.UnixMicro() }
		if kind == store.PostgresKind {
			driver, ph, ts = "pgx", "$", func(t time.Time) any { return t }
		}
		db, err := sql.Open(driver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		arg := func(n int) string {
			if ph == "?" {
				return "?"
			}
			return fmt.Sprintf("$%d", n)
		}
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := db.ExecContext(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		day := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
		// Key 1: 10 given, set to 12 later, 3 successes, one failure, one
		// in flight. Key 2: 5 given, unused.
		insertKey := fmt.Sprintf(`INSERT INTO api_key_stats (id, key_hash, key_prefix, name, total_calls, successful_calls, remaining_calls, reserved_calls, created_at, updated_at)
			VALUES (%s, %s, 'fx_old', %s, %s, %s, %s, %s, %s, %s)`, arg(1), arg(2), arg(3), arg(4), arg(5), arg(6), arg(7), arg(8), arg(9))
		exec(insertKey, 1, "hash-1", "old one", 5, 3, 9, 1, ts(day), ts(day))
		exec(insertKey, 2, "hash-2", "old two", 0, 0, 5, 0, ts(day), ts(day))
		insertCall := fmt.Sprintf(`INSERT INTO calls (key_id, cost, state, owner, request_id, status, started_at, deadline, finished_at)
			VALUES (1, 1, %s, 'old', 'r', %s, %s, %s, %s)`, arg(1), arg(2), arg(3), arg(4), arg(5))
		for i, state := range []string{"settled", "settled", "settled", "released", "open"} {
			at := day.Add(time.Duration(i) * time.Minute)
			var finished any = ts(at)
			if state == "open" {
				finished = nil
			}
			exec(insertCall, state, 200, ts(at), ts(at.Add(time.Hour)), finished)
		}
		exec(fmt.Sprintf(`INSERT INTO daily_generations (day, generations) VALUES (%s, 3)`, arg(1)), "2026-11-20")

		if err := store.Migrate(ctx, url); err != nil {
			t.Fatalf("migrate from the first schema: %v", err)
		}
		s, err := store.Open(ctx, url, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		svc := quota.NewService(quota.Options{Ledger: s, Keys: s, Usage: s})
		bad, err := svc.Books(ctx)
		if err != nil || len(bad) != 0 {
			t.Errorf("books after migrating: %v, %v; want them balanced", bad, err)
		}
		k, err := s.KeyByID(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if k.TotalCalls != 5 || k.SuccessfulCalls != 3 || k.RemainingCalls != 9 || k.ReservedCalls != 1 || k.UsedUnits != 3 ||
			k.LastUsedAt == nil || !k.LastUsedAt.Equal(day.Add(4*time.Minute)) || k.Disabled || k.ExpiresAt != nil {
			t.Errorf("key 1 after migrating: %+v", k)
		}
		daily, err := s.KeyDaily(ctx, 1, "2026-11-01")
		if err != nil || len(daily) != 1 || daily[0] != (quota.KeyDay{Date: "2026-11-20", Generations: 3, Units: 3}) {
			t.Errorf("key 1's daily history: %v, %v; want 3 on 2026-11-20", daily, err)
		}
		n := 0
		if err := s.Calls(ctx, quota.CallFilter{KeyID: 1}, func(quota.Call) error { n++; return nil }); err != nil || n != 5 {
			t.Errorf("usage log of key 1: %d calls, %v; want the 5 old calls", n, err)
		}
	})
}
