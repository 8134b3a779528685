//go:build !fuzzing

package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/syncbuf"
)

// readOnlyStore refuses writes, as a store on a PostgreSQL standby does,
// while on is set.
type readOnlyStore struct {
	store.Store
	on atomic.Bool
}

var errStandby = fmt.Errorf("store: %w: ERROR: cannot execute UPDATE in a read-only transaction (SQLSTATE 25006)", quota.ErrReadOnly)

func (s *readOnlyStore) Reserve(ctx context.Context, r quota.ReserveRequest) (quota.Admission, error) {
	if s.on.Load() {
		return quota.Admission{}, errStandby
	}
	return s.Store.Reserve(ctx, r)
}

func (s *readOnlyStore) Writable(ctx context.Context) error {
	if s.on.Load() {
		return errStandby
	}
	return s.Store.Writable(ctx)
}

// TestStoreReadOnly: on a read-only store Felix says so: generate answers
// 503 store_read_only without calling the target or charging, /readyz
// answers 503 store_read_only, and both recover when writes work again.
func TestStoreReadOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		st := &readOnlyStore{Store: storetest.Open(t, db)}
		svc := quota.NewService(quota.Options{Ledger: st, Keys: st, Usage: st, Owner: "a"})
		tg := newTarget(t)
		u, _ := url.Parse(tg.URL)
		var logs syncbuf.Buffer
		o := server.Options{Quota: svc, Target: u, AdminToken: adminToken}
		logged(&logs)(&o)
		srv := httptestServer(t, server.New(o))
		f := &felix{t: t, url: srv, target: tg, quota: svc, store: st}
		key := f.createKey(3)

		st.on.Store(true)
		f.wantError(f.generate(key), http.StatusServiceUnavailable, "store_read_only")
		before := len(logs.String())
		f.wantError(f.do("GET", "/readyz", nil), http.StatusServiceUnavailable, "store_read_only")
		// A load balancer polls /readyz every few seconds: its 503 is a
		// warning, not one more failed request.
		waitFor(t, func() bool { return strings.Contains(logs.String()[before:], `"msg":"not ready"`) })
		if polled := logs.String()[before:]; strings.Contains(polled, `"level":"ERROR"`) || !strings.Contains(polled, `"level":"WARN","msg":"not ready"`) {
			t.Errorf("/readyz's 503 logged as:\n%s\nwant a WARN \"not ready\" and no ERROR", polled)
		}
		if n := f.target.calls.Load(); n != 0 {
			t.Errorf("target called %d times by a Felix on a read-only store", n)
		}
		f.wantCounts(key, counts{remaining: 3})

		st.on.Store(false)
		if r := f.generate(key); r.status != http.StatusOK {
			t.Errorf("generate once writes work again: got %d %s, want 200", r.status, r.body)
		}
		if r := f.do("GET", "/readyz", nil); r.status != http.StatusOK {
			t.Errorf("/readyz once writes work again: got %d %s, want 200", r.status, r.body)
		}
	})
}

// TestReadyzNeedsWrites: while another process holds the lock that every
// call's write waits for (a backup, a maintenance script), /readyz answers
// 503, within the store's probe timeout; 200 as soon as it is gone.
func TestReadyzNeedsWrites(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		unlock := storetest.LockWrites(t, db)
		f.wantError(f.do("GET", "/readyz", nil), http.StatusServiceUnavailable, "store_unavailable")
		unlock()
		if r := f.do("GET", "/readyz", nil); r.status != http.StatusOK {
			t.Errorf("/readyz once the lock is released: got %d %s, want 200", r.status, r.body)
		}
	})
}
