package store_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestWritableReadOnly: a store that refuses writes says so with
// quota.ErrReadOnly, in Writable and in a call's writes. On PostgreSQL the
// pool then drops the connection to the read-only server, so the store
// recovers by itself when a writable one is there.
func TestWritableReadOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		if err := store.Migrate(ctx, databaseURL); err != nil {
			t.Fatal(err)
		}
		s, err := store.Open(ctx, databaseURL, store.Options{MaxConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		newKey(t, s, "h", 10)
		if err := store.TurnReadOnly(ctx, s); err != nil {
			t.Fatal(err)
		}
		if err := s.Writable(ctx); !errors.Is(err, quota.ErrReadOnly) {
			t.Errorf("Writable on a read-only store: got %v, want quota.ErrReadOnly", err)
		}
		kind, _, _ := store.Parse(databaseURL)
		_, err = s.Reserve(ctx, call("h", "a", t0))
		switch {
		case kind == store.SQLiteKind && !errors.Is(err, quota.ErrReadOnly):
			t.Errorf("Reserve on a read-only SQLite file: got %v, want quota.ErrReadOnly", err)
		case kind == store.PostgresKind && err != nil:
			t.Errorf("Reserve after the read-only connection was seen: got %v, want a new, writable connection", err)
		}
	})
}

// TestOpenReadOnlyServer: opening a read-only PostgreSQL says so, whether
// the URL asks for a writable server or not, and Explain names
// target_session_attrs=read-write.
func TestOpenReadOnlyServer(t *testing.T) {
	base := storetest.URL(t, store.PostgresKind)
	if err := store.Migrate(context.Background(), base); err != nil {
		t.Fatal(err)
	}
	for _, params := range []string{"default_transaction_read_only=on", "default_transaction_read_only=on&target_session_attrs=read-write"} {
		s, err := store.Open(context.Background(), base+"&"+params, store.Options{})
		if err == nil {
			s.Close()
			t.Errorf("%s: Open succeeded, want quota.ErrReadOnly", params)
			continue
		}
		if !errors.Is(err, quota.ErrReadOnly) {
			t.Errorf("%s: got %v, want quota.ErrReadOnly", params, err)
		}
		if msg := store.Explain(err); !strings.Contains(msg, "target_session_attrs=read-write") {
			t.Errorf("%s: Explain: got %q, want it to name target_session_attrs=read-write", params, msg)
		}
	}
}

// TestOpenSkipsSilentHost: the first host of a multi-host URL accepts
// connections and never answers; Felix moves on to the next one instead of
// waiting for the caller's deadline.
func TestOpenSkipsSilentHost(t *testing.T) {
	base := storetest.URL(t, store.PostgresKind)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = storetest.SilentServer(t) + "," + u.Host
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, base); err != nil {
		t.Fatal(err)
	}
	s, err := store.Open(ctx, u.String(), store.Options{MaxConns: 1})
	if err != nil {
		t.Fatalf("Open with a silent first host: %v", err)
	}
	defer s.Close()
	if err := s.Writable(ctx); err != nil {
		t.Errorf("Writable: %v", err)
	}
}
