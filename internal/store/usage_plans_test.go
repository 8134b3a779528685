package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// usageFilter is a usage-log filter with how each store must read calls
// for it: PostgreSQL through the index pg (none given: left to its
// costs), SQLite by the plan step sqlite, sorting only when sorts.
type usageFilter struct {
	name       string
	f          quota.CallFilter
	pg, sqlite string
	sorts      bool
}

// usageFilters: one key's calls (a page, a page after a cursor, a time
// window, one outcome) by calls_key; every key's calls in a time window
// (the CSV) by calls_started; a page of them newest first along the
// primary key, which finds a recent window's page at once instead of
// sorting the window.
func usageFilters() []usageFilter {
	from := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 7)
	const byKey = "SEARCH c USING INDEX calls_key (key_id=?"
	return []usageFilter{
		{"one key", quota.CallFilter{KeyID: 51, Limit: 100}, "calls_key", byKey, false},
		{"one key after a cursor", quota.CallFilter{KeyID: 51, Before: 40_000, Limit: 100}, "calls_key", byKey, false},
		{"one key in a week", quota.CallFilter{KeyID: 51, From: &from, To: &to}, "calls_key", byKey, false},
		{"one key's failures", quota.CallFilter{KeyID: 51, Outcome: quota.OutcomeFailed, Limit: 100}, "calls_key", byKey, false},
		{"every key in a week", quota.CallFilter{From: &from, To: &to}, "calls_started", "SEARCH c USING INDEX calls_started (", true},
		{"a page of every key in a week", quota.CallFilter{From: &from, To: &to, Limit: 50}, "", "SCAN c", false},
	}
}

// TestUsagePlansSQLite checks how SQLite reads calls for the usage log.
// SQLite plans a statement before its values are bound, so a condition
// like `(? = 0 OR key_id = ?)` made it read every call, newest first, for
// any key.
func TestUsagePlansSQLite(t *testing.T) {
	db := sqliteDB(t)
	for _, u := range usageFilters() {
		t.Run(u.name, func(t *testing.T) {
			q, args := store.CallsQuery(u.f, store.SQLiteKind)
			plan := sqlitePlan(t, db, q, args...)
			step := func(prefix string) bool {
				return slices.ContainsFunc(plan, func(d string) bool { return strings.HasPrefix(d, prefix) })
			}
			if !step(u.sqlite) || step("USE TEMP B-TREE") != u.sorts || u.sqlite != "SCAN c" && step("SCAN c") {
				t.Errorf("plan of %s:\n%s\nwant the step %q, sorting: %v", q, strings.Join(plan, "\n"), u.sqlite, u.sorts)
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

// sqliteDB opens a new SQLite store's database file for the plans.
func sqliteDB(t *testing.T) *sql.DB {
	t.Helper()
	databaseURL := storetest.URL(t, store.SQLiteKind)
	storetest.Open(t, databaseURL)
	db, err := sql.Open("sqlite", strings.TrimPrefix(databaseURL, "sqlite:"))
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
		if u.pg == "" {
			continue
		}
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
			if !slices.Equal(indexes, []string{u.pg}) || seqScans > 0 {
				t.Errorf("%s reads calls through indexes %v and %d sequential scans, want %s alone; plan:\n%s",
					q, indexes, seqScans, u.pg, outline)
			}
		})
	}
}

// TestUsageUnpreparedPostgres checks that Felix sends the usage log's
// statements unprepared, which TestUsagePlansPostgres relies on: a
// statement pgx prepares may get a generic plan from its sixth run on.
func TestUsageUnpreparedPostgres(t *testing.T) {
	s := storetest.OpenWith(t, storetest.URL(t, store.PostgresKind), store.Options{MaxConns: 1})
	ctx := context.Background()
	for range 7 {
		if err := s.Calls(ctx, quota.CallFilter{KeyID: 1, Limit: 10}, func(quota.Call) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	n, err := store.PreparedUsageStatements(ctx, s)
	if err != nil || n != 0 {
		t.Errorf("%d usage statements prepared in the store's session (%v), want none", n, err)
	}
}

// TestUsageWindowPagesSQLite: a page of every key's calls in a time window
// is read along the primary key from the newest call (or the cursor) down,
// unless the window lies so far back that more than four times its calls
// come after it: then SQLite sorts the window, found by calls_started,
// instead of reading every newer call. Either way the page holds the same
// calls.
func TestUsageWindowPagesSQLite(t *testing.T) {
	ctx := context.Background()
	databaseURL := storetest.URL(t, store.SQLiteKind)
	s := storetest.Open(t, databaseURL)
	k, err := s.CreateKey(ctx, quota.NewKey{Hash: "h", Prefix: "fx_h", Remaining: 1, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", strings.TrimPrefix(databaseURL, "sqlite:"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// 30 days of 1,000 calls each, ids in the order of their starts.
	const perDay = 1000
	day0 := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	if _, err := db.Exec(`
		WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 30 * ?2 - 1)
		INSERT INTO calls (key_id, cost, state, owner, status, started_at, deadline, finished_at)
		SELECT ?1, 1, 'settled', 'test', 200, ?3 + i * (86400000000 / ?2), ?3 + i * (86400000000 / ?2) + 60000000, ?3 + i * (86400000000 / ?2) + 1000
		FROM n`, k.ID, perDay, day0.UnixMicro()); err != nil {
		t.Fatal(err)
	}
	// The estimate is three searches, whatever the history's length.
	for _, step := range sqlitePlan(t, db, store.SQLiteWindowIDs, day0.UnixMicro(), day0.UnixMicro()) {
		if strings.HasPrefix(step, "SCAN ") && step != "SCAN CONSTANT ROW" {
			t.Errorf("plan of %s: a step %q, want only searches", store.SQLiteWindowIDs, step)
		}
	}
	at := func(days float64) *time.Time {
		t := day0.Add(time.Duration(days * float64(24*time.Hour)))
		return &t
	}
	for _, c := range []struct {
		name     string
		f        quota.CallFilter
		byWindow bool
	}{
		{"the last five days", quota.CallFilter{From: at(25), To: at(30), Limit: 50}, false},
		{"days 1 to 3", quota.CallFilter{From: at(1), To: at(3), Limit: 50}, true},
		{"days 1 to 3 after a cursor in them", quota.CallFilter{From: at(1), To: at(3), Before: 2500, Limit: 50}, false},
		{"days 1 to 3 after a cursor on day 20", quota.CallFilter{From: at(1), To: at(3), Before: 20 * perDay, Limit: 50}, true},
		{"days 20 to 24", quota.CallFilter{From: at(20), To: at(24), Limit: 50}, false},
		{"everything before day 2", quota.CallFilter{To: at(2), Limit: 50}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, args, err := store.SQLiteCallsQuery(ctx, s, c.f)
			if err != nil {
				t.Fatal(err)
			}
			plan := sqlitePlan(t, db, q, args...)
			step := func(prefix string) bool {
				return slices.ContainsFunc(plan, func(d string) bool { return strings.HasPrefix(d, prefix) })
			}
			byWindow := step("SEARCH c USING INDEX calls_started (")
			byID := step("SCAN c") || step("SEARCH c USING INTEGER PRIMARY KEY (rowid<?)")
			if byWindow != c.byWindow || byID == byWindow || byID && step("USE TEMP B-TREE") {
				t.Errorf("plan of %s:\n%s\nwant the window sorted: %v", q, strings.Join(plan, "\n"), c.byWindow)
			}
			var got []int64
			if err := s.Calls(ctx, c.f, func(call quota.Call) error { got = append(got, call.ID); return nil }); err != nil {
				t.Fatal(err)
			}
			var want []int64
			from := int64(math.MinInt64)
			if c.f.From != nil {
				from = c.f.From.UnixMicro()
			}
			rows, err := db.Query(`SELECT id FROM calls NOT INDEXED WHERE started_at >= ? AND started_at < ? AND (? = 0 OR id < ?) ORDER BY id DESC LIMIT ?`,
				from, c.f.To.UnixMicro(), c.f.Before, c.f.Before, c.f.Limit)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				want = append(want, id)
			}
			if len(want) != c.f.Limit || !slices.Equal(got, want) {
				t.Errorf("page %v, want %v", got, want)
			}
		})
	}
}
