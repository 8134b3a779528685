// Command felix-bench measures what Felix costs over a bare reverse proxy.
//
// In one run, on loopback only, it builds felix, starts a fake image API
// (the target), a bare httputil.ReverseProxy to it (the baseline) and Felix
// on SQLite (and on PostgreSQL with --pg), each as its own process, and
// drives each with a closed loop of workers at several concurrencies. It
// reports throughput, exact latency percentiles, errors and peak memory per
// system, Felix's cost relative to the bare proxy, and checks Felix's books
// against the answers the load generator saw. Two more scenarios measure
// Felix on SQLite streaming a 64 MiB answer and holding 5,000 requests in
// flight.
//
// The helper processes are this program itself, re-executed with a role as
// its first argument: "felix-bench target" and "felix-bench bare".
//
// Usage:
//
//	go run ./cmd/felix-bench [flags]
//
// It exits 1 when any request failed or a books check failed; missing a
// performance target is reported but does not fail the run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "felix-bench: interrupted")
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "felix-bench:", err)
		os.Exit(1)
	}
}

// errUsage means a usage message was printed already.
var errUsage = errors.New("usage")

// run dispatches to a helper role or runs the benchmark.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "target":
			return targetRole(ctx, args[1:], stdout, stderr)
		case "bare":
			return bareRole(ctx, args[1:], stdout, stderr)
		}
	}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	return bench(ctx, cfg, stdout, stderr)
}

// config is the benchmark's command line.
type config struct {
	duration      time.Duration // measured time per system and concurrency
	warmup        time.Duration // unmeasured time before it
	rounds        int           // the measured time is split into this many turns per system
	concurrency   []int         // closed-loop workers, one phase each
	bodySize      int           // bytes of the target's answer
	keys          int           // API keys per Felix system
	pgURL         string        // PostgreSQL server; "" skips felix-postgres
	jsonPath      string        // where the results are written
	skipScenarios bool          // skip the streaming, in-flight and gpu farm scenarios
	onlyFarm      bool          // run the gpu farm scenario alone
	farm          farmConfig    // the gpu farm scenario's shape

	// The several-instances section (with pgURL only).
	instances           []int // numbers of felix processes sharing a database, one row each; empty skips the section
	instanceKeys        []int // numbers of keys, one group of rows each
	instanceConcurrency int   // closed-loop workers in total, split evenly over a row's processes
	history             int64 // settled calls in the history row's database; 0 skips the row
}

const usageText = `Usage: go run ./cmd/felix-bench [flags]

Benchmarks Felix against a bare reverse proxy, on loopback only. It builds
felix, then starts each system as its own process:

  target          a fake image API answering 200 at once (this program, re-executed)
  bare            httputil.ReverseProxy to the target, no accounting: the baseline
  felix-sqlite    felix serve on a fresh SQLite file
  felix-postgres  felix serve on a fresh schema of --pg (dropped afterwards)

With --pg it then measures several felix serve processes sharing one
database (--instances), for each number of keys (--instance-keys), the
load split evenly over the processes, every row on a database of its own
created on the --pg server (dropped afterwards), with PostgreSQL's count of
deadlocks in it; and one instance on a database holding --history settled
calls since the last VACUUM, analyzed.

For each concurrency, N workers each send POST /api/generate as soon as
their previous answer was read: a warm-up per system, then the measured
time in rounds in which the systems take turns (so that a slow spell of
the machine falls on every system alike). It prints requests/s, exact p50/p99/p99.9 latencies,
errors and peak RSS per system, Felix's cost over bare, a books check
(successfulCalls of every key = the 200s seen), then two scenarios on
felix-sqlite (a 64 MiB streamed answer; 5,000 requests in flight against a
target that waits 2 s), the gpu farm (Felix in front of 4 fake GPUs that run
one 200 ms job at a time, TARGET_MAX_IN_FLIGHT=1, 200 closed-loop clients on
20 keys, one key holding 150 of them: GPU utilisation, queue waits of light
and heavy keys, fairness, Felix's memory with 5,000 calls queued) and the
performance targets, met or missed.

Exit status: 0 when every request succeeded and the books agree, 1 otherwise
(missing a target does not fail the run), 2 for a bad command line.

Flags:
`

// parseFlags reads the benchmark's flags.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("felix-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	var cfg config
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time per system and concurrency")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured warm-up of each system before its measured rounds")
	fs.IntVar(&cfg.rounds, "rounds", 5, "rounds the measured time is split into, the systems taking turns")
	conc := fs.String("concurrency", "16,64,256", "comma-separated numbers of closed-loop workers, one phase each")
	fs.IntVar(&cfg.bodySize, "body-size", 4096, "size in bytes of the target's JSON answer")
	fs.IntVar(&cfg.keys, "keys", 8, "API keys per Felix system, used round-robin")
	fs.StringVar(&cfg.pgURL, "pg", os.Getenv("FELIX_BENCH_DATABASE_URL"),
		"PostgreSQL URL for felix-postgres, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable\n"+
			"(default $FELIX_BENCH_DATABASE_URL; empty skips felix-postgres)")
	fs.StringVar(&cfg.jsonPath, "json", "bench-results.json", "file the results are written to as JSON")
	fs.BoolVar(&cfg.skipScenarios, "skip-scenarios", false, "skip the streaming, 5,000-in-flight and gpu farm scenarios")
	fs.BoolVar(&cfg.onlyFarm, "only-farm", false, "run only the gpu farm scenario (about a minute)")
	instances := fs.String("instances", "1,2,3", "with --pg: comma-separated numbers of felix processes sharing one database, one row each (empty skips them)")
	instanceKeys := fs.String("instance-keys", "1,8,1000", "with --pg: comma-separated numbers of keys, one group of --instances rows each")
	fs.IntVar(&cfg.instanceConcurrency, "instance-concurrency", 64, "with --pg: closed-loop workers in total for the --instances rows, split evenly over the processes")
	fs.Int64Var(&cfg.history, "history", 1_000_000, "with --pg: settled calls (then ANALYZE) in the database of one more row, with --keys keys; 0 skips it")
	quick := fs.Bool("quick", false, "smoke run: 1s warm-up and 1s measured per phase (overrides --duration and --warmup)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errUsage
	}
	if fs.NArg() > 0 {
		return cfg, usageError(fs, "unexpected argument %q (the roles target and bare come first, alone)", fs.Arg(0))
	}
	cfg.farm = defaultFarm
	if *quick {
		cfg.duration, cfg.warmup = time.Second, time.Second
	}
	var err error
	if cfg.concurrency, err = parseConcurrency(*conc); err != nil {
		return cfg, usageError(fs, "--concurrency: %v", err)
	}
	if *instances != "" {
		if cfg.instances, err = parseCounts(*instances, 8); err != nil {
			return cfg, usageError(fs, "--instances: %v", err)
		}
	}
	if cfg.instanceKeys, err = parseCounts(*instanceKeys, 1000); err != nil {
		return cfg, usageError(fs, "--instance-keys: %v", err)
	}
	switch {
	case cfg.duration <= 0:
		return cfg, usageError(fs, "--duration must be positive, e.g. 10s")
	case cfg.rounds < 1 || cfg.duration/time.Duration(max(cfg.rounds, 1)) < 100*time.Millisecond:
		return cfg, usageError(fs, "--rounds must be at least 1 and leave each round 100ms of --duration, e.g. 5 rounds of 10s")
	case cfg.warmup < 0:
		return cfg, usageError(fs, "--warmup must not be negative, e.g. 2s")
	case cfg.bodySize < 0 || cfg.bodySize > 64<<20:
		return cfg, usageError(fs, "--body-size must be from 0 to 67108864 bytes")
	case cfg.keys < 1 || cfg.keys > 1000:
		return cfg, usageError(fs, "--keys must be from 1 to 1000")
	case cfg.instanceConcurrency < 1 || cfg.instanceConcurrency > maxConcurrency:
		return cfg, usageError(fs, "--instance-concurrency must be from 1 to %d", maxConcurrency)
	case cfg.history < 0 || cfg.history > 100_000_000:
		return cfg, usageError(fs, "--history must be from 0 to 100000000 calls")
	}
	return cfg, nil
}

// maxConcurrency bounds --concurrency.
const maxConcurrency = 4096

// parseConcurrency parses a comma-separated list of worker counts.
func parseConcurrency(s string) ([]int, error) {
	out, err := parseCounts(s, maxConcurrency)
	if err != nil {
		return nil, fmt.Errorf("%v; use e.g. 16,64,256", err)
	}
	return out, nil
}

// parseCounts parses a comma-separated list of numbers from 1 to most.
func parseCounts(s string, most int) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > most {
			return nil, fmt.Errorf("%q is not a number from 1 to %d", f, most)
		}
		out = append(out, n)
	}
	return out, nil
}

// usageError prints a command-line mistake and how to get help.
func usageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "felix-bench: "+format+"\n", args...)
	fmt.Fprintln(fs.Output(), "Run 'go run ./cmd/felix-bench --help' for the flags.")
	return errUsage
}
