package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// usageFilters are usage-log filters with the index PostgreSQL must read
// calls through, never reading them whole: one key's calls (a page, a
// page after a cursor, a time window, one outcome) by calls_key, and a
// time window of every key by calls_started. SQLite finds one key's
// calls by key_calls and its newest ones by the primary key.
func usageFilters() []struct {
	name  string
	f     quota.CallFilter
	index string
} {
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 7)
	return []struct {
		name  string
		f     quota.CallFilter
		index string
	}{
		{"one key", quota.CallFilter{KeyID: 51, Limit: 100}, "calls_key"},
		{"one key after a cursor", quota.CallFilter{KeyID: 51, Before: 40_000, Limit: 100}, "calls_key"},
		{"one key in a week", quota.CallFilter{KeyID: 51, From: &from, To: &to}, "calls_key"},
		{"one key's failures", quota.CallFilter{KeyID: 51, Outcome: quota.OutcomeFailed, Limit: 100}, "calls_key"},
		{"every key in a week", quota.CallFilter{From: &from, To: &to}, "calls_started"},
	}
}

// TestUsagePlansSQLite checks how SQLite finds the usage log's calls. It
// plans a statement before its values are bound, so a condition like
// `(? = 0 OR key_id = ?)` made it read every call, newest first, for any
// key. One key's calls must come from key_calls and, newer than its mark,
// from the primary key, both in order (no sort of a key's whole history,
// no read of every key's calls); a time window of every key from
// calls_started.
func TestUsagePlansSQLite(t *testing.T) {
	db := sqliteDB(t)
	for _, u := range usageFilters() {
		t.Run(u.name, func(t *testing.T) {
			q, args := store.CallsQuery(u.f, store.SQLiteKind)
			plan := sqlitePlan(t, db, q, args...)
			want := []string{"SEARCH kc USING PRIMARY KEY (key_id=? AND id<?)", "SEARCH c USING INTEGER PRIMARY KEY (rowid>?"}
			forbidden := []string{"SCAN c", "SEARCH c USING INDEX", "USE TEMP B-TREE FOR ORDER BY"}
			if u.f.KeyID == 0 {
				want, forbidden = []string{"SEARCH c USING INDEX calls_started ("}, []string{"SCAN c"}
			}
			for _, w := range want {
				if !slices.ContainsFunc(plan, func(d string) bool { return strings.HasPrefix(d, w) }) {
					t.Errorf("plan of %s:\n%s\nwant a step %q", q, strings.Join(plan, "\n"), w)
				}
			}
			for _, f := range forbidden {
				if slices.ContainsFunc(plan, func(d string) bool { return strings.HasPrefix(d, f) }) {
					t.Errorf("plan of %s:\n%s\nwant no step %q", q, strings.Join(plan, "\n"), f)
				}
			}
		})
	}
}

// TestSweepPlansSQLite checks that SQLite's orphan sweeps find open calls
// by calls_open, the partial index of open calls, and never through
// calls_started, which would read every call of the history.
func TestSweepPlansSQLite(t *testing.T) {
	db := sqliteDB(t)
	for name, q := range store.SQLiteSweeps {
		t.Run(name, func(t *testing.T) {
			plan := sqlitePlan(t, db, q, time.Now().UnixMicro(), "owner")
			if len(plan) != 1 || !strings.Contains(plan[0], " USING INDEX calls_open") && !strings.Contains(plan[0], " USING COVERING INDEX calls_open") {
				t.Errorf("plan of %s:\n%s\nwant calls read by calls_open alone", q, strings.Join(plan, "\n"))
			}
		})
	}
}

// sqliteDB opens the database file of a SQLite store, a new one when
// no URL is given.
func sqliteDB(t *testing.T, databaseURL ...string) *sql.DB {
	t.Helper()
	if len(databaseURL) == 0 {
		databaseURL = []string{storetest.URL(t, store.SQLiteKind)}
		storetest.Open(t, databaseURL[0])
	}
	db, err := sql.Open("sqlite", strings.TrimPrefix(databaseURL[0], "sqlite:"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// sqlitePlan returns the lines of SQLite's plan for q with args.
func sqlitePlan(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// TestUsagePlansPostgres checks the same on PostgreSQL for a key with few
// calls among many keys' (a table analyzed): Felix sends the usage log's
// statements unprepared, so each is planned for its values (custom); a
// generic plan made for common keys would read calls from the newest on,
// past every other key's, and that costs most for the keys with fewest
// calls.
func TestUsagePlansPostgres(t *testing.T) {
	conn := planConn(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO api_key_stats (key_hash, key_prefix, remaining_calls, created_at, updated_at)
		 SELECT 'h' || g, 'fx_' || g, 100, now(), now() FROM generate_series(1, 51) g`,
		`INSERT INTO calls (key_id, cost, state, owner, request_id, status, started_at, deadline, finished_at)
		 SELECT 1 + g % 50, 1, 'settled', 'old', '', 200, t, t + interval '150 seconds', t + interval '1 second'
		 FROM (SELECT g, timestamptz '2026-10-01' + g * interval '60 seconds' AS t FROM generate_series(1, 100000) g) s`,
		`INSERT INTO calls (key_id, cost, state, owner, request_id, status, started_at, deadline, finished_at)
		 SELECT 51, 1, 'released', 'old', '', 502, t, t + interval '150 seconds', t + interval '1 second'
		 FROM (SELECT timestamptz '2026-11-02' + g * interval '1 hour' AS t FROM generate_series(1, 20) g) s`,
		`ANALYZE calls`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", strings.Join(strings.Fields(q), " "), err)
		}
	}
	for _, u := range usageFilters() {
		q, args := store.CallsQuery(u.f, store.PostgresKind)
		var params, values []string
		for _, a := range args {
			switch a := a.(type) {
			case int64, int:
				params, values = append(params, "bigint"), append(values, fmt.Sprint(a))
			case string:
				params, values = append(params, "text"), append(values, "'"+a+"'")
			case time.Time:
				params, values = append(params, "timestamptz"), append(values, "'"+a.Format(time.RFC3339)+"'")
			default:
				t.Fatalf("argument %v of type %T", a, a)
			}
		}
		t.Run(u.name, func(t *testing.T) {
			indexes, seqScans, outline := callsAccess(t, explain(t, conn, q, params, values, "force_custom_plan"))
			if !slices.Equal(indexes, []string{u.index}) || seqScans > 0 {
				t.Errorf("%s reads calls through indexes %v and %d sequential scans, want %s alone; plan:\n%s",
					q, indexes, seqScans, u.index, outline)
			}
		})
	}
}

// TestKeyCallsMark checks that SQLite lists one key's calls exactly
// whether they are in key_calls already or newer than its mark: the same
// calls, newest first, none twice, as the usage log of every key shows
// them (which never reads key_calls), on every page.
func TestKeyCallsMark(t *testing.T) {
	databaseURL := storetest.URL(t, store.SQLiteKind)
	s := storetest.Open(t, databaseURL)
	defer store.SetKeyCallsEvery(time.Second)
	ctx := context.Background()
	newKey(t, s, "a", 1000)
	newKey(t, s, "b", 1000)
	calls := func(n int) {
		for i := range n {
			hash := []string{"a", "b", "a"}[i%3]
			a := reserve(t, s, call(hash, "o", t0))
			if err := s.Settle(ctx, ended(a, 200)); err != nil {
				t.Fatal(err)
			}
		}
	}
	store.SetKeyCallsEvery(0) // every group marks all calls
	calls(30)
	store.SetKeyCallsEvery(time.Hour) // no group marks any more
	calls(20)

	db := sqliteDB(t, databaseURL)
	var upto, indexed, total int64
	if err := db.QueryRow(`SELECT (SELECT id FROM key_calls_upto), (SELECT count(*) FROM key_calls), (SELECT count(*) FROM calls)`).Scan(&upto, &indexed, &total); err != nil {
		t.Fatal(err)
	}
	if indexed != 30 || total != 50 || upto < 30 {
		t.Fatalf("key_calls holds %d of %d calls, up to %d; want the first 30", indexed, total, upto)
	}

	var all []quota.Call
	if err := s.Calls(ctx, quota.CallFilter{}, func(c quota.Call) error { all = append(all, c); return nil }); err != nil {
		t.Fatal(err)
	}
	keyA := getKey(t, s, "a").ID
	var want []int64
	for _, c := range all {
		if c.KeyID == keyA {
			want = append(want, c.ID)
		}
	}
	for _, limit := range []int{0, 1, 7, 100} {
		var got []int64
		f := quota.CallFilter{KeyID: keyA, Limit: limit}
		for {
			var page []int64
			if err := s.Calls(ctx, f, func(c quota.Call) error { page = append(page, c.ID); return nil }); err != nil {
				t.Fatal(err)
			}
			got = append(got, page...)
			if limit == 0 || len(page) < limit {
				break
			}
			f.Before = page[len(page)-1]
		}
		if !slices.Equal(got, want) {
			t.Errorf("limit %d: key a's calls %v, want %v", limit, got, want)
		}
	}

	// Pruned calls leave key_calls with their rows.
	if n, err := s.PruneCalls(ctx, t0.Add(time.Second), 1000); err != nil || n != 50 {
		t.Fatalf("PruneCalls: %d, %v; want 50 pruned", n, err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM key_calls`).Scan(&indexed); err != nil || indexed != 0 {
		t.Errorf("key_calls holds %d rows (%v) after every call was pruned, want 0", indexed, err)
	}
}
