package main

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestStartupDatabaseErrors: every database problem at startup is one
// sentence naming DATABASE_URL and where its value came from, saying what
// to do, without the password; a database that never answers fails the
// start within STORE_CONNECT_TIMEOUT.
func TestStartupDatabaseErrors(t *testing.T) {
	base := storetest.URL(t, store.PostgresKind) // a migrated schema: the read-only cases get past the migrations
	if err := store.Migrate(context.Background(), base); err != nil {
		t.Fatal(err)
	}
	pg := func(edit func(u *url.URL, q url.Values)) string {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), "hunter2")
		q := u.Query()
		edit(u, q)
		u.RawQuery = q.Encode()
		return u.String()
	}
	silentURL := pg(func(u *url.URL, _ url.Values) { u.Host = storetest.SilentServer(t) })
	cases := []struct {
		name     string
		url      string
		inFile   string   // "" for the environment, else the .env file it is written to
		commands []string // each run with the URL
		want     []string
	}{
		{"wrong role", pg(func(u *url.URL, _ url.Values) { u.User = url.UserPassword("felix_no_such_role", "hunter2") }), ".env.local",
			[]string{"serve", "migrate", "keys list"},
			[]string{"DATABASE_URL (set in .env.local) cannot be used", `role "felix_no_such_role" does not exist`, "check the user and password"}},
		{"never answers", silentURL, "",
			[]string{"serve", "migrate", "keys list"},
			[]string{"DATABASE_URL (set in the environment) cannot be used", "did not answer within STORE_CONNECT_TIMEOUT=300ms"}},
		{"standby", pg(func(_ *url.URL, q url.Values) { q.Set("default_transaction_read_only", "on") }), ".env",
			[]string{"serve"},
			[]string{"DATABASE_URL (set in .env) cannot be used", "read-only", "target_session_attrs=read-write"}},
	}
	for _, c := range cases {
		for _, command := range c.commands {
			dir := t.TempDir()
			environ := map[string]string{"TARGET_API_DOMAIN": "http://127.0.0.1:1"}
			if c.url == silentURL {
				environ["STORE_CONNECT_TIMEOUT"] = "300ms"
			}
			if c.inFile == "" {
				environ["DATABASE_URL"] = c.url
			} else if err := os.WriteFile(filepath.Join(dir, c.inFile), []byte("DATABASE_URL="+c.url+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append(strings.Fields(command), "--addr", "127.0.0.1:0")
			if command != "serve" {
				args = strings.Fields(command)
			}
			var stderr bytes.Buffer
			e := env{
				lookup: func(k string) (string, bool) { v, ok := environ[k]; return v, ok },
				stdout: &bytes.Buffer{}, stderr: &stderr, dir: dir,
			}
			done := make(chan error, 1)
			go func() { done <- dispatch(context.Background(), e, args) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: felix %s still starting after 20s", c.name, command)
			}
			if err == nil {
				t.Errorf("%s: felix %s succeeded, want an error", c.name, command)
				continue
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%s: felix %s: got %q, want it to contain %q", c.name, command, msg, w)
				}
			}
			if strings.Contains(msg, "\n") || strings.Contains(msg, "hunter2") || strings.Contains(msg, "migrate") || strings.Count(msg, "DATABASE_URL (") != 1 {
				t.Errorf("%s: felix %s: got %q, want one sentence, without the password or the word migrate", c.name, command, msg)
			}
			if strings.Contains(stderr.String(), "hunter2") {
				t.Errorf("%s: felix %s logged the password: %s", c.name, command, stderr.String())
			}
		}
	}
}
