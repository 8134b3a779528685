package e2e

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver

	"github.com/felix-gateway/felix/internal/store"

	"github.com/felix-gateway/felix/internal/testwait"
)

// book is what the test knows about one key: what the operator did to it
// and what its clients saw.
type book struct {
	name    string
	key     string
	id      int64
	initial int64
	changes atomic.Int64 // Σ admin changes (a set counts as new − old)

	seen200     atomic.Int64 // 200s from the target, whole body received
	seen429     atomic.Int64 // 429 quota_exhausted
	seenTarget  atomic.Int64 // the target's own non-2xx, relayed
	lost        atomic.Int64 // transport errors: the answer may have been settled
	settleFail  atomic.Int64 // 503: the target answered 2xx but the settle was not confirmed
	storeDown   atomic.Int64 // 503 store_unavailable or store_read_only before forwarding
	noTarget    atomic.Int64 // 503 queue_full, queue_timeout or no_target_available: released
	refused     atomic.Int64 // connection refused: never reached felix
	unexpected  atomic.Int64 // anything else
	mu          sync.Mutex
	unexpectedS []string // the first unexpected answers
	settleIDs   []string // request IDs of the settle-failed answers
	tallied     int64    // answers already counted in the summary
}

// record counts one answer.
func (b *book) record(a answer) {
	switch {
	case a.refused():
		b.refused.Add(1)
	case a.err != nil:
		b.lost.Add(1)
	case a.status == http.StatusOK && a.target:
		b.seen200.Add(1)
	case a.target:
		b.seenTarget.Add(1)
	case a.status == http.StatusTooManyRequests && a.code == "quota_exhausted":
		b.seen429.Add(1)
	case a.settleFailed():
		b.settleFail.Add(1)
		b.mu.Lock()
		b.settleIDs = append(b.settleIDs, a.reqID)
		b.mu.Unlock()
	case a.status == http.StatusServiceUnavailable && (a.code == "store_unavailable" || a.code == "store_read_only"):
		b.storeDown.Add(1)
	case a.status == http.StatusServiceUnavailable && a.retryAfter != "" &&
		(a.code == "queue_full" || a.code == "queue_timeout" || a.code == "no_target_available"):
		b.noTarget.Add(1)
	default:
		b.unexpected.Add(1)
		b.mu.Lock()
		if len(b.unexpectedS) < 5 {
			b.unexpectedS = append(b.unexpectedS, a.String())
		}
		b.mu.Unlock()
	}
}

// uncertain counts the requests whose charge the client cannot know.
func (b *book) uncertain() int64 { return b.lost.Load() + b.settleFail.Load() }

func (b *book) String() string {
	return fmt.Sprintf("key %s: 200=%d 429=%d target-errors=%d lost=%d settle-failed=%d store-down=%d no-target=%d refused=%d unexpected=%d",
		b.name, b.seen200.Load(), b.seen429.Load(), b.seenTarget.Load(), b.lost.Load(), b.settleFail.Load(),
		b.storeDown.Load(), b.noTarget.Load(), b.refused.Load(), b.unexpected.Load())
}

// keyJSON is the part of felix's key statistics the tests read.
type keyJSON struct {
	ID              int64  `json:"id"`
	APIKey          string `json:"apiKey"`
	SuccessfulCalls int64  `json:"successfulCalls"`
	RemainingCalls  int64  `json:"remainingCalls"`
}

// adminDo sends an admin request with a JSON body and decodes the answer.
func adminDo(hc *http.Client, method, url string, body any, want int) (keyJSON, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, url, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return keyJSON{}, err
	}
	defer resp.Body.Close()
	var k keyJSON
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil {
		return k, fmt.Errorf("%s %s: status %d, bad JSON: %w", method, url, resp.StatusCode, err)
	}
	if resp.StatusCode != want {
		return k, fmt.Errorf("%s %s: status %d, want %d", method, url, resp.StatusCode, want)
	}
	return k, nil
}

// createKey creates a key with initial calls through felix's admin API.
func createKey(t testing.TB, hc *http.Client, base, name string, initial int64) *book {
	t.Helper()
	k, err := adminDo(hc, http.MethodPost, base+"/api/apikey", map[string]any{"name": name, "initialRemainingCalls": initial}, http.StatusCreated)
	if err != nil {
		t.Fatalf("create key %s: %v", name, err)
	}
	if !strings.HasPrefix(k.APIKey, "fx_") {
		t.Fatalf("create key %s: got apiKey %q, want a generated fx_ key", name, k.APIKey)
	}
	return &book{name: name, key: k.APIKey, id: k.ID, initial: initial}
}

// setRemaining sets a key's remaining calls through the admin API and
// books the change. The answer's remaining and successful counts come from
// one atomic statement, so remaining + successful after the set is known
// exactly even while calls are in flight; the change is that sum minus the
// one before.
func setRemaining(hc *http.Client, base string, b *book, n int64) (change int64, err error) {
	k, err := adminDo(hc, http.MethodPut, base+"/api/apikey", map[string]any{"apiKey": b.key, "remainingCalls": n}, http.StatusOK)
	if err != nil {
		return 0, err
	}
	before := b.initial + b.changes.Load()
	change = k.RemainingCalls + k.SuccessfulCalls - before
	b.changes.Add(change)
	return change, nil
}

// ledger reads felix's tables directly.
type ledger struct {
	db   *sql.DB
	kind store.Kind
	url  string // DATABASE_URL, for felix books
}

func openLedger(t testing.TB, databaseURL string) *ledger {
	t.Helper()
	kind, dsn, err := store.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	var db *sql.DB
	if kind == store.SQLiteKind {
		q := url.Values{"_pragma": {"busy_timeout(10000)"}}
		db, err = sql.Open("sqlite", "file:"+dsn+"?"+q.Encode())
	} else {
		db, err = sql.Open("pgx", dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(2)
	t.Cleanup(func() { db.Close() })
	return &ledger{db: db, kind: kind, url: databaseURL}
}

// param1 is the first query parameter in the store's SQL dialect.
func (l *ledger) param1() string {
	if l.kind == store.SQLiteKind {
		return "?"
	}
	return "$1"
}

func (l *ledger) count(t testing.TB, query string) int64 {
	t.Helper()
	var n int64
	if err := l.db.QueryRow(query).Scan(&n); err != nil {
		t.Fatalf("ledger: %s: %v", query, err)
	}
	return n
}

// openCalls counts reservations not yet settled or released.
func (l *ledger) openCalls(t testing.TB) int64 {
	t.Helper()
	return l.count(t, `SELECT count(*) FROM calls WHERE state = 'open'`)
}

// openCallIDs lists the calls not yet settled or released.
func (l *ledger) openCallIDs(t testing.TB) []int64 {
	t.Helper()
	rows, err := l.db.Query(`SELECT id FROM calls WHERE state = 'open' ORDER BY id`)
	if err != nil {
		t.Fatalf("ledger: open calls: %v", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("ledger: open calls: %v", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("ledger: open calls: %v", err)
	}
	return ids
}

// fates tells what became of the calls of ids: settled (a statement the
// dead process had sent completed after its death), released before
// their deadline (by their owner's restart), released at or after it (by
// the deadline rule), or still open.
type fates struct{ settled, early, late, open int64 }

func (l *ledger) fates(t testing.TB, ids []int64) fates {
	t.Helper()
	var f fates
	if len(ids) == 0 {
		return f
	}
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = strconv.FormatInt(id, 10)
	}
	in := `id IN (` + strings.Join(list, ",") + `)`
	f.settled = l.count(t, `SELECT count(*) FROM calls WHERE `+in+` AND state = 'settled'`)
	f.early = l.count(t, `SELECT count(*) FROM calls WHERE `+in+` AND state = 'released' AND finished_at < deadline`)
	f.late = l.count(t, `SELECT count(*) FROM calls WHERE `+in+` AND state = 'released' AND finished_at >= deadline`)
	f.open = l.count(t, `SELECT count(*) FROM calls WHERE `+in+` AND state = 'open'`)
	return f
}

// longestHeld returns the longest time one of the calls of ids stayed
// open, from started_at to finished_at.
func (l *ledger) longestHeld(t testing.TB, ids []int64) time.Duration {
	t.Helper()
	if len(ids) == 0 {
		return 0
	}
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = strconv.FormatInt(id, 10)
	}
	held := `finished_at - started_at` // SQLite: Unix microseconds
	if l.kind == store.PostgresKind {
		held = `EXTRACT(EPOCH FROM finished_at - started_at) * 1000000`
	}
	us := l.count(t, `SELECT CAST(COALESCE(max(`+held+`), 0) AS BIGINT) FROM calls WHERE id IN (`+strings.Join(list, ",")+`)`)
	return time.Duration(us) * time.Microsecond
}

// waitNoOpenCalls polls until no call is open and returns how long it
// took, failing after timeout.
func (l *ledger) waitNoOpenCalls(t testing.TB, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var n int64
	if !testwait.For(timeout, func() bool { n = l.openCalls(t); return n == 0 }) {
		t.Fatalf("%d calls still open %s later: orphaned reservations were not released", n, timeout)
	}
	return time.Since(start)
}

// statesOf counts the calls of the given request IDs by state.
func (l *ledger) statesOf(t testing.TB, requestIDs []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, id := range requestIDs {
		var state string
		err := l.db.QueryRow(`SELECT state FROM calls WHERE request_id = `+l.param1(), id).Scan(&state)
		if err != nil {
			state = "missing"
		}
		out[state]++
	}
	return out
}

// keyRow is one api_key_stats row with its calls by state.
type keyRow struct {
	total, successful, remaining, reserved int64
	open, settled, released                int64
}

func (l *ledger) keys(t testing.TB) map[int64]*keyRow {
	t.Helper()
	rows, err := l.db.Query(`SELECT id, total_calls, successful_calls, remaining_calls, reserved_calls FROM api_key_stats`)
	if err != nil {
		t.Fatalf("ledger: keys: %v", err)
	}
	defer rows.Close()
	out := map[int64]*keyRow{}
	for rows.Next() {
		var id int64
		var k keyRow
		if err := rows.Scan(&id, &k.total, &k.successful, &k.remaining, &k.reserved); err != nil {
			t.Fatalf("ledger: keys: %v", err)
		}
		out[id] = &k
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("ledger: keys: %v", err)
	}
	crows, err := l.db.Query(`SELECT key_id, state, count(*) FROM calls GROUP BY key_id, state`)
	if err != nil {
		t.Fatalf("ledger: calls: %v", err)
	}
	defer crows.Close()
	for crows.Next() {
		var id, n int64
		var state string
		if err := crows.Scan(&id, &state, &n); err != nil {
			t.Fatalf("ledger: calls: %v", err)
		}
		k := out[id]
		if k == nil {
			t.Errorf("ledger: %d calls of key id %d, which has no api_key_stats row", n, id)
			continue
		}
		switch state {
		case "open":
			k.open = n
		case "settled":
			k.settled = n
		case "released":
			k.released = n
		}
	}
	if err := crows.Err(); err != nil {
		t.Fatalf("ledger: calls: %v", err)
	}
	return out
}

// checkBooks asserts the SPEC's invariants for every key of books, once
// in-flight work is resolved: the books balance, nothing is held or open,
// every charge is one settled call, the counters agree with the daily
// history, and the charges match what the clients saw:
// seen200 ≤ successful ≤ seen200 + answers whose outcome the client lost.
func checkBooks(t testing.TB, l *ledger, books []*book) {
	t.Helper()
	failedBefore := t.Failed()
	defer func() {
		tally(l.kind, func(r *tallyRow) {
			for _, b := range books {
				r.requests += b.untallied()
			}
			r.audits++
			if t.Failed() && !failedBefore {
				r.discrepancies++
			}
		})
	}()
	// felix books proves the same from the store alone (its events).
	cmd := exec.Command(felixBin, "books")
	cmd.Env = []string{"DATABASE_URL=" + l.url, "AUTO_MIGRATE=false"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("felix books: %v\n%s", err, out)
	}
	rows := l.keys(t)
	var sumSuccessful int64
	for _, k := range rows {
		sumSuccessful += k.successful
	}
	for _, b := range books {
		k := rows[b.id]
		if k == nil {
			t.Errorf("key %s (id %d): no row in api_key_stats", b.name, b.id)
			continue
		}
		changes := b.changes.Load()
		seen, uncertain := b.seen200.Load(), b.uncertain()
		t.Logf("books %s: initial %d + changes %d − successful %d = %d, remaining %d; total %d (settled %d, released %d, open %d), reserved %d; clients: %s",
			b.name, b.initial, changes, k.successful, b.initial+changes-k.successful, k.remaining,
			k.total, k.settled, k.released, k.open, k.reserved, b)
		if got, want := k.remaining, b.initial+changes-k.successful; got != want {
			t.Errorf("key %s: remaining %d, want initial %d + changes %d − successful %d = %d (discrepancy %+d)",
				b.name, got, b.initial, changes, k.successful, want, got-want)
		}
		if k.remaining < 0 {
			t.Errorf("key %s: remaining %d < 0", b.name, k.remaining)
		}
		if k.reserved != 0 {
			t.Errorf("key %s: reserved_calls %d, want 0 once in-flight work is resolved", b.name, k.reserved)
		}
		if k.open != 0 {
			t.Errorf("key %s: %d calls still open", b.name, k.open)
		}
		if k.settled != k.successful {
			t.Errorf("key %s: %d settled calls, but successful_calls %d", b.name, k.settled, k.successful)
		}
		if k.total != k.settled+k.released+k.open {
			t.Errorf("key %s: total_calls %d, but %d call rows (settled %d + released %d + open %d)",
				b.name, k.total, k.settled+k.released+k.open, k.settled, k.released, k.open)
		}
		if k.successful < seen {
			t.Errorf("key %s: successful_calls %d < %d answers 200 the clients received: a delivered answer was not charged",
				b.name, k.successful, seen)
		}
		if k.successful > seen+uncertain {
			t.Errorf("key %s: successful_calls %d > %d answers 200 + %d answers lost: %d calls charged that no client could have received",
				b.name, k.successful, seen, uncertain, k.successful-seen-uncertain)
		}
		if relayed := b.seenTarget.Load(); k.released < relayed {
			t.Errorf("key %s: %d calls released, but clients saw %d target errors (each one a released call)", b.name, k.released, relayed)
		}
		if n := b.unexpected.Load(); n > 0 {
			b.mu.Lock()
			t.Errorf("key %s: %d unexpected answers, e.g. %s", b.name, n, strings.Join(b.unexpectedS, "; "))
			b.mu.Unlock()
		}
	}
	daily := l.count(t, `SELECT CAST(COALESCE(sum(generations), 0) AS BIGINT) FROM daily_generations`)
	if daily != sumSuccessful {
		t.Errorf("sum of successful_calls %d ≠ sum of daily_generations %d", sumSuccessful, daily)
	}
}

// checkSiteStats asserts that GET /api/stats agrees with the tables.
func checkSiteStats(t testing.TB, hc *http.Client, base string, l *ledger) {
	t.Helper()
	var st struct {
		TotalGenerations int64 `json:"totalGenerations"`
	}
	code, err := getJSON(hc, base+"/api/stats", adminToken, &st)
	if err != nil || code != http.StatusOK {
		t.Errorf("GET /api/stats: status %d, %v", code, err)
		return
	}
	if want := l.count(t, `SELECT CAST(COALESCE(sum(successful_calls), 0) AS BIGINT) FROM api_key_stats`); st.TotalGenerations != want {
		t.Errorf("GET /api/stats: totalGenerations %d, want the sum of successful_calls %d", st.TotalGenerations, want)
	}
}
