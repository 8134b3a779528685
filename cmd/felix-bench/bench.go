package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The systems under load.
const (
	bare          = "bare"
	felixSQLite   = "felix-sqlite"
	felixPolicies = "felix-sqlite-policies" // felix-sqlite with a rate limit and cost per image on every key
	felixPostgres = "felix-postgres"
)

// keyCalls is the quota of every load key: more than any run can use.
const keyCalls = 1_000_000_000

// errFailed means the run finished but a request failed, the books
// disagree or a process failed; everything was printed already.
var errFailed = errors.New("the run failed: see the errors, books and problems above")

// runner holds what the benchmark's steps share.
type runner struct {
	cfg        config
	dir        string // temporary, removed at the end: the felix binary and SQLite files
	felixBin   string
	self       string // this program, re-executed for the helper roles
	adminToken string
	client     *http.Client // shared by the load workers and the admin calls
	log        *lineLog
	children   []*child // running, stopped in reverse order by stopChildren
}

// bench runs the whole benchmark and prints its report on stdout.
func bench(ctx context.Context, cfg config, stdout, stderr io.Writer) (err error) {
	log := &lineLog{w: stderr}
	openFiles, err := raiseFileLimit()
	if err != nil {
		log.printf("cannot raise the open-file limit: %v", err)
	}
	res := &results{
		Date:      time.Now().UTC().Truncate(time.Second),
		GoVersion: runtime.Version(),
		Machine:   describeMachine(openFiles),
		Settings: settings{
			DurationSeconds: cfg.duration.Seconds(), WarmupSeconds: cfg.warmup.Seconds(), Rounds: cfg.rounds,
			Concurrency: cfg.concurrency, BodySize: cfg.bodySize, Keys: cfg.keys,
			Systems: []string{bare, felixSQLite, felixPolicies}, FelixLogLevel: felixLogLevel,
		},
	}
	if cfg.pgURL != "" {
		res.Settings.Systems = append(res.Settings.Systems, felixPostgres)
		if len(cfg.instances) > 0 {
			res.Settings.Instances, res.Settings.InstanceKeys = cfg.instances, cfg.instanceKeys
			res.Settings.InstanceConcurrency, res.Settings.History = cfg.instanceConcurrency, cfg.history
		}
	}

	dir, err := os.MkdirTemp("", "felix-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log.printf("building felix…")
	bin, err := buildFelix(ctx, dir, stderr)
	if err != nil {
		return err
	}
	r := &runner{
		cfg: cfg, dir: dir, felixBin: bin, self: self, log: log,
		adminToken: strings.ToLower(rand.Text()),
		client:     newLoadClient(maxConcurrency),
	}
	defer func() { err = errors.Join(err, r.stopChildren()) }()

	var pgURL string
	if cfg.pgURL != "" {
		var drop func(context.Context) error
		if pgURL, drop, err = createSchema(ctx, cfg.pgURL); err != nil {
			return err
		}
		defer func() {
			// The children are stopped first: no Felix may hold the schema.
			err = errors.Join(err, r.stopChildren())
			dropCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			err = errors.Join(err, drop(dropCtx))
		}()
	}

	printHeader(stdout, res)
	if !cfg.onlyFarm {
		if err := r.phases(ctx, res, pgURL, stdout); err != nil {
			return err
		}
		if cfg.pgURL != "" && len(cfg.instances) > 0 {
			if err := r.instanceSection(ctx, res); err != nil {
				return err
			}
			printInstances(stdout, res.Instances, cfg.instanceConcurrency)
		}
	}
	if !cfg.skipScenarios {
		if err := r.scenarios(ctx, res); err != nil {
			return err
		}
	}
	res.Targets = targetsFor(res)
	res.Failed = failed(res)

	printBooks(stdout, res.Books)
	printMemory(stdout, res.Memory)
	printScenarios(stdout, res.Streaming, res.InFlight)
	printFarm(stdout, res.Farm)
	printTargets(stdout, res.Targets)
	printProblems(stdout, res.Problems)
	if err := writeJSON(cfg.jsonPath, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nResults written to %s\n", cfg.jsonPath)
	if res.Failed {
		return errFailed
	}
	fmt.Fprintln(stdout, "PASS: no request failed and the books agree")
	return nil
}

// phases starts the systems, measures them at every concurrency, checks
// their books and reads their memory, adding it all to res.
func (r *runner) phases(ctx context.Context, res *results, pgURL string, stdout io.Writer) error {
	cfg := r.cfg
	systems, err := r.startSystems(ctx, pgURL)
	if err != nil {
		return err
	}
	for _, c := range cfg.concurrency {
		p := phase{Concurrency: c, Systems: r.measure(ctx, systems, c)}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, s := range p.Systems[1:] {
			p.VersusBare = append(p.VersusBare, compare(s, p.Systems[0]))
		}
		res.Phases = append(res.Phases, p)
		printPhase(stdout, p)
	}

	for _, s := range systems {
		if s.felix {
			res.Books = append(res.Books, r.checkBooks(ctx, s.name, s.bases[0], s.keys, s.ok, keyCalls))
		}
		if m, err := readMemory(s.procs[0].pid()); err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: peak RSS: %v", s.name, err))
		} else {
			res.Memory = append(res.Memory, processMemory{Process: s.name, PeakMiB: mib(m.hwm)})
		}
	}
	// A system that died during the load is a failure, reported with the
	// rest.
	if err := r.stopChildren(); err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	return nil
}

// startSystems starts the fast target and the systems in front of it:
// bare, felix-sqlite and, when pgURL is set, felix-postgres, each with its
// keys.
func (r *runner) startSystems(ctx context.Context, pgURL string) ([]*system, error) {
	_, target, err := r.startHelper(ctx, "target", "target", "--mode", modeFast, "--body-size", strconv.Itoa(r.cfg.bodySize))
	if err != nil {
		return nil, err
	}
	proxy, base, err := r.startHelper(ctx, bare, "bare", "--target", target)
	if err != nil {
		return nil, err
	}
	// The bare proxy ignores keys; it gets some only to send the same
	// requests.
	systems := []*system{{name: bare, procs: []*child{proxy}, bases: []string{base}}}
	for i := range r.cfg.keys {
		systems[0].keys = append(systems[0].keys, fmt.Sprintf("bench-bare-%d", i))
	}
	felixes := []felixProcess{
		{name: felixSQLite, instanceID: "bench-sqlite", databaseURL: "sqlite:" + filepath.Join(r.dir, "felix.db"), target: target},
		{name: felixPolicies, instanceID: "bench-policies", databaseURL: "sqlite:" + filepath.Join(r.dir, "policies.db"), target: target, policies: true},
	}
	if pgURL != "" {
		felixes = append(felixes, felixProcess{name: felixPostgres, instanceID: "bench-postgres", databaseURL: pgURL, target: target})
	}
	for _, f := range felixes {
		c, base, err := r.startFelix(ctx, f)
		if err != nil {
			return nil, err
		}
		s := &system{name: f.name, procs: []*child{c}, bases: []string{base}, felix: true}
		create := r.createKey
		if f.policies {
			create = r.createPolicyKey
		}
		for i := range r.cfg.keys {
			key, err := create(ctx, base, fmt.Sprintf("bench-%d", i), keyCalls)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
			s.keys = append(s.keys, key)
		}
		systems = append(systems, s)
	}
	for _, s := range systems {
		s.ok = make([]int64, len(s.keys))
	}
	return systems, nil
}

// startHelper starts this program in role with args, registers it and
// returns it with its base URL.
func (r *runner) startHelper(ctx context.Context, name, role string, args ...string) (*child, string, error) {
	c, base, err := startHelper(ctx, r.self, name, r.log, append([]string{role}, args...)...)
	if err != nil {
		return nil, "", err
	}
	r.children = append(r.children, c)
	return c, base, nil
}

// stopChildren stops every child, the last started first.
func (r *runner) stopChildren() error {
	var errs []error
	for i := len(r.children) - 1; i >= 0; i-- {
		errs = append(errs, r.children[i].stop())
	}
	r.children = nil
	return errors.Join(errs...)
}

// measure runs every system at one concurrency: a warm-up each, then the
// measured time in rounds in which the systems take turns, so that a slow
// spell of the machine falls on all of them alike rather than on one. A
// system's rounds are pooled: its requests, latencies and CPU time add
// up. Each system's RSS is sampled every 100 ms throughout.
func (r *runner) measure(ctx context.Context, systems []*system, concurrency int) []systemStats {
	per := r.cfg.duration / time.Duration(r.cfg.rounds)
	r.log.printf("c=%d: %s warm-up each, then %d rounds of %s per system", concurrency, r.cfg.warmup, r.cfg.rounds, per)
	type tally struct {
		warm, measured loadResult
		cpu            time.Duration
		cpuUnknown     bool // reading the CPU time failed once
		dbCPU          time.Duration
		dbCPUUnknown   bool // the system has no database of its own, or reading its CPU time failed once
		stopRSS        func() int64
	}
	tallies := make([]tally, len(systems))
	newLoad := func(s *system, d time.Duration, record bool) load {
		var urls []string
		for _, base := range s.bases {
			urls = append(urls, base+"/api/generate")
		}
		return load{client: r.client, urls: urls, keys: s.keys, concurrency: concurrency, duration: d, record: record}
	}
	for i, s := range systems {
		tallies[i].stopRSS = samplePeakRSS(s.pids(), 100*time.Millisecond)
		tallies[i].warm = newLoad(s, r.cfg.warmup, false).run(ctx)
	}
	for range r.cfg.rounds {
		for i, s := range systems {
			if ctx.Err() != nil {
				break
			}
			t := &tallies[i]
			before, errBefore := cpuTimes(s.pids())
			dbBefore, errDBBefore := s.db.sessionCPU(ctx)
			res := newLoad(s, per, true).run(ctx)
			after, errAfter := cpuTimes(s.pids())
			dbAfter, errDBAfter := s.db.sessionCPU(ctx)
			t.measured = t.measured.add(res)
			t.cpu += after - before
			t.cpuUnknown = t.cpuUnknown || errBefore != nil || errAfter != nil
			// A session that started during the round counts from zero.
			for pid, d := range dbAfter {
				t.dbCPU += d - dbBefore[pid]
			}
			t.dbCPUUnknown = t.dbCPUUnknown || errDBBefore != nil || errDBAfter != nil
		}
	}
	// Each phase starts with fresh connections, made during its warm-ups.
	r.client.CloseIdleConnections()
	stats := make([]systemStats, len(systems))
	for i, s := range systems {
		t := &tallies[i]
		for _, res := range []loadResult{t.warm, t.measured} {
			for k, n := range res.okByKey {
				s.ok[k] += n
			}
		}
		slices.Sort(t.measured.latencies)
		stats[i] = summarize(s.name, t.warm, t.measured, t.stopRSS())
		if !t.cpuUnknown && t.measured.ok > 0 {
			stats[i].CPUPerRequestUS = float64(t.cpu/time.Microsecond) / float64(t.measured.ok)
		}
		if !t.dbCPUUnknown && t.measured.ok > 0 {
			stats[i].DBCPUPerRequestUS = float64(t.dbCPU/time.Microsecond) / float64(t.measured.ok)
		}
	}
	return stats
}

// checkBooks compares each key's successfulCalls and remainingCalls with
// the 200s seen for it.
func (r *runner) checkBooks(ctx context.Context, name, base string, keys []string, seen []int64, initial int64) booksCheck {
	b := booksCheck{System: name, Pass: true}
	for i, key := range keys {
		st, err := r.getKeyStats(ctx, base, key)
		if err != nil {
			b.Pass, b.Error = false, err.Error()
			return b
		}
		k := keyBooks{Key: i, Seen200: seen[i], SuccessfulCalls: st.SuccessfulCalls, RemainingCalls: st.RemainingCalls, Initial: initial}
		b.Pass = b.Pass && k.ok()
		b.Keys = append(b.Keys, k)
	}
	return b
}

// failed reports whether any request failed, any books disagree or a
// process failed.
func failed(res *results) bool {
	if len(res.Problems) > 0 {
		return true
	}
	for _, p := range res.Phases {
		for _, s := range p.Systems {
			if s.Errors > 0 {
				return true
			}
		}
	}
	for _, g := range res.Instances {
		for _, row := range g.Rows {
			if row.Stats.Errors > 0 {
				return true
			}
		}
	}
	for _, b := range res.Books {
		if !b.Pass {
			return true
		}
	}
	if s := res.Streaming; s != nil && !s.complete() {
		return true
	}
	return res.InFlight != nil && res.InFlight.Errors > 0 || res.Farm != nil && res.Farm.failed()
}
