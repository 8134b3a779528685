package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// system is one proxy under load: the bare baseline or a Felix process.
type system struct {
	name  string
	procs []*child  // one, or several Felix instances sharing a database
	bases []string  // each process's, e.g. http://127.0.0.1:40123
	felix bool      // it keeps books that can be checked
	db    *database // the PostgreSQL database of its own, or nil
	keys  []string  // the API keys requests are spread over
	ok    []int64   // 200s seen per key, warm-ups included
}

// answered returns how many requests the system answered 2xx so far.
func (s *system) answered() int64 {
	var n int64
	for _, ok := range s.ok {
		n += ok
	}
	return n
}

// pids returns the system's process IDs.
func (s *system) pids() []int {
	pids := make([]int, len(s.procs))
	for i, c := range s.procs {
		pids[i] = c.pid()
	}
	return pids
}

// felixLogLevel is Felix's LOG_LEVEL: at info it logs one line per
// request, which costs throughput.
const felixLogLevel = "warn"

// felixProcess describes a felix serve process to start.
type felixProcess struct {
	name        string // shown in logs and reports
	instanceID  string
	databaseURL string
	target      string   // TARGET_API_DOMAIN
	env         []string // more settings, NAME=value
	policies    bool     // its keys have benchPolicies
}

// startFelix starts felix serve on a free loopback port, registers it and
// waits until GET /readyz answers 200. Felix runs in dir, so that no .env file of the
// working directory applies, with only the variables below (plus the Go
// runtime's, when set).
func (r *runner) startFelix(ctx context.Context, p felixProcess) (*child, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	env := []string{
		"TARGET_API_DOMAIN=" + p.target,
		"ADMIN_TOKEN=" + r.adminToken,
		"PORT=" + strconv.Itoa(port),
		"DATABASE_URL=" + p.databaseURL,
		"LOG_LEVEL=" + felixLogLevel,
		"INSTANCE_ID=" + p.instanceID,
	}
	env = append(env, p.env...)
	for _, name := range []string{"GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG"} {
		if v, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+v)
		}
	}
	// PORT alone would listen on every interface; --addr keeps Felix on
	// loopback.
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c, err := startChild(p.name, r.log, r.dir, env, io.Discard, r.felixBin, "serve", "--addr", addr)
	if err != nil {
		return nil, "", err
	}
	r.children = append(r.children, c)
	base := "http://" + addr
	if err := waitReady(ctx, c, base+"/readyz"); err != nil {
		return nil, "", err
	}
	return c, base, nil
}

// waitReady polls url every 50 ms until it answers 200, for up to 60 s.
func waitReady(ctx context.Context, c *child, url string) error {
	const every, limit = 50 * time.Millisecond, 60 * time.Second
	client := &http.Client{Timeout: time.Second}
	var last string
	for range int(limit / every) {
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-c.exited:
			return fmt.Errorf("%s exited at start: %v", c.name, c.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return fmt.Errorf("%s: GET %s did not answer 200 within %s (last: %s)", c.name, url, limit, last)
}

// createKey creates an API key with calls remaining through Felix's admin
// API and returns the full key.
func (r *runner) createKey(ctx context.Context, base, name string, calls int64) (string, error) {
	return r.createKeyWith(ctx, base, "/api/apikey", map[string]any{"initialRemainingCalls": calls, "name": name})
}

// benchPolicies are the policies of the keys of felix-sqlite-policies:
// every one the reserving write evaluates, none that ever refuses a call
// of the benchmark (a rate limit far above any load, a cost of 1 per
// image with the benchmark's one image per call).
var benchPolicies = map[string]any{
	"rateLimit":    map[string]any{"requests": 1_000_000_000, "per": "second"},
	"costPerImage": true,
}

// createPolicyKey creates a key with calls remaining and benchPolicies.
func (r *runner) createPolicyKey(ctx context.Context, base, name string, calls int64) (string, error) {
	fields := map[string]any{"remainingCalls": calls, "name": name}
	for k, v := range benchPolicies {
		fields[k] = v
	}
	return r.createKeyWith(ctx, base, "/api/keys", fields)
}

// createKeyWith creates a key by POSTing fields to path.
func (r *runner) createKeyWith(ctx context.Context, base, path string, fields map[string]any) (string, error) {
	body, _ := json.Marshal(fields)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+r.adminToken)
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		APIKey string `json:"apiKey"`
	}
	if err := doJSON(r.client, req, http.StatusCreated, &out); err != nil {
		return "", fmt.Errorf("create key: %w", err)
	}
	return out.APIKey, nil
}

// keyStats is what GET /api/apikey tells about a key.
type keyStats struct {
	TotalCalls      int64 `json:"totalCalls"`
	SuccessfulCalls int64 `json:"successfulCalls"`
	RemainingCalls  int64 `json:"remainingCalls"`
}

// getKeyStats reads a key's statistics from GET /api/apikey.
func (r *runner) getKeyStats(ctx context.Context, base, key string) (keyStats, error) {
	var out keyStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/apikey?apiKey="+url.QueryEscape(key), nil)
	if err != nil {
		return out, err
	}
	if err := doJSON(r.client, req, http.StatusOK, &out); err != nil {
		return out, fmt.Errorf("key statistics: %w", err)
	}
	return out, nil
}

// doJSON sends req and decodes its answer, which must have status want.
func doJSON(client *http.Client, req *http.Request, want int, out any) error {
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// createSchema creates a fresh schema on the PostgreSQL server at base and
// returns base with search_path set to it, and a function dropping it.
func createSchema(ctx context.Context, base string) (string, func(context.Context) error, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, fmt.Errorf("--pg is not a postgres:// URL")
	}
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("--pg: connect to %s: %w", u.Redacted(), err)
	}
	defer conn.Close(ctx)
	schema := "felix_bench_" + strings.ToLower(rand.Text()[:12])
	ident := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		return "", nil, fmt.Errorf("--pg: create schema: %w", err)
	}
	drop := func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return fmt.Errorf("drop schema %s: %w", schema, err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", schema, err)
		}
		return nil
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}
