package store_test

import (
	"context"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/testnet"
)

// TestExplain: what an operator reads when the store cannot be opened is
// one line that says what the database said and what to change, once,
// without the password.
func TestExplain(t *testing.T) {
	base := storetest.URL(t, store.PostgresKind)
	if err := store.Migrate(context.Background(), base); err != nil {
		t.Fatal(err)
	}
	pg := func(edit func(u *url.URL)) string {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), "hunter2")
		edit(u)
		return u.String()
	}
	refused := testnet.RefusedAddr(t)
	cases := []struct {
		name, url string
		want      []string // in the explanation
	}{
		{"unknown role", pg(func(u *url.URL) { u.User = url.UserPassword("felix_no_such_role", "hunter2") }),
			[]string{`role "felix_no_such_role" does not exist`, "28000", "check the user and password in DATABASE_URL"}},
		{"unknown database", pg(func(u *url.URL) { u.Path = "/felix_no_such_db" }),
			[]string{`database "felix_no_such_db" does not exist`, "create the database"}},
		{"nothing listens", pg(func(u *url.URL) { u.Host = refused }),
			[]string{refused + ": connection refused", "check the hosts and ports in DATABASE_URL"}},
		{"two hosts, none up", pg(func(u *url.URL) { u.Host = refused + "," + refused }),
			[]string{refused + ": connection refused; " + refused + ": connection refused"}},
		{"read-only, target_session_attrs", pg(func(u *url.URL) {
			q := u.Query()
			q.Set("default_transaction_read_only", "on")
			q.Set("target_session_attrs", "read-write")
			u.RawQuery = q.Encode()
		}), []string{"is read-only", "no server listed accepts writes (target_session_attrs=read-write)"}},
		{"read-only, plain", pg(func(u *url.URL) {
			q := u.Query()
			q.Set("default_transaction_read_only", "on")
			u.RawQuery = q.Encode()
		}), []string{"read-only", "target_session_attrs=read-write"}},
		{"SQLite folder missing", "sqlite:" + filepath.Join(t.TempDir(), "no", "such", "felix.db"),
			[]string{"no such file or directory", "check the path"}},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := store.Migrate(ctx, c.url)
		if err == nil {
			var s interface{ Close() error }
			s, err = store.Open(ctx, c.url, store.Options{})
			if err == nil {
				s.Close()
			}
		}
		cancel()
		if err == nil {
			t.Errorf("%s: Migrate and Open succeeded, want an error", c.name)
			continue
		}
		msg := store.Explain(err)
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: got %q, want it to contain %q", c.name, msg, w)
			}
		}
		if strings.Contains(msg, "\n") || strings.Contains(msg, "hunter2") || strings.Contains(msg, "migrate") {
			t.Errorf("%s: got %q, want one line without the password or the word migrate", c.name, msg)
		}
		if first := strings.Index(msg, "SQLSTATE"); first >= 0 && strings.LastIndex(msg, "SQLSTATE") != first {
			t.Errorf("%s: got %q, want the server's message once", c.name, msg)
		}
	}
}
