//go:build !fuzzing

package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/testnet"
	"github.com/felix-gateway/felix/internal/testwait"
)

// TestTargetFaults: for each way a target can fail, the client's status
// and code, and whether the key was charged (only when the target's status
// line was 2xx). Only the timeout case runs under a short TARGET_TIMEOUT;
// the others get a long one, so that a slow machine cannot turn them into
// timeouts.
func TestTargetFaults(t *testing.T) {
	const short, long = 300 * time.Millisecond, time.Minute
	storetest.Each(t, func(t *testing.T, db string) {
		for _, tc := range []struct {
			name    string
			handler http.HandlerFunc
			status  int
			code    string // "" when the target's own answer passes through
			charged bool
			timeout time.Duration // TARGET_TIMEOUT
		}{
			{"500 passes through", func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "boom", http.StatusInternalServerError)
			}, 500, "", false, long},
			{"503 passes through", func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "busy", http.StatusServiceUnavailable)
			}, 503, "", false, long},
			{"422 passes through", func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"detail":"bad"}`, http.StatusUnprocessableEntity)
			}, 422, "", false, long},
			{"no headers before the timeout", func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(long):
				}
			}, 504, "upstream_timeout", false, short},
			{"connection closed without an answer", func(w http.ResponseWriter, r *http.Request) {
				conn, _, _ := http.NewResponseController(w).Hijack()
				conn.Close()
			}, 502, "upstream_unreachable", false, long},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := newFelix(t, db, func(o *server.Options) { o.TargetTimeout = tc.timeout })
				f.target.setHandler(tc.handler)
				key := f.createKey(10)
				r := f.generate(key)
				if r.status != tc.status || (tc.code != "" && r.json["code"] != tc.code) {
					t.Errorf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
				}
				want := counts{total: 1, remaining: 10}
				if tc.charged {
					want = counts{total: 1, successful: 1, remaining: 9}
				}
				f.wantCounts(key, want)
			})
		}
	})
}

// TestPausedBody: a target that pauses in the middle of its body has the
// call charged at its status line, before the body ends, and the whole
// body still reaches the client after the pause. The target pauses until
// the charge is in the store, not for a length of time.
func TestPausedBody(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db, func(o *server.Options) { o.TargetTimeout = time.Minute })
		key := f.createKey(10)
		first, rest := strings.Repeat("x", 100), strings.Repeat("y", 400)
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, first)
			http.NewResponseController(w).Flush()
			charged := testwait.For(10*time.Second, func() bool {
				k, err := f.quota.Key(context.Background(), key)
				return err == nil && k.SuccessfulCalls == 1
			})
			if !charged {
				t.Error("the call was not charged while its body was paused after the status line")
			}
			io.WriteString(w, rest)
		})
		r := f.generate(key)
		if r.status != http.StatusOK || string(r.body) != first+rest {
			t.Errorf("got %d with %d bytes, want 200 with the %d bytes sent around the pause", r.status, len(r.body), len(first+rest))
		}
		f.wantCounts(key, counts{total: 1, successful: 1, remaining: 9})
	})
}

func TestTargetRefusesConnections(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		dead, _ := url.Parse(testnet.RefusedURL(t))
		f := newFelix(t, db, func(o *server.Options) { o.Target = dead })
		key := f.createKey(3)
		f.wantError(f.generate(key), http.StatusBadGateway, "upstream_unreachable")
		f.wantCounts(key, counts{total: 1, remaining: 3})
	})
}

// TestResetMidBody: once the target's 2xx status line has arrived the
// call is charged, even if the body is then cut; the client sees the
// connection fail rather than a complete answer.
func TestResetMidBody(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		})
		key := f.createKey(3)
		req, _ := http.NewRequest("POST", f.url+"/api/generate", strings.NewReader(`{"prompt":"x"}`))
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Error("client read a complete answer from a cut body")
		}
		f.wantCounts(key, counts{total: 1, successful: 1, remaining: 2})
	})
}

// TestStreaming: the answer reaches the client while the target is still
// sending it, so Felix does not buffer bodies. The target holds back the
// rest of a 64 MiB answer until the client has read its first megabyte.
func TestStreaming(t *testing.T) {
	f := newFelix(t, storetest.URL(t, "sqlite"))
	const total, first = 64 << 20, 1 << 20
	gotFirst := make(chan struct{})
	f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		chunk := make([]byte, 32<<10)
		for sent := 0; sent < total; sent += len(chunk) {
			if sent == first {
				http.NewResponseController(w).Flush()
				select {
				case <-gotFirst:
				case <-time.After(10 * time.Second):
					t.Error("the client never got the first megabyte: Felix buffers the body")
					return
				}
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	key := f.createKey(1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	req, _ := http.NewRequest("POST", f.url+"/api/generate", strings.NewReader(`{"prompt":"big"}`))
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, first)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	close(gotFirst)
	n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	if err != nil || n+first != total {
		t.Errorf("read %d bytes, %v; want %d", n+first, err, total)
	}
	runtime.ReadMemStats(&after)
	// Everything this process allocated during the call (the target, Felix
	// and the client together) stays far below the answer's size.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("%d MiB allocated while streaming 64 MiB: the body is buffered somewhere", grew>>20)
	}
	f.wantCounts(key, counts{total: 1, successful: 1, remaining: 0})
}

// TestClientGoneCancelsTarget: a client that disconnects while the
// target works cancels the target's request, and the call is not charged.
func TestClientGoneCancelsTarget(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db, func(o *server.Options) { o.TargetTimeout = 10 * time.Second })
		started, cancelled := make(chan struct{}), make(chan struct{})
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			select {
			case <-r.Context().Done():
				close(cancelled)
			case <-time.After(10 * time.Second):
			}
		})
		key := f.createKey(3)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", f.url+"/api/generate", strings.NewReader(`{"prompt":"x"}`))
		req.Header.Set("X-API-Key", key)
		done := make(chan error)
		go func() {
			_, err := http.DefaultClient.Do(req)
			done <- err
		}()
		<-started
		cancel()
		<-done
		select {
		case <-cancelled:
		case <-time.After(5 * time.Second):
			t.Fatal("the target's request was not cancelled when the client left")
		}
		waitFor(t, func() bool { return f.counts(key).reserved == 0 })
		f.wantCounts(key, counts{total: 1, remaining: 3})
	})
}

// TestStoreUnavailable: when the store cannot be reached Felix answers
// 503 and never calls the target.
func TestStoreUnavailable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		key := f.createKey(3)
		f.store.Close()
		f.wantError(f.generate(key), http.StatusServiceUnavailable, "store_unavailable")
		f.wantError(f.do("GET", "/readyz", nil), http.StatusServiceUnavailable, "store_unavailable")
		if n := f.target.calls.Load(); n != 0 {
			t.Errorf("target called %d times with the store down", n)
		}
	})
}

// failingSettle is a store whose Settle fails its first failures calls;
// each failure first runs onFail.
type failingSettle struct {
	store.Store
	failures atomic.Int64
	attempts atomic.Int64
	onFail   func()
}

func (s *failingSettle) Settle(ctx context.Context, o quota.Outcome) error {
	s.attempts.Add(1)
	if s.failures.Add(-1) >= 0 {
		s.onFail()
		return errors.New("connection lost")
	}
	return s.Store.Settle(ctx, o)
}

// settleFelix is a Felix whose store's Settle fails, with a clock that
// each failed settle moves on by step.
func settleFelix(t *testing.T, db string, failures int64, step time.Duration) (*felix, *failingSettle) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	st := &failingSettle{Store: storetest.Open(t, db), onFail: func() { now.Add(int64(step)) }}
	st.failures.Store(failures)
	svc := quota.NewService(quota.Options{
		Ledger: st, Keys: st, Usage: st, Owner: "a", Hold: time.Minute,
		Now: func() time.Time { return time.Unix(0, now.Load()) },
	})
	tg := newTarget(t)
	u, _ := url.Parse(tg.URL)
	srv := httptestServer(t, server.New(server.Options{Quota: svc, Target: u, AdminToken: adminToken}))
	return &felix{t: t, url: srv, target: tg, quota: svc, store: st}, st
}

// TestSettleRetried: a settle that fails for a while (a database
// failover) is retried within the call's hold, and the answer is
// delivered and charged once.
func TestSettleRetried(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f, st := settleFelix(t, db, 3, 10*time.Second)
		key := f.createKey(3)
		if r := f.generate(key); r.status != http.StatusOK {
			t.Fatalf("generate: %d %s, want 200 after the settle was retried", r.status, r.body)
		}
		if n := st.attempts.Load(); n != 4 {
			t.Errorf("%d settle attempts, want 4 (3 failed, then success)", n)
		}
		f.wantCounts(key, counts{total: 1, successful: 1, remaining: 2})
	})
}

// TestSettleFails: if the call cannot be charged within its hold after the
// target answered 2xx, the answer is not delivered (503), and the call
// stays open until recovery releases it: never charged for an answer the
// client did not get, never forgotten.
func TestSettleFails(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f, st := settleFelix(t, db, 1000, 20*time.Second)
		key := f.createKey(3)
		f.wantError(f.generate(key), http.StatusServiceUnavailable, "store_unavailable")
		if n := st.attempts.Load(); n < 2 || n > 3 {
			t.Errorf("%d settle attempts, want 2 or 3 (retried until the 1-minute hold, 20 s per failure)", n)
		}
		f.wantCounts(key, counts{total: 1, remaining: 3, reserved: 1})
		st.failures.Store(0)
		st.onFail() // past the hold
		st.onFail()
		if n, err := f.quota.ReleaseExpired(context.Background()); n != 1 || err != nil {
			t.Fatalf("ReleaseExpired: %d, %v; want 1", n, err)
		}
		f.wantCounts(key, counts{total: 1, remaining: 3})
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testwait.Until(t, 5*time.Second, "the condition", cond)
}
