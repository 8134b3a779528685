package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// The several-instances section: one, two or three felix serve processes
// sharing one PostgreSQL database, the load split evenly over them, for
// each number of keys. Every row runs on a database of its own, so that
// PostgreSQL's deadlock count (pg_stat_database) is the row's alone.

// instanceSetup is one row to measure: instances felix processes on a
// fresh database, holding history settled calls (then analyzed) before
// the run; or, for reference, bare proxies splitting the same load.
type instanceSetup struct {
	instances int
	history   int64
	bare      bool
}

func (s instanceSetup) name() string {
	if s.bare {
		if s.instances == 1 {
			return "1 bare proxy"
		}
		return fmt.Sprintf("%d bare proxies", s.instances)
	}
	name := plural(s.instances, "instance")
	if s.history > 0 {
		name += fmt.Sprintf(", %s calls analyzed", count(s.history))
	}
	return name
}

// instanceGroup is the rows of one number of keys, measured in the same
// rounds.
type instanceGroup struct {
	Keys int           `json:"keys"`
	Rows []instanceRow `json:"rows"`
}

// instanceRow is one row's figures.
type instanceRow struct {
	Instances int         `json:"instances"`
	History   int64       `json:"history"` // settled calls in the database before the run, analyzed
	Bare      bool        `json:"bare"`    // bare proxies, for reference: no database
	Stats     systemStats `json:"stats"`
	// VersusOne is the row's requests/s over the fresh one-instance
	// row's (for bare rows, the one-process bare row's); 0 when there is
	// none.
	VersusOne float64 `json:"versusOne"`
	// Deadlocks is pg_stat_database.deadlocks of the row's database after
	// its processes exited (warm-up included); -1 when unknown.
	Deadlocks int64 `json:"deadlocks"`
	// CommitsPerRequest is pg_stat_database.xact_commit of the row's
	// database, less the creation and the books check of its keys (one
	// transaction each), over the requests answered 2xx, warm-up
	// included: the fewer, the larger the groups (the orphan sweeps add
	// one a second per instance).
	CommitsPerRequest float64 `json:"commitsPerRequest"`
}

// instanceSection measures every group of the several-instances section
// and adds them, their books and problems to res.
func (r *runner) instanceSection(ctx context.Context, res *results) error {
	for _, keys := range r.cfg.instanceKeys {
		g, books, err := r.instanceGroup(ctx, keys, res)
		if err != nil {
			return fmt.Errorf("%s on one PostgreSQL: %w", plural(keys, "key"), err)
		}
		res.Instances = append(res.Instances, g)
		res.Books = append(res.Books, books...)
	}
	return nil
}

// setupsFor lists the rows of the group with keys keys: one per number of
// instances and, in the group of --keys keys, the history row and bare
// proxies in the same numbers, for reference.
func (r *runner) setupsFor(keys int) []instanceSetup {
	var setups []instanceSetup
	for _, n := range r.cfg.instances {
		setups = append(setups, instanceSetup{instances: n})
	}
	if keys != r.cfg.keys {
		return setups
	}
	if r.cfg.history > 0 {
		setups = append(setups, instanceSetup{instances: 1, history: r.cfg.history})
	}
	for _, n := range r.cfg.instances {
		setups = append(setups, instanceSetup{instances: n, bare: true})
	}
	return setups
}

// instanceGroup measures the rows of one number of keys: it starts a
// target and each row's processes (Felix on a database of its own),
// measures them in rounds at --instance-concurrency, checks their books,
// stops them, reads what PostgreSQL counted in each database and drops
// the databases.
func (r *runner) instanceGroup(ctx context.Context, keys int, res *results) (g instanceGroup, books []booksCheck, err error) {
	g.Keys = keys
	setups := r.setupsFor(keys)
	r.log.printf("%s on one PostgreSQL: %d rows, each on a database of its own", plural(keys, "key"), len(setups))
	systems := make([]*system, len(setups))
	defer func() {
		// The children are stopped first: a database in use cannot be
		// dropped.
		err = errors.Join(err, r.stopChildren())
		dropCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, s := range systems {
			if s != nil && s.db != nil {
				err = errors.Join(err, s.db.drop(dropCtx))
			}
		}
	}()
	_, target, err := r.startHelper(ctx, fmt.Sprintf("target-%dk", keys), "target", "--mode", modeFast, "--body-size", fmt.Sprint(r.cfg.bodySize))
	if err != nil {
		return g, nil, err
	}
	for i, st := range setups {
		if systems[i], err = r.startRow(ctx, st, fmt.Sprintf("%dk-%d", keys, i), keys, target); err != nil {
			return g, nil, fmt.Errorf("%s: %w", st.name(), err)
		}
	}

	stats := r.measure(ctx, systems, r.cfg.instanceConcurrency)
	if ctx.Err() != nil {
		return g, nil, ctx.Err()
	}
	for _, s := range systems {
		if s.felix {
			books = append(books, r.checkBooks(ctx, fmt.Sprintf("%s, %s", s.name, plural(keys, "key")), s.bases[0], s.keys, s.ok, keyCalls))
		}
	}
	// A session reports its statistics as it exits, if not before: stop
	// the processes, wait until their sessions are gone, then read.
	if err := r.stopChildren(); err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	for i, st := range setups {
		row := instanceRow{Instances: st.instances, History: st.history, Bare: st.bare, Stats: stats[i], Deadlocks: -1}
		if db := systems[i].db; db != nil {
			if dst, err := db.statsWhenIdle(ctx, 30*time.Second); err != nil {
				res.Problems = append(res.Problems, fmt.Sprintf("%s, %s: %v", st.name(), plural(keys, "key"), err))
			} else if n := systems[i].answered(); n > 0 {
				row.Deadlocks = dst.deadlocks
				row.CommitsPerRequest = float64(dst.commits-2*int64(keys)) / float64(n)
			}
		}
		g.Rows = append(g.Rows, row)
	}
	for i, row := range g.Rows {
		if one := g.oneOf(row.Bare); one != nil && one.Stats.RPS > 0 {
			g.Rows[i].VersusOne = row.Stats.RPS / one.Stats.RPS
		}
	}
	return g, books, nil
}

// startRow starts the processes of one row, named after id, in front of
// target: bare proxies, or Felix instances on a new database (with its
// history written first) and keys keys.
func (r *runner) startRow(ctx context.Context, st instanceSetup, id string, keys int, target string) (*system, error) {
	s := &system{name: st.name(), felix: !st.bare}
	if st.bare {
		for j := range st.instances {
			c, base, err := r.startHelper(ctx, fmt.Sprintf("bare-%s-%d", id, j), "bare", "--target", target)
			if err != nil {
				return s, err
			}
			s.procs, s.bases = append(s.procs, c), append(s.bases, base)
		}
		for k := range keys {
			s.keys = append(s.keys, fmt.Sprintf("bench-bare-%d", k))
		}
		s.ok = make([]int64, keys)
		return s, nil
	}
	db, err := createDatabase(ctx, r.cfg.pgURL)
	s.db = db
	if err != nil {
		return s, err
	}
	if st.history > 0 {
		if err := r.prepareHistory(ctx, db, st.history); err != nil {
			return s, err
		}
	}
	for j := range st.instances {
		c, base, err := r.startFelix(ctx, felixProcess{
			name:        fmt.Sprintf("pg-%s-%d", id, j),
			instanceID:  fmt.Sprintf("bench-%s-%d", id, j),
			databaseURL: db.url,
			target:      target,
		})
		if err != nil {
			return s, err
		}
		s.procs, s.bases = append(s.procs, c), append(s.bases, base)
	}
	for k := range keys {
		key, err := r.createKey(ctx, s.bases[0], fmt.Sprintf("bench-%d", k), keyCalls)
		if err != nil {
			return s, err
		}
		s.keys = append(s.keys, key)
	}
	s.ok = make([]int64, keys)
	return s, nil
}

// oneOf returns the group's fresh one-process row of Felix or, with bare,
// of bare proxies; nil if there is none.
func (g *instanceGroup) oneOf(bare bool) *instanceRow {
	for i, row := range g.Rows {
		if row.Instances == 1 && row.History == 0 && row.Bare == bare {
			return &g.Rows[i]
		}
	}
	return nil
}

// prepareHistory migrates db with felix migrate and gives it n settled
// calls of a key of their own, as a year of traffic since the last VACUUM
// leaves them: each inserted open and then settled (so every settle left
// its dead entries behind), then ANALYZE, as autovacuum would.
func (r *runner) prepareHistory(ctx context.Context, db *database, n int64) error {
	r.log.printf("writing %s settled calls into %s (inserted open, then settled, then ANALYZE)…", count(n), db.name)
	start := time.Now()
	cmd := exec.CommandContext(ctx, r.felixBin, "migrate")
	cmd.Dir, cmd.Env = r.dir, []string{"DATABASE_URL=" + db.url}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("felix migrate: %w: %s", err, out)
	}
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for i, q := range historySQL {
		if _, err := conn.Exec(ctx, q, n); err != nil {
			return fmt.Errorf("history, statement %d: %w", i+1, err)
		}
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return fmt.Errorf("history: ANALYZE: %w", err)
	}
	r.log.printf("history written in %s", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// historySQL writes $1 settled calls of a key of their own, started in
// the past, with the counters and daily history to match. It uses only
// the first migration's columns, so that it fills older versions of Felix
// too.
var historySQL = []string{`
	WITH k AS (
		INSERT INTO api_key_stats (key_hash, key_prefix, name, remaining_calls, total_calls, successful_calls, created_at, updated_at)
		VALUES ('bench-history', 'fx_hist', 'bench-history', 0, $1, $1, now(), now())
		RETURNING id)
	INSERT INTO calls (key_id, cost, owner, request_id, started_at, deadline)
	SELECT k.id, 1, 'bench-history', 'bench-history-' || g,
	       now() - interval '2 days' + g * interval '100 microseconds',
	       now() - interval '2 days' + g * interval '100 microseconds' + interval '150 seconds'
	FROM k, generate_series(1, $1::bigint) g`, `
	UPDATE calls SET state = 'settled', status = 200, finished_at = started_at + interval '5 milliseconds'
	WHERE owner = 'bench-history' AND $1::bigint > 0`, `
	INSERT INTO daily_generations (day, generations) VALUES ((now() - interval '2 days')::date, $1)`,
}

// count formats n briefly: 1M, 20k, 500.
func count(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// database is a PostgreSQL database the benchmark created for one row.
type database struct {
	name  string
	url   string    // the --pg URL naming it
	admin string    // the --pg URL, to create, watch and drop it from outside
	watch *pgx.Conn // on the --pg database, to watch this one's sessions
}

// createDatabase creates a fresh database on the server of admin.
func createDatabase(ctx context.Context, admin string) (*database, error) {
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("--pg is not a postgres:// URL")
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("--pg: connect to %s: %w", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	name := "felix_bench_" + strings.ToLower(rand.Text()[:12])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("--pg: create database (the several-instances rows need a database each): %w", err)
	}
	u.Path = "/" + name
	d := &database{name: name, url: u.String(), admin: admin}
	if d.watch, err = pgx.Connect(ctx, admin); err != nil {
		return d, err
	}
	return d, nil
}

// sessionCPU returns the CPU time (user and system) each session
// connected to the database has used, by process ID; nil for no database.
// It needs the server on this machine.
func (d *database) sessionCPU(ctx context.Context) (map[int]time.Duration, error) {
	if d == nil {
		return nil, errors.New("no database of its own")
	}
	rows, err := d.watch.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1`, d.name)
	if err != nil {
		return nil, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	cpu := map[int]time.Duration{}
	for _, pid := range pids {
		// A session may have ended since; one that cannot be read at
		// all means the server runs elsewhere.
		if d, err := cpuTime(int(pid)); err == nil {
			cpu[int(pid)] = d
		}
	}
	if len(cpu) == 0 && len(pids) > 0 {
		return nil, fmt.Errorf("cannot read the CPU time of the sessions of %s: is the server on another machine?", d.name)
	}
	return cpu, nil
}

// dbStats are what PostgreSQL counted in a database.
type dbStats struct {
	deadlocks, commits int64
}

// statsWhenIdle waits up to timeout until no session is connected to the
// database (a session reports its statistics as it exits, if not before),
// then returns what PostgreSQL counted in it.
func (d *database) statsWhenIdle(ctx context.Context, timeout time.Duration) (dbStats, error) {
	var st dbStats
	for deadline := time.Now().Add(timeout); ; {
		var sessions int
		if err := d.watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, d.name).Scan(&sessions); err != nil {
			return st, err
		}
		if sessions == 0 {
			break
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("%d sessions still connected to %s after %s", sessions, d.name, timeout)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	err := d.watch.QueryRow(ctx, `SELECT deadlocks, xact_commit FROM pg_stat_database WHERE datname = $1`, d.name).Scan(&st.deadlocks, &st.commits)
	return st, err
}

// drop drops the database, ending any session still connected to it.
func (d *database) drop(ctx context.Context) error {
	if d.watch != nil {
		defer d.watch.Close(ctx)
	}
	conn, err := pgx.Connect(ctx, d.admin)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", d.name, err)
	}
	return nil
}

// printInstances prints the several-instances section.
func printInstances(w io.Writer, groups []instanceGroup, concurrency int) {
	if len(groups) == 0 {
		return
	}
	fmt.Fprintf(w, "\nSeveral instances on one PostgreSQL: c=%d in total, the workers split evenly over the instances; every row on a database of its own\n", concurrency)
	fmt.Fprintf(w, "(deadlocks and commits: pg_stat_database of the row's database, read after its processes exited; commits/req, non-2xx and other errors\n")
	fmt.Fprintf(w, "include the warm-up; CPU: of the row's processes, PG CPU: of the PostgreSQL sessions of its database; bare proxies split the same load, for reference)\n")
	for _, g := range groups {
		fmt.Fprintf(w, "\n%s\n", plural(g.Keys, "key"))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "system\treq/s\tvs 1\tp50 ms\tp99 ms\tp99.9 ms\tnon-2xx\tother errors\tdeadlocks\tcommits/req\tCPU µs/req\tPG CPU µs/req\t")
		for _, row := range g.Rows {
			s := row.Stats
			deadlocks, commits, dbCPU := "?", "-", "-"
			switch {
			case row.Bare:
				deadlocks = "-"
			case row.Deadlocks >= 0:
				deadlocks, commits = fmt.Sprint(row.Deadlocks), fmt.Sprintf("%.3f", row.CommitsPerRequest)
			}
			if s.DBCPUPerRequestUS > 0 {
				dbCPU = fmt.Sprintf("%.0f", s.DBCPUPerRequestUS)
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.2f×\t%.2f\t%.2f\t%.2f\t%d\t%d\t%s\t%s\t%.0f\t%s\t\n",
				s.System, s.RPS, row.VersusOne, s.P50MS, s.P99MS, s.P999MS, s.Non2xx, s.Errors-s.Non2xx, deadlocks,
				commits, s.CPUPerRequestUS, dbCPU)
		}
		tw.Flush()
		for _, row := range g.Rows {
			if row.Stats.FirstError != "" {
				fmt.Fprintf(w, "  %s: %d errors, e.g. %s\n", row.Stats.System, row.Stats.Errors, row.Stats.FirstError)
			}
		}
	}
}

// instanceTargets are the targets for several instances: with
// more than one key, every row of two or more instances reaches 80% of
// one instance's requests/s without a deadlock or a non-2xx answer; a
// database holding a long history is within noise of a fresh one.
func instanceTargets(groups []instanceGroup) []targetCheck {
	var out []targetCheck
	for _, g := range groups {
		for _, row := range g.Rows {
			s := row.Stats
			switch {
			case row.Bare:
			case row.History > 0:
				out = append(out, targetCheck{
					Goal:     fmt.Sprintf("postgres, %s: ≥ 85%% of a fresh database's requests/s", s.System),
					Measured: fmt.Sprintf("%.0f%%", 100*row.VersusOne),
					Status:   verdict(row.VersusOne >= 0.85),
				})
			case row.Instances > 1 && g.Keys > 1:
				out = append(out, targetCheck{
					Goal:     fmt.Sprintf("postgres, %s × %s: ≥ 80%% of one instance, 0 deadlocks, 0 non-2xx", s.System, plural(g.Keys, "key")),
					Measured: fmt.Sprintf("%.0f%%, %d deadlocks, %d non-2xx", 100*row.VersusOne, row.Deadlocks, s.Non2xx),
					Status:   verdict(row.VersusOne >= 0.8 && row.Deadlocks == 0 && s.Non2xx == 0),
				})
			}
		}
	}
	return out
}
