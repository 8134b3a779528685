//go:build !fuzzing

package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestSeedFlow walks the seed's whole use: create a key, generate, read
// its statistics, set its remaining calls, read the site statistics.
func TestSeedFlow(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)

		r := f.do("POST", "/api/apikey", map[string]any{"apiKey": "seed-client-key-1", "initialRemainingCalls": 3}, admin()...)
		if r.status != http.StatusCreated || r.json["apiKey"] != "seed-client-key-1" || r.json["remainingCalls"] != 3.0 {
			t.Fatalf("create: got %d %s", r.status, r.body)
		}
		f.wantError(f.do("POST", "/api/apikey", map[string]any{"apiKey": "seed-client-key-1", "initialRemainingCalls": 3}, admin()...),
			http.StatusConflict, "key_exists")

		// The seed's body form: the key in the body, with extra fields.
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Request-ID", "the-targets-own")
			io.WriteString(w, `{"images":["aW1n"]}`)
		})
		r = f.do("POST", "/api/generate?apiKey=leak&x=1", `{"apiKey":"seed-client-key-1","prompt":"a cat","width":512,"height":512,"steps":20,"batch_size":1,"model":"default","sampler":{"name":"euler"},"cfg_scale":7.5}`,
			"X-Request-ID", "req-123")
		if r.status != http.StatusOK || string(r.body) != `{"images":["aW1n"]}` || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("generate: got %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
		}
		if ids := r.header.Values("X-Request-ID"); len(ids) != 1 || ids[0] != "req-123" {
			t.Errorf("X-Request-ID returned: got %q, want just req-123", ids)
		}
		req, body := f.target.lastRequest()
		var fwd map[string]any
		if err := json.Unmarshal(body, &fwd); err != nil {
			t.Fatalf("forwarded body %q: %v", body, err)
		}
		if _, ok := fwd["apiKey"]; ok {
			t.Errorf("forwarded body still has apiKey: %s", body)
		}
		if fwd["prompt"] != "a cat" || fwd["cfg_scale"] != 7.5 || fmt.Sprint(fwd["sampler"]) != "map[name:euler]" || fwd["model"] != "default" {
			t.Errorf("forwarded body lost fields: %s", body)
		}
		if req.URL.RawQuery != "" {
			t.Errorf("the client's query %q reached the target", req.URL.RawQuery)
		}
		if req.URL.Path != "/api/generate" || req.Header.Get("Authorization") != "Bearer target-secret" || req.Header.Get("X-Request-ID") != "req-123" {
			t.Errorf("forwarded request: path %q, Authorization %q, X-Request-ID %q", req.URL.Path, req.Header.Get("Authorization"), req.Header.Get("X-Request-ID"))
		}
		if req.ContentLength != int64(len(body)) {
			t.Errorf("forwarded Content-Length %d, body %d bytes", req.ContentLength, len(body))
		}

		// The other two key forms reach the same key; none leaks to the target.
		for _, h := range [][]string{{"Authorization", "Bearer seed-client-key-1"}, {"X-API-Key", "seed-client-key-1"}} {
			if r := f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, h...); r.status != http.StatusOK {
				t.Errorf("generate with %s: got %d %s", h[0], r.status, r.body)
			}
			req, _ := f.target.lastRequest()
			if strings.Contains(fmt.Sprint(req.Header), "seed-client-key-1") {
				t.Errorf("client key forwarded to the target in %v", req.Header)
			}
		}
		f.wantError(f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, "X-API-Key", "seed-client-key-1"), http.StatusTooManyRequests, "quota_exhausted")
		if got := f.target.calls.Load(); got != 3 {
			t.Errorf("target calls: got %d, want 3 (the 429 must not reach it)", got)
		}

		r = f.do("GET", "/api/apikey?apiKey=seed-client-key-1", nil)
		if r.status != http.StatusOK || r.json["totalCalls"] != 3.0 || r.json["successfulCalls"] != 3.0 || r.json["remainingCalls"] != 0.0 {
			t.Errorf("stats: got %d %s", r.status, r.body)
		}
		if strings.Contains(string(r.body), "seed-client-key-1") || !strings.HasSuffix(r.json["apiKey"].(string), "…") {
			t.Errorf("stats show the full key: %s", r.body)
		}
		for _, field := range []string{"createdAt", "updatedAt"} {
			if _, err := time.Parse(time.RFC3339, r.json[field].(string)); err != nil || !strings.HasSuffix(r.json[field].(string), "Z") {
				t.Errorf("%s = %v: want RFC 3339 UTC", field, r.json[field])
			}
		}

		r = f.do("PUT", "/api/apikey", map[string]any{"apiKey": "seed-client-key-1", "remainingCalls": 5}, admin()...)
		if r.status != http.StatusOK || r.json["remainingCalls"] != 5.0 {
			t.Errorf("set remaining: got %d %s", r.status, r.body)
		}
		f.wantCounts("seed-client-key-1", counts{total: 3, successful: 3, remaining: 5})
		f.wantError(f.do("PUT", "/api/apikey", map[string]any{"apiKey": "nope", "remainingCalls": 5}, admin()...), http.StatusNotFound, "key_not_found")
		f.wantError(f.do("GET", "/api/apikey?apiKey=nope", nil), http.StatusNotFound, "key_not_found")

		r = f.do("GET", "/api/stats", nil, admin()...)
		today := time.Now().UTC().Format(time.DateOnly)
		if r.status != http.StatusOK || r.json["totalGenerations"] != 3.0 || r.json["dailyGenerations"] != 3.0 ||
			fmt.Sprint(r.json["days"]) != fmt.Sprintf("[map[date:%s generations:3]]", today) {
			t.Errorf("site stats: got %d %s", r.status, r.body)
		}
	})
}

func TestGeneratedKey(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		a, b := f.createKey(1), f.createKey(1)
		for _, k := range []string{a, b} {
			if len(k) != 35 || !strings.HasPrefix(k, "fx_") || strings.Trim(k[3:], "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") != "" {
				t.Errorf("generated key %q: want fx_ + 32 base62", k)
			}
		}
		if a == b {
			t.Error("two generated keys are equal")
		}
		if r := f.generate(a); r.status != http.StatusOK {
			t.Errorf("generate with a generated key: %d %s", r.status, r.body)
		}
	})
}

func TestAdminAuth(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		for _, tc := range []struct{ method, path, body string }{
			{"POST", "/api/apikey", `{"initialRemainingCalls":1}`},
			{"PUT", "/api/apikey", `{"apiKey":"k","remainingCalls":1}`},
			{"GET", "/api/stats", ""},
		} {
			for _, auth := range []string{"", "Bearer wrong", "Bearer " + adminToken + "x", "Basic " + adminToken, adminToken} {
				r := f.do(tc.method, tc.path, tc.body, "Authorization", auth)
				f.wantError(r, http.StatusUnauthorized, "admin_required")
				if r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s with %q: no WWW-Authenticate", tc.method, tc.path, auth)
				}
			}
		}
		off := newFelix(t, storetest.URL(t, "sqlite"), func(o *server.Options) { o.AdminToken = "" })
		r := off.do("POST", "/api/apikey", `{"initialRemainingCalls":1}`, "Authorization", "Bearer ")
		off.wantError(r, http.StatusForbidden, "admin_disabled")
		if !strings.Contains(r.json["error"].(string), "ADMIN_TOKEN") {
			t.Errorf("admin_disabled does not say how to enable: %s", r.body)
		}
	})
}

// patient gives a test's Felix a store timeout far beyond any load, for
// tests of exactness under concurrency rather than of latency: on a busy
// machine under -race, 200 calls at once can wait seconds for the writer.
func patient(o *quota.Options) { o.StoreTimeout = time.Minute }

// TestNoOverspend is invariant 1: 200 concurrent requests against 50
// remaining calls get exactly 50 successes and 150 answers 429. The
// target holds every call it gets until 150 refusals have been answered,
// so the refusals all meet 50 calls in flight (reserved, not yet
// settled); a 51st call reaching it opens the gate at once, so that an
// overspend fails the test instead of hanging it.
func TestNoOverspend(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		const allowed, refusals = 50, 150
		gate := make(chan struct{})
		open := sync.OnceFunc(func() { close(gate) })
		var arrived, refused atomic.Int64
		f := newFelixQuota(t, db, newTarget(t), patient, func(o *server.Options) { o.TargetTimeout = time.Minute })
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			if arrived.Add(1) > allowed {
				open()
			}
			select {
			case <-gate:
			case <-r.Context().Done():
			}
			io.WriteString(w, `{"images":[]}`)
		})
		key := f.createKey(allowed)
		statuses := concurrently(t, allowed+refusals, func(int) int {
			s := f.generate(key).status
			if s == http.StatusTooManyRequests && refused.Add(1) == refusals {
				open()
			}
			return s
		})
		if statuses[200] != allowed || statuses[429] != refusals || len(statuses) != 2 {
			t.Errorf("statuses: got %v, want %d×200 and %d×429", statuses, allowed, refusals)
		}
		if got := f.target.calls.Load(); got != allowed {
			t.Errorf("target calls: got %d, want %d", got, allowed)
		}
		f.wantCounts(key, counts{total: allowed, successful: allowed, remaining: 0})
	})
}

// TestNoOverspendTwoServers is invariant 1 with two Felix servers, each
// with its own store connection, sharing one database.
func TestNoOverspendTwoServers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		tg := newTarget(t)
		a, b := newFelixQuota(t, db, tg, patient), newFelixQuota(t, db, tg, patient)
		key := a.createKey(50)
		statuses := concurrently(t, 200, func(i int) int {
			if i%2 == 0 {
				return a.generate(key).status
			}
			return b.generate(key).status
		})
		if statuses[200] != 50 || statuses[429] != 150 || len(statuses) != 2 {
			t.Errorf("statuses: got %v, want 50×200 and 150×429", statuses)
		}
		if got := tg.calls.Load(); got != 50 {
			t.Errorf("target calls: got %d, want 50", got)
		}
		b.wantCounts(key, counts{total: 50, successful: 50, remaining: 0})
	})
}

// TestOnlySuccessCosts is invariants 2 and 4: with the target failing
// every third call, exactly the successes are charged, and per-key
// successes, the site total and the daily history agree.
func TestOnlySuccessCosts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			var body struct{ Prompt string }
			json.NewDecoder(r.Body).Decode(&body)
			switch body.Prompt[len(body.Prompt)-1] % 3 {
			case 0:
				http.Error(w, `{"detail":"out of memory"}`, http.StatusInternalServerError)
			case 1:
				http.Error(w, `{"detail":"bad model"}`, http.StatusUnprocessableEntity)
			default:
				io.WriteString(w, `{"images":[]}`)
			}
		})
		keys := []string{f.createKey(1000), f.createKey(1000)}
		var mu sync.Mutex
		ok := map[string]int64{}
		statuses := concurrently(t, 90, func(i int) int {
			key := keys[i%2]
			r := f.do("POST", "/api/generate", map[string]any{"prompt": fmt.Sprintf("p%c", '0'+i%10)}, "X-API-Key", key)
			if r.status == http.StatusOK {
				mu.Lock()
				ok[key]++
				mu.Unlock()
			}
			return r.status
		})
		// Digits 0-9 mod 3: 0,3,6,9 → 500; 1,4,7 → 422; 2,5,8 → 200.
		if statuses[200] != 27 || statuses[500] != 36 || statuses[422] != 27 {
			t.Errorf("statuses: got %v, want 27×200, 36×500, 27×422 (target's answers passed through)", statuses)
		}
		var sum int64
		for _, key := range keys {
			f.wantCounts(key, counts{total: 45, successful: ok[key], remaining: 1000 - ok[key]})
			sum += ok[key]
		}
		if total, daily := f.siteTotals(); total != sum || daily != sum {
			t.Errorf("site total %d, daily history %d, per-key successes %d: want all equal", total, daily, sum)
		}
	})
}

// concurrently runs n calls of f at once and counts the statuses.
func concurrently(t *testing.T, n int, f func(i int) int) map[int]int {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	statuses := map[int]int{}
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			s := f(i)
			mu.Lock()
			statuses[s]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return statuses
}

// TestTargetSettings: TARGET_API_PATH and a TARGET_API_KEY_HEADER other
// than Authorization reach the target as configured, and a client's
// unusable X-Request-ID is replaced by one Felix generates.
func TestTargetSettings(t *testing.T) {
	f := newFelix(t, storetest.URL(t, "sqlite"), func(o *server.Options) {
		o.TargetPath = "/sdapi/v1/txt2img"
		o.TargetKeyHeader = "X-Upstream-Key"
	})
	key := f.createKey(1)
	r := f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, "Authorization", "Bearer "+key, "X-Request-ID", "has spaces in it")
	if r.status != http.StatusOK {
		t.Fatalf("generate: %d %s", r.status, r.body)
	}
	req, _ := f.target.lastRequest()
	if req.URL.Path != "/sdapi/v1/txt2img" {
		t.Errorf("target path: got %q, want /sdapi/v1/txt2img", req.URL.Path)
	}
	if got := req.Header.Get("X-Upstream-Key"); got != "target-secret" {
		t.Errorf("X-Upstream-Key: got %q, want the target key", got)
	}
	if got := req.Header.Get("Authorization"); got != "" {
		t.Errorf("Authorization reached the target: %q", got)
	}
	id := r.header.Get("X-Request-ID")
	if id == "" || id == "has spaces in it" || req.Header.Get("X-Request-ID") != id {
		t.Errorf("X-Request-ID: client got %q, target got %q; want one generated ID for both", id, req.Header.Get("X-Request-ID"))
	}
}

// TestRequestInOneWrite: Felix sends a small call to the target in one
// write, request line, headers and body together, not the headers first
// and the body in a second packet.
func TestRequestInOneWrite(t *testing.T) {
	var writes atomic.Int64
	dialer := &net.Dialer{}
	f := newFelix(t, storetest.URL(t, "sqlite"), func(o *server.Options) {
		tr := server.NewTransport(o.TargetTimeout)
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c, &writes}, nil
		}
		o.Transport = tr
	})
	key := f.createKey(2)
	for i := range 2 { // a new connection, then the same one again
		writes.Store(0)
		if r := f.generate(key); r.status != http.StatusOK {
			t.Fatalf("call %d: got %d %s", i+1, r.status, r.body)
		}
		if n := writes.Load(); n != 1 {
			t.Errorf("call %d reached the target in %d writes, want 1", i+1, n)
		}
	}
}

// countingConn counts the writes made on a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
