package e2e

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"

	"github.com/felix-gateway/felix/internal/testwait"
)

// TestTwoInstancesNoDeadlock runs two felix processes on one PostgreSQL
// database under heavy load over 8 keys, so that their group commits
// touch the same key rows and the same day row at the same moments. No
// transaction may deadlock (PostgreSQL counts them in pg_stat_database:
// the database is the test's own, so the count is the test's alone), no
// request may fail, and the books must be exact.
func TestTwoInstancesNoDeadlock(t *testing.T) {
	if testing.Short() {
		t.Skip("two processes under load; skipped in -short mode")
	}
	seed := testSeed(t)
	db := newDatabase(t)
	tgt := newTarget(t, seed, always200(0))
	nodes := make([]*felix, 2)
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			nodes[i], errs[i] = launchFelix(t, felixOptions{DatabaseURL: db.felixURL, Target: tgt.URL(), Instance: fmt.Sprintf("node-%d", i)})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start two instances: %v", err)
	}
	admin := newClient(t)
	books := make([]*book, 8)
	for i := range books {
		books[i] = createKey(t, admin, nodes[0].URL, fmt.Sprintf("shared-%d", i), 1_000_000)
	}

	// Bounded in count and in time; each worker sticks to one instance and
	// takes the keys in turn with the others.
	const workers, requests = 32, 6000
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hc := newClient(t)
	var next, sent atomic.Int64
	began := time.Now()
	for w := range workers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < requests && ctx.Err() == nil; i = next.Add(1) - 1 {
				b := books[i%int64(len(books))]
				b.record(generate(ctx, hc, nodes[w%len(nodes)].URL, b.key))
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	l := openLedger(t, db.url)
	checkSiteStats(t, admin, nodes[0].URL, l)
	for i, f := range nodes {
		f.terminate()
		if code, ok := f.waitExit(15 * time.Second); !ok || code != 0 {
			t.Errorf("instance %d after SIGTERM: exited %v with code %d, want 0", i, ok, code)
		}
	}
	deadlocks := db.deadlocksWhenGone(t, 30*time.Second)

	var ok int64
	for _, b := range books {
		ok += b.seen200.Load()
	}
	t.Logf("%d requests over 2 instances and %d keys in %s: %d answers 200; %d deadlocks in the test's database",
		sent.Load(), len(books), took.Round(time.Millisecond), ok, deadlocks)
	if deadlocks != 0 {
		t.Errorf("PostgreSQL detected %d deadlocks between the two instances, want 0", deadlocks)
	}
	if ok != requests || sent.Load() != requests {
		t.Errorf("%d of %d requests sent, %d answered 200: want every one sent and answered 200", sent.Load(), requests, ok)
	}
	// Every request answered 200, so nothing is uncertain: checkBooks then
	// holds successful_calls to exactly the 200s each key's clients saw.
	checkBooks(t, l, books)

	// The shared test server runs without autovacuum: felix must say so.
	var autovacuum string
	if err := l.db.QueryRow(`SHOW autovacuum`).Scan(&autovacuum); err != nil {
		t.Fatal(err)
	}
	for _, f := range nodes {
		if warned := len(f.logRecords(store.AutovacuumWarning)) > 0; warned != (autovacuum == "off") {
			t.Errorf("felix %s warned that autovacuum is off: %v; the server's autovacuum is %s", f.opts.Instance, warned, autovacuum)
		}
	}
}

// testDatabase is a PostgreSQL database of one test's own, on the server
// of FELIX_TEST_DATABASE_URL: the server's per-database statistics
// (pg_stat_database) are then the test's alone, whatever other tests run
// on the same server.
type testDatabase struct {
	name     string
	url      string  // the database's URL, for the test's own reads
	felixURL string  // the same for felix, whose sessions it names felixApp
	admin    *sql.DB // on the server's test database, to watch this one from outside
}

// felixApp is the application_name of felix's sessions in a testDatabase.
const felixApp = "felix-e2e"

// newDatabase creates a database for t, dropped when t ends.
func newDatabase(t *testing.T) *testDatabase {
	t.Helper()
	base := os.Getenv(storetest.EnvURL)
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: PostgreSQL tests must run in CI", storetest.EnvURL)
		}
		t.Skipf("%s is not set: skipping PostgreSQL", storetest.EnvURL)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	admin.SetMaxOpenConns(1)
	t.Cleanup(func() { admin.Close() })
	name := "felix_e2e_" + strings.ToLower(rand.Text()[:12])
	if _, err := admin.Exec(`CREATE DATABASE ` + name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	d := &testDatabase{name: name, url: u.String(), admin: admin}
	q := u.Query()
	q.Set("application_name", felixApp)
	u.RawQuery = q.Encode()
	d.felixURL = u.String()
	return d
}

// deadlocksWhenGone waits until felix's sessions have left the database,
// then returns the deadlocks PostgreSQL counted in it. A session reports
// its statistics about once a second while busy, and as it exits.
func (d *testDatabase) deadlocksWhenGone(t *testing.T, timeout time.Duration) int64 {
	t.Helper()
	var sessions int
	if !testwait.For(timeout, func() bool {
		err := d.admin.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2`, d.name, felixApp).Scan(&sessions)
		if err != nil {
			t.Fatal(err)
		}
		return sessions == 0
	}) {
		t.Fatalf("%d felix sessions still connected to %s %s after the processes exited", sessions, d.name, timeout)
	}
	var n int64
	if err := d.admin.QueryRow(`SELECT deadlocks FROM pg_stat_database WHERE datname = $1`, d.name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
