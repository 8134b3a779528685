package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// felixBin is the felix binary TestMain builds once for every test.
var felixBin string

var seedFlag = flag.Uint64("seed", 0, "seed of the random schedules (kill times, keys, target answers); 0 takes one from the clock")

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "felix-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	felixBin = filepath.Join(dir, "felix")
	// The binary is built without -race even when the tests run with it:
	// it is the product under test, not the test's own code.
	build := exec.Command("go", "build", "-o", felixBin, "github.com/felix-gateway/felix/cmd/felix")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build ./cmd/felix:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built felix in %s\n", time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	writeReportFile()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testSeed returns the seed of a test's random schedule and logs it, so
// that a failure can be replayed with -seed.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay the schedule with -seed=%d)", seed, seed)
	return seed
}

// eachStore runs f as a subtest on a fresh SQLite file and on a fresh
// PostgreSQL schema (skipped without FELIX_TEST_DATABASE_URL, failed in CI).
func eachStore(t *testing.T, f func(t *testing.T, kind store.Kind, databaseURL string)) {
	t.Helper()
	for _, kind := range []store.Kind{store.SQLiteKind, store.PostgresKind} {
		t.Run(string(kind), func(t *testing.T) { f(t, kind, storetest.URL(t, kind)) })
	}
}
