package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
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
)

// runFelix runs the command line with only the given environment and
// returns its output.
func runFelix(t *testing.T, environ map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := environ[k]; return v, ok }
	e := env{lookup: lookup, stdout: &out, stderr: &errOut, dir: t.TempDir()}
	err = dispatch(context.Background(), e, args)
	return out.String(), errOut.String(), err
}

func TestHelp(t *testing.T) {
	out, _, err := runFelix(t, nil, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commands {
		if !strings.Contains(out, c.name) {
			t.Errorf("felix --help does not list %s", c.name)
		}
	}
	_, errOut, err := runFelix(t, nil, "serve", "--help")
	if err == nil || !strings.Contains(errOut, "TARGET_API_DOMAIN") || !strings.Contains(errOut, "--addr") {
		t.Errorf("serve --help: got %v and %q; want flag.ErrHelp and every variable", err, errOut)
	}
	if _, _, err := runFelix(t, nil, "nope"); err == nil || !strings.Contains(err.Error(), `unknown command "nope"`) {
		t.Errorf("unknown command: got %v", err)
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
	var events []quota.Event
	if err := json.Unmarshal([]byte(felix("keys", "events", id, "--json")), &events); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action)
	}
	if got, want := strings.Join(actions, " "), "created set topup disabled enabled updated"; got != want {
		t.Errorf("keys events: got %q, want %q", got, want)
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
	for deadline := time.Now().Add(30 * time.Second); key == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
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
	}
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
