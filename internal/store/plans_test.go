package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// historyCalls is how many settled calls TestPlansWithHistory writes: a
// year of a small gateway's traffic.
const historyCalls = 1_000_000

// TestPlansWithHistory checks, on PostgreSQL, that the statements of the
// hot path and of the orphan sweeps keep their indexes once calls holds a
// long history and has been analyzed: settle and release find their calls
// by the primary key, never by the open calls' index (whose dead entries
// pile up until VACUUM), and the sweeps find open calls by that index,
// never by reading the table. It checks the plans PostgreSQL makes for
// the given values (custom) and for any values (generic, which a prepared
// statement may switch to), for one call and for a full group.
func TestPlansWithHistory(t *testing.T) {
	if testing.Short() {
		t.Skipf("writes %d calls; skipped in -short mode", historyCalls)
	}
	conn := planConn(t)
	ctx := context.Background()
	// A year of settled calls and a few in flight, then the statistics
	// autovacuum would gather.
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO api_key_stats (key_hash, key_prefix, remaining_calls, total_calls, successful_calls, reserved_calls, created_at, updated_at)
		  VALUES ('h', 'fx_h', 100, $1::bigint + 100, $1::bigint, 100, now(), now())`, []any{historyCalls}},
		{`INSERT INTO calls (key_id, cost, state, owner, request_id, status, started_at, deadline, finished_at)
		  SELECT 1, 1, 'settled', 'old', '', 200, t, t + interval '150 seconds', t + interval '1 second'
		  FROM (SELECT now() - interval '1 year' + g * interval '31 seconds' AS t FROM generate_series(1, $1::bigint) g) s`, []any{historyCalls}},
		{`INSERT INTO calls (key_id, cost, owner, request_id, started_at, deadline)
		  SELECT 1, 1, 'live', '', now(), now() + interval '150 seconds' FROM generate_series(1, 100)`, nil},
		{`ANALYZE calls`, nil},
	} {
		if _, err := conn.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", strings.Join(strings.Fields(q.sql), " "), err)
		}
	}

	one, group := "ARRAY[1000]", "ARRAY["+strings.Repeat("1000,", 255)+"1000]"
	args := map[string][]string{
		"settle":                            {one + "::bigint[]", "ARRAY[200]", "ARRAY[now()]", "ARRAY[current_date]", "ARRAY['t']"},
		"settle a group":                    {group + "::bigint[]", strings.Replace(group, "1000", "200", -1), "array_fill(now(), ARRAY[256])", "array_fill(current_date, ARRAY[256])", "array_fill('t'::text, ARRAY[256])"},
		"release":                           {one + "::bigint[]", "ARRAY[502]", "ARRAY[now()]", "ARRAY['t']"},
		"release a group":                   {group + "::bigint[]", strings.Replace(group, "1000", "502", -1), "array_fill(now(), ARRAY[256])", "array_fill('t'::text, ARRAY[256])"},
		"lock the keys of expired calls":    {"now()"},
		"release expired calls":             {"now()"},
		"lock the keys of an owner's calls": {"now()", "'old'"},
		"release an owner's calls":          {"now()", "'old'"},
	}
	checkPlans(t, conn, args)
}

// planConn opens a store on PostgreSQL (a schema of its own) and returns
// a connection to it, closed when the test ends.
func planConn(t *testing.T) *pgx.Conn {
	t.Helper()
	databaseURL := storetest.URL(t, store.PostgresKind)
	storetest.Open(t, databaseURL)
	conn, err := pgx.Connect(context.Background(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// callsIndexes are the indexes of calls each statement of
// store.PGStatements may use (its group form too): it must use every one
// of them and never read calls whole.
var callsIndexes = map[string][]string{
	"settle": {"calls_pkey"}, "release": {"calls_pkey"},
	"lock the keys of expired calls": {"calls_unfinished"}, "release expired calls": {"calls_pkey", "calls_unfinished"},
	"lock the keys of an owner's calls": {"calls_unfinished"}, "release an owner's calls": {"calls_pkey", "calls_unfinished"},
}

// checkPlans checks, for each statement of store.PGStatements (and its
// " a group" form) that args has values for, that its custom and generic
// plans read calls through callsIndexes only. Each plan is made in a
// transaction that first runs settings, as a group's does.
func checkPlans(t *testing.T, conn *pgx.Conn, args map[string][]string, settings ...string) {
	t.Helper()
	ctx := context.Background()
	for _, st := range store.PGStatements {
		for _, name := range []string{st.Name, st.Name + " a group"} {
			a, ok := args[name]
			if !ok {
				continue
			}
			for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
				t.Run(name+"/"+mode, func(t *testing.T) {
					for _, q := range append([]string{"BEGIN"}, settings...) {
						if _, err := conn.Exec(ctx, q); err != nil {
							t.Fatalf("%s: %v", q, err)
						}
					}
					defer conn.Exec(ctx, "ROLLBACK")
					want := callsIndexes[st.Name]
					indexes, seqScans, outline := callsAccess(t, explain(t, conn, st.SQL, st.Params, a, mode))
					if !slices.Equal(indexes, want) || seqScans > 0 {
						t.Errorf("reads calls through indexes %v and %d sequential scans, want %v and none; plan:\n%s",
							indexes, seqScans, want, outline)
					}
				})
			}
		}
	}
}

// explain returns the JSON plan PostgreSQL makes for statement sql run
// with args (SQL expressions) under plan_cache_mode mode.
func explain(t *testing.T, conn *pgx.Conn, sql string, params, args []string, mode string) string {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		fmt.Sprintf(`PREPARE plan_me (%s) AS %s`, strings.Join(params, ", "), sql),
		`SET plan_cache_mode = ` + mode,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	defer conn.Exec(ctx, `DEALLOCATE plan_me`)
	var plan string
	q := fmt.Sprintf(`EXPLAIN (FORMAT JSON) EXECUTE plan_me(%s)`, strings.Join(args, ", "))
	if err := conn.QueryRow(ctx, q).Scan(&plan); err != nil {
		t.Fatalf("EXPLAIN EXECUTE: %v", err)
	}
	return plan
}

// callsAccess returns, sorted, the indexes of calls a JSON plan uses, how
// many times it reads calls whole, and the plan's outline.
func callsAccess(t *testing.T, plan string) (indexes []string, seqScans int, outline string) {
	t.Helper()
	type node struct {
		NodeType string `json:"Node Type"`
		Relation string `json:"Relation Name"`
		Index    string `json:"Index Name"`
		Plans    []node `json:"Plans"`
	}
	var root []struct{ Plan node }
	if err := json.Unmarshal([]byte(plan), &root); err != nil || len(root) != 1 {
		t.Fatalf("plan %s: %v", plan, err)
	}
	used := map[string]bool{}
	var out strings.Builder
	var walk func(n node, depth int)
	walk = func(n node, depth int) {
		fmt.Fprintf(&out, "%s%s %s %s\n", strings.Repeat("  ", depth), n.NodeType, n.Relation, n.Index)
		if strings.HasPrefix(n.Index, "calls_") {
			used[n.Index] = true
		}
		if n.Relation == "calls" && n.Index == "" && strings.Contains(n.NodeType, "Scan") && n.NodeType != "Bitmap Heap Scan" {
			seqScans++
		}
		for _, c := range n.Plans {
			walk(c, depth+1)
		}
	}
	walk(root[0].Plan, 0)
	return slices.Sorted(maps.Keys(used)), seqScans, out.String()
}

// TestPlansWhenNew checks, on PostgreSQL, that the statements of the hot
// path and of the orphan sweeps use the same indexes on a new database,
// where calls is small and has never been analyzed: there a sequential
// scan looks cheapest, and a generic plan made then would be kept while
// the table grows. Settle and release get there because groups set
// store.PGByIndex in their transaction (the test sets it too); the sweeps
// match their partial index without it.
func TestPlansWhenNew(t *testing.T) {
	conn := planConn(t)
	for _, q := range []string{
		`INSERT INTO api_key_stats (key_hash, key_prefix, remaining_calls, created_at, updated_at) VALUES ('h', 'fx_h', 100, now(), now())`,
		`INSERT INTO calls (key_id, cost, owner, request_id, started_at, deadline) SELECT 1, 1, 'live', '', now(), now() + interval '150 seconds' FROM generate_series(1, 20)`,
	} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	checkPlans(t, conn, map[string][]string{
		"settle":                            {"ARRAY[5,6,7]::bigint[]", "ARRAY[200,200,200]", "array_fill(now(), ARRAY[3])", "array_fill(current_date, ARRAY[3])", "array_fill('t'::text, ARRAY[3])"},
		"release":                           {"ARRAY[5,6,7]::bigint[]", "ARRAY[502,502,502]", "array_fill(now(), ARRAY[3])", "array_fill('t'::text, ARRAY[3])"},
		"lock the keys of expired calls":    {"now()"},
		"release expired calls":             {"now()"},
		"lock the keys of an owner's calls": {"now()", "'live'"},
		"release an owner's calls":          {"now()", "'live'"},
	}, store.PGByIndex)
}
