package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/syncbuf"

	"github.com/felix-gateway/felix/internal/testwait"
)

// result is what one command line did.
type result struct {
	stdout, stderr string
	code           int // the exit status main gives
	err            error
}

// felixIn runs the command line as main does, with dir as the working
// directory and only the given environment.
func felixIn(t *testing.T, dir string, environ map[string]string, args ...string) result {
	t.Helper()
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := environ[k]; return v, ok }
	// A bound, so that a command that should have failed but serves ends.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, args, lookup, &out, &errOut)
	code := exitCode(err, &errOut)
	return result{out.String(), errOut.String(), code, err}
}

// runFelix runs the command line in an empty folder with only the given
// environment and returns its output.
func runFelix(t *testing.T, environ map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	r := felixIn(t, t.TempDir(), environ, args...)
	return r.stdout, r.stderr, r.err
}

// TestHelp: every --help prints to stdout and exits 0; a usage error
// prints to stderr and exits 2.
func TestHelp(t *testing.T) {
	r := felixIn(t, t.TempDir(), nil, "--help")
	for _, c := range commands {
		if !strings.Contains(r.stdout, c.name) {
			t.Errorf("felix --help does not list %s", c.name)
		}
	}
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"},
		{"serve", "--help"}, {"serve", "-h"}, {"demo", "--help"}, {"migrate", "--help"}, {"stats", "--help"}, {"version", "--help"},
		{"keys", "--help"}, {"keys", "create", "--help"}, {"keys", "list", "-h"}, {"keys", "--json", "show", "--help"},
	} {
		r := felixIn(t, t.TempDir(), nil, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: felix") || r.stderr != "" {
			t.Errorf("felix %s: got exit %d, stdout %q, stderr %q; want exit 0 and the usage on stdout only",
				strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	if r := felixIn(t, t.TempDir(), nil, "serve", "--help"); !strings.Contains(r.stdout, "TARGET_API_DOMAIN") || !strings.Contains(r.stdout, "--addr") {
		t.Errorf("serve --help: got %q, want every flag and variable", r.stdout)
	}
	for _, args := range [][]string{
		{}, {"nope"}, {"serve", "--bogus"}, {"stats", "--days", "many"}, {"version", "-x"},
		{"keys"}, {"keys", "frob"}, {"keys", "create", "extra"}, {"keys", "show"}, {"keys", "set", "fx_k"}, {"keys", "list", "--limit", "x"},
	} {
		r := felixIn(t, t.TempDir(), nil, args...)
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "Usage: felix") {
			t.Errorf("felix %s: got exit %d, stdout %q, stderr %q; want exit 2 and the usage on stderr only",
				strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	if r := felixIn(t, t.TempDir(), nil, "nope"); !strings.Contains(r.stderr, `unknown command "nope"`) {
		t.Errorf("unknown command: got %q", r.stderr)
	}
}

// TestOneShotCommandsNeedADatabase: keys and stats in a folder without the
// database refuse with one sentence and create nothing; only serve and
// migrate create a database.
func TestOneShotCommandsNeedADatabase(t *testing.T) {
	for _, tc := range []struct {
		databaseURL string // "" leaves DATABASE_URL unset; ABS is an absolute path
		shown       string
	}{
		{"", "./felix.db"},
		{"felix.db", "./felix.db"},
		{"./data/felix.db", "./data/felix.db"},
		{"sqlite:other.db", "./other.db"},
		{"ABS", "ABS"},
		{"sqlite://ABS", "ABS"},
	} {
		for _, args := range [][]string{
			{"stats"}, {"keys", "list"}, {"keys", "create", "--calls", "5"}, {"keys", "show", "fx_k"}, {"keys", "set", "fx_k", "3"},
			{"serve", "--no-migrate", "--addr", "127.0.0.1:0"},
		} {
			dir, elsewhere := t.TempDir(), t.TempDir()
			abs := filepath.Join(elsewhere, "missing.db")
			environ := map[string]string{"TARGET_API_DOMAIN": "http://127.0.0.1:9"}
			if tc.databaseURL != "" {
				environ["DATABASE_URL"] = strings.Replace(tc.databaseURL, "ABS", abs, 1)
			}
			r := felixIn(t, dir, environ, args...)
			want := "felix: no database at " + strings.Replace(tc.shown, "ABS", abs, 1) + "; set DATABASE_URL or run from the folder that holds it"
			if r.code != 1 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("DATABASE_URL=%q felix %s: got exit %d, stderr %q; want exit 1 and one line starting %q",
					environ["DATABASE_URL"], strings.Join(args, " "), r.code, r.stderr, want)
			}
			for _, d := range []string{dir, elsewhere} {
				if entries, _ := os.ReadDir(d); len(entries) != 0 {
					t.Errorf("DATABASE_URL=%q felix %s: created %s", environ["DATABASE_URL"], strings.Join(args, " "), entries[0].Name())
				}
			}
		}
	}
}

// TestServeOnBusyPort: serve binds its address before it creates or
// migrates anything, so a busy port leaves no database behind.
func TestServeOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	r := felixIn(t, dir, map[string]string{"TARGET_API_DOMAIN": "http://127.0.0.1:9"}, "serve", "--addr", busy.Addr().String())
	if want := "felix: listen on " + busy.Addr().String(); r.code != 1 || !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, "set PORT or --addr to a free port") {
		t.Errorf("serve on a busy port: got exit %d, stderr %q; want exit 1 and %q… a free port", r.code, r.stderr, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("serve on a busy port created %s", entries[0].Name())
	}
}

// TestBareDatabasePath: DATABASE_URL may name the SQLite file as a plain
// path, relative or absolute, before it exists: serve and migrate create
// it, keys and stats then use it.
func TestBareDatabasePath(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{"DATABASE_URL": "./data/felix.db", "TARGET_API_DOMAIN": "http://127.0.0.1:9", "LOG_FORMAT": "json"}

	// serve creates ./data/felix.db, relative to the working directory.
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncbuf.Buffer
	lookup := func(k string) (string, bool) { v, ok := environ[k]; return v, ok }
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0"}, lookup, io.Discard, &logs) }()
	var addr string
	if !testwait.For(30*time.Second, func() bool {
		for line := range strings.Lines(logs.String()) {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "felix listening" {
				addr = rec.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve with DATABASE_URL=./data/felix.db stopped: %v\n%s", err, logs.String())
		default:
		}
		return addr != ""
	}) {
		t.Fatalf("serve with DATABASE_URL=./data/felix.db did not start within 30s:\n%s", logs.String())
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve stopped with %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "felix.db")); err != nil {
		t.Errorf("no database file after serve: %v", err)
	}
	if r := felixIn(t, dir, environ, "keys", "create", "--calls", "2"); r.code != 0 || !strings.Contains(r.stdout, "fx_") {
		t.Errorf("keys create on the file serve created: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}

	// migrate creates an absolute path, as /var/lib/felix/felix.db.
	abs := map[string]string{"DATABASE_URL": filepath.Join(t.TempDir(), "felix.db")}
	if r := felixIn(t, t.TempDir(), abs, "migrate"); r.code != 0 || !strings.Contains(r.stdout, "migrations applied (sqlite)") {
		t.Fatalf("migrate: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if r := felixIn(t, t.TempDir(), abs, "stats"); r.code != 0 || !strings.Contains(r.stdout, "Total generations: 0") {
		t.Errorf("stats after migrate: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

// TestServeNeedsTarget: a missing or malformed setting stops serve with a
// sentence naming the variable and an example.
func TestServeNeedsTarget(t *testing.T) {
	_, _, err := runFelix(t, map[string]string{"PORT": "70000"}, "serve")
	if err == nil {
		t.Fatal("serve without TARGET_API_DOMAIN started")
	}
	for _, want := range []string{"TARGET_API_DOMAIN", "https://", "PORT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// TestKeysAndStats drives the one-shot commands on one SQLite file: a key
// addressed by id, display prefix and full key, each subcommand with its
// own flags, the usage log and the books.
func TestKeysAndStats(t *testing.T) {
	environ := map[string]string{"DATABASE_URL": "sqlite:" + filepath.Join(t.TempDir(), "f.db")}
	felix := func(args ...string) string {
		t.Helper()
		out, errOut, err := runFelix(t, environ, args...)
		if err != nil {
			t.Fatalf("felix %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	felix("migrate")
	var created struct {
		ID             int64
		APIKey         string
		RemainingCalls int64
		Name           string
	}
	out := felix("keys", "--json", "create", "--calls", "7", "--name", "acme")
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.APIKey, "fx_") || created.RemainingCalls != 7 || created.Name != "acme" {
		t.Fatalf("keys create: got %q (%v)", out, err)
	}
	id := strconv.FormatInt(created.ID, 10)
	prefix := quota.DisplayPrefix(created.APIKey)
	if out = felix("keys", "set", created.APIKey, "3"); !regexp.MustCompile(`acme\s+active\s+0\s+0\s+3\s`).MatchString(out) {
		t.Errorf("keys set by full key: got %q", out)
	}
	if out = felix("keys", "topup", prefix, "2"); !regexp.MustCompile(`acme\s+active\s+0\s+0\s+5\s`).MatchString(out) {
		t.Errorf("keys topup by display prefix: got %q", out)
	}
	if out = felix("keys", "show", id); strings.Contains(out, created.APIKey) || !strings.Contains(out, quota.Mask(created.APIKey)) {
		t.Errorf("keys show must show the masked key only: got %q", out)
	}
	if out = felix("keys", "disable", id); !strings.Contains(out, "disabled") {
		t.Errorf("keys disable: got %q", out)
	}
	felix("keys", "enable", id)
	if out = felix("keys", "expire", id, "2099-01-01"); !strings.Contains(out, "2099-01-01T00:00:00Z") {
		t.Errorf("keys expire: got %q", out)
	}
	var listed []quota.Stats
	if err := json.Unmarshal([]byte(felix("keys", "list", "--json")), &listed); err != nil || len(listed) != 1 || listed[0].RemainingCalls != 5 {
		t.Errorf("keys list --json (the flag after the subcommand): got %+v, %v", listed, err)
	}
	felix("keys", "limits", id, "--rate", "60/minute", "--max-concurrent", "2", "--cost-per-image", "true", "--refill", "100/month")
	felix("keys", "limits", id, "--rate", "none", "--max-concurrent", "none", "--cost-per-image", "false", "--refill", "none")
	var events []quota.Event
	if err := json.Unmarshal([]byte(felix("keys", "events", id, "--json")), &events); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action)
	}
	if got, want := strings.Join(actions, " "), "created set topup disabled enabled updated updated updated"; got != want {
		t.Errorf("keys events: got %q, want %q", got, want)
	}
	if out = felix("keys", "limits", id, "--rate", "60/minute", "--max-concurrent", "2", "--cost-per-image", "true", "--refill", "100/month"); !strings.Contains(out, "60/minute, ≤2 at once, per image, refill 100/month") {
		t.Errorf("keys limits: got %q", out)
	}
	if out = felix("keys", "limits", id, "--rate", "none", "--max-concurrent", "none", "--cost-per-image", "false", "--refill", "none"); !strings.Contains(out, " - ") {
		t.Errorf("keys limits cleared: got %q", out)
	}
	if out = felix("books"); !strings.Contains(out, "the books balance") {
		t.Errorf("books: got %q", out)
	}
	if out = felix("usage", "--key", id, "--csv"); strings.TrimSpace(out) != strings.Join(quota.CallColumns, ",") {
		t.Errorf("usage --csv of a key without calls: got %q, want the header alone", out)
	}
	if out = felix("stats"); !strings.Contains(out, "Total generations: 0") {
		t.Errorf("stats: got %q", out)
	}
	felix("keys", "delete", id)
	for _, bad := range [][]string{
		{"keys", "show", id},                 // deleted
		{"keys", "show", "nope"},             // unknown
		{"keys", "show", "--calls", "5", id}, // a flag of another subcommand
		{"keys", "get", created.APIKey},      // no such subcommand
		{"keys", "set", id},                  // missing argument
		{"usage", "--outcome", "maybe"},      // bad filter
	} {
		if _, _, err := runFelix(t, environ, bad...); err == nil {
			t.Errorf("felix %s succeeded", strings.Join(bad, " "))
		}
	}
}

func TestMigrate(t *testing.T) {
	db := filepath.Join(t.TempDir(), "f.db")
	out, _, err := runFelix(t, map[string]string{"DATABASE_URL": "sqlite:" + db}, "migrate")
	if err != nil || !strings.Contains(out, "migrations applied") {
		t.Fatalf("migrate: got %q, %v", out, err)
	}
	if _, err := os.Stat(db); err != nil {
		t.Errorf("no database file after migrate: %v", err)
	}
}

// TestDemo runs `felix demo` as a user would: it prints a test page URL,
// an admin token and a key that generates a real image, and stops cleanly.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out syncbuf.Buffer
	e := env{lookup: func(string) (string, bool) { return "", false }, stdout: &out, stderr: io.Discard, dir: t.TempDir()}
	done := make(chan error, 1)
	go func() { done <- dispatch(ctx, e, []string{"demo", "--addr", "127.0.0.1:0"}) }()

	var page, key, token string
	testwait.For(30*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) >= 3 && f[0] == "Test" && f[1] == "page":
				page = f[2]
			case len(f) >= 3 && f[0] == "Admin" && f[1] == "token":
				token = f[2]
			case len(f) >= 3 && f[0] == "Demo" && f[1] == "key":
				key = f[2]
			}
		}
		return key != ""
	})
	if page == "" || key == "" || token == "" {
		t.Fatalf("demo did not print a page, token and key:\n%s", out.String())
	}
	resp, err := http.Get(page)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %v", page, resp, err)
	}
	resp.Body.Close()
	base := strings.TrimSuffix(page, "/test")
	req, _ := http.NewRequest("POST", base+"/api/generate", strings.NewReader(`{"prompt":"a red fox","width":32,"height":32}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Images []string }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body.Images) != 1 || !strings.HasPrefix(body.Images[0], "iVBORw0KGgo") {
		t.Errorf("generate with the demo key: %d, %d images", resp.StatusCode, len(body.Images))
	}
	req, _ = http.NewRequest("GET", base+"/api/stats", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("stats with the demo admin token: %v %v", resp, err)
	}
	resp.Body.Close()

	// serve and demo check each request's framing as sent (server.Listener).
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /api/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+key+"\r\n"+
		"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n12\r\n{\"prompt\":\"a fox\"}\r\n0\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a request with both Content-Length and Transfer-Encoding: got %v, %v; want 400", resp, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo stopped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("demo did not stop")
	}
}
