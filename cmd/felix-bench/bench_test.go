package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the helper roles the benchmark
// starts by re-executing itself (os.Executable is the test binary here).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "target" || os.Args[1] == "bare") {
		main() // exits non-zero on failure
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchSmoke runs the whole benchmark briefly, as `make bench` does:
// felix is built, every system started, measured in rounds, and the books
// must agree (every key's successfulCalls = the 200s seen over warm-up and
// all rounds). felix-postgres joins when FELIX_TEST_DATABASE_URL is set.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds felix and starts its processes; skipped in -short mode")
	}
	jsonPath := filepath.Join(t.TempDir(), "results.json")
	cfg := config{
		duration: 600 * time.Millisecond, warmup: 200 * time.Millisecond, rounds: 3,
		concurrency: []int{4}, bodySize: 512, keys: 2,
		pgURL: os.Getenv("FELIX_TEST_DATABASE_URL"), jsonPath: jsonPath, skipScenarios: true,
		instances: []int{1, 2}, instanceKeys: []int{2}, instanceConcurrency: 4, history: 1000,
	}
	res, out := runBench(t, cfg)
	if !strings.Contains(out, "in 3 rounds") {
		t.Errorf("report lacks the rounds:\n%s", out)
	}
	want := []string{bare, felixSQLite, felixPolicies}
	if cfg.pgURL != "" {
		want = append(want, felixPostgres)
	}
	if len(res.Phases) != 1 || len(res.Phases[0].Systems) != len(want) {
		t.Fatalf("phases %+v: want one phase with %v", res.Phases, want)
	}
	for i, s := range res.Phases[0].Systems {
		if s.System != want[i] || s.Requests == 0 || s.Errors != 0 || s.P50MS <= 0 {
			t.Errorf("system %d: %+v; want %s with requests, no errors and a latency", i, s, want[i])
		}
	}
	// One books check per Felix system and per Felix row of the
	// several-instances section (three with PostgreSQL).
	wantBooks := len(want) - 1
	if cfg.pgURL != "" {
		wantBooks += 3
	}
	if len(res.Books) != wantBooks {
		t.Errorf("%d books checks %+v: want %d, one per Felix", len(res.Books), res.Books, wantBooks)
	}
	if cfg.pgURL == "" {
		return
	}
	// Two instances on one database, one with a history, and the bare
	// proxies for reference, each with its books.
	wantRows := []string{"1 instance", "2 instances", "1 instance, 1k calls analyzed", "1 bare proxy", "2 bare proxies"}
	if len(res.Instances) != 1 || len(res.Instances[0].Rows) != len(wantRows) {
		t.Fatalf("several-instances groups %+v: want one with the rows %v", res.Instances, wantRows)
	}
	for i, row := range res.Instances[0].Rows {
		s := row.Stats
		if s.System != wantRows[i] || s.Requests == 0 || s.Errors != 0 || row.VersusOne <= 0 {
			t.Errorf("row %d: %+v; want %s with requests, no errors and a ratio to one process", i, row, wantRows[i])
		}
		if !row.Bare && (row.Deadlocks != 0 || row.CommitsPerRequest <= 0) {
			t.Errorf("row %s: %d deadlocks, %.3f commits per request; want 0 and some", s.System, row.Deadlocks, row.CommitsPerRequest)
		}
	}
}

// runBench runs the benchmark with cfg, which must pass with every books
// check agreeing, and returns its results and report.
func runBench(t *testing.T, cfg config) (results, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := bench(ctx, cfg, &stdout, &stderr); err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "PASS: no request failed and the books agree") {
		t.Errorf("report lacks the final PASS:\n%s", out)
	}
	raw, err := os.ReadFile(cfg.jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var res results
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	for _, b := range res.Books {
		if !b.Pass {
			t.Errorf("books of %s disagree: %+v", b.System, b)
		}
	}
	return res, out
}

// TestFarmSmoke runs the gpu farm scenario alone, scaled down: two fake
// GPUs of 20 ms jobs, 12 clients on 3 keys, 200 calls queued. Every call
// must succeed, no GPU may get a call while busy, the queue must fill and
// empty, and the books must agree.
func TestFarmSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds felix and starts its processes; skipped in -short mode")
	}
	jsonPath := filepath.Join(t.TempDir(), "results.json")
	cfg := config{
		jsonPath: jsonPath, onlyFarm: true,
		farm: farmConfig{
			gpus: 2, job: 20 * time.Millisecond, clients: 12, keys: 3, heavyClients: 6,
			warmup: 200 * time.Millisecond, measure: time.Second, queued: 200,
		},
	}
	res, out := runBench(t, cfg)
	f := res.Farm
	if f == nil || f.Calls == 0 || f.Errors != 0 || f.Overlaps != 0 || !f.QueuedOK || f.RSSQueuedMiB <= 0 ||
		len(f.Utilisation) != 2 || f.minUtilisation() <= 0 || f.JainPerKey <= 0 {
		t.Errorf("gpu farm: %+v; want calls, no errors or overlaps, a queue that filled and emptied, its RSS, two busy GPUs and a fairness index\n%s", f, out)
	}
	if len(res.Books) != 2 {
		t.Errorf("books %+v: want the farm's and the queue's", res.Books)
	}
	if len(res.Phases) != 0 || res.Streaming != nil || res.InFlight != nil {
		t.Errorf("--only-farm ran more than the farm: %d phases, streaming %v, in flight %v", len(res.Phases), res.Streaming, res.InFlight)
	}
}
