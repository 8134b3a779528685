//go:build !fuzzing

package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store/storetest"
	backend "github.com/felix-gateway/felix/internal/target"
	"github.com/felix-gateway/felix/internal/target/targettest"
	"github.com/felix-gateway/felix/internal/testnet"
)

// farm is the set of fake GPUs of one test. It records every call that
// reaches any of them, so that a request ID seen twice is caught.
type farm struct {
	t      *testing.T
	mu     sync.Mutex
	seen   map[string]string // request ID → the GPU that got it
	dupes  []string
	prompt []string // prompts in the order the GPUs got them
}

func newFarm(t *testing.T) *farm { return &farm{t: t, seen: map[string]string{}} }

// gpu is a fake image backend that runs its behaviour for each call and
// records how many it ran at once.
type gpu struct {
	*httptest.Server
	name    string
	mu      sync.Mutex
	running int
	peak    int
	calls   int
	ids     []string
	do      func(w http.ResponseWriter, r *http.Request)
}

// gpu starts a fake GPU; do answers each call (answer, when nil).
func (f *farm) gpu(name string, do func(w http.ResponseWriter, r *http.Request)) *gpu {
	if do == nil {
		do = answer
	}
	g := &gpu{name: name, do: do}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ Prompt string }
		json.Unmarshal(body, &req)
		id := r.Header.Get("X-Request-ID")
		f.mu.Lock()
		if prev, ok := f.seen[id]; ok || id == "" {
			f.dupes = append(f.dupes, fmt.Sprintf("%q at %s and %s", id, prev, name))
		}
		f.seen[id] = name
		f.prompt = append(f.prompt, req.Prompt)
		f.mu.Unlock()
		g.mu.Lock()
		g.running++
		g.calls++
		g.peak = max(g.peak, g.running)
		g.ids = append(g.ids, id)
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			g.running--
			g.mu.Unlock()
		}()
		g.do(w, r)
	}))
	f.t.Cleanup(g.Close)
	return g
}

func (g *gpu) url() *url.URL {
	u, _ := url.Parse(g.URL)
	return u
}

func (g *gpu) stats() (calls, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls, g.peak
}

func (g *gpu) wantCalls(t *testing.T, n int) {
	t.Helper()
	if got, _ := g.stats(); got != n {
		t.Errorf("%s got %d calls, want %d", g.name, got, n)
	}
}

// check fails the test if a request ID reached the GPUs twice or a GPU
// ran more than limit calls at once (limit 0: no check).
func (f *farm) check(limit int, gpus ...*gpu) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.dupes {
		f.t.Errorf("request ID sent twice or missing: %s", d)
	}
	for _, g := range gpus {
		if _, peak := g.stats(); limit > 0 && peak > limit {
			f.t.Errorf("%s ran %d calls at once, cap %d", g.name, peak, limit)
		}
	}
}

func answer(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"images":["aW1n"]}`)
}

// gated answers once the test lets it (or gives up when the caller leaves).
func gated(gate <-chan struct{}) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
			answer(w, r)
		case <-r.Context().Done():
		}
	}
}

func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// closeConn accepts the call, reads it whole, then closes the connection
// without an answer.
func closeConn(w http.ResponseWriter, r *http.Request) {
	conn, _, _ := http.NewResponseController(w).Hijack()
	conn.Close()
}

func fail500(w http.ResponseWriter, r *http.Request) {
	http.Error(w, `{"detail":"CUDA out of memory"}`, http.StatusInternalServerError)
}

// refusing returns a URL where nothing listens.
func refusing(t *testing.T) *url.URL {
	u, _ := url.Parse(testnet.RefusedURL(t))
	return u
}

// newPoolFelix starts Felix on db in front of a pool of urls.
func newPoolFelix(t *testing.T, db string, o backend.Options, urls ...*url.URL) (*felix, *backend.Pool) {
	o.URLs, o.Path = urls, "/api/generate"
	pool := backend.New(o)
	f := newFelix(t, db, func(so *server.Options) { so.Targets = pool; so.TargetTimeout = 500 * time.Millisecond })
	return f, pool
}

// post sends a generate call with prompt and key, safe in any goroutine.
func (f *felix) post(ctx context.Context, key, prompt string) response {
	body, _ := json.Marshal(map[string]any{"prompt": prompt})
	req, _ := http.NewRequestWithContext(ctx, "POST", f.url+"/api/generate", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{status: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	r.body, _ = io.ReadAll(resp.Body)
	json.Unmarshal(r.body, &r.json)
	return r
}

func postAsync(f *felix, key, prompt string) <-chan response {
	c := make(chan response, 1)
	go func() { c <- f.post(context.Background(), key, prompt) }()
	return c
}

// receive waits for an answer, failing the test after 10 s.
func receive(t *testing.T, c <-chan response) response {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no answer after 10s")
		return response{}
	}
}

// finish lets one gated job end, failing the test if none runs for 10 s.
func finish(t *testing.T, gate chan<- struct{}) {
	t.Helper()
	select {
	case gate <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatal("no job waiting to end after 10s")
	}
}

// waitQueue waits until n calls wait in the pool's queue.
func waitQueue(t *testing.T, pool *backend.Pool, n int) {
	t.Helper()
	waitFor(t, func() bool { return pool.Stats().Queue.Length == n })
}

func wantRetryAfter(t *testing.T, r response) {
	t.Helper()
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After: got %q, want whole seconds ≥ 1", r.header.Get("Retry-After"))
	}
}

// TestTargetCap: with a cap of 1 on two GPUs, twelve calls from two keys
// at once all succeed, no GPU ever runs two, no request ID reaches a GPU
// twice, and each key is charged exactly its calls.
func TestTargetCap(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		fm := newFarm(t)
		gate := make(chan struct{})
		a, b := fm.gpu("a", gated(gate)), fm.gpu("b", gated(gate))
		f, pool := newPoolFelix(t, db, backend.Options{MaxInFlight: 1}, a.url(), b.url())
		heavy, light := f.createKey(100), f.createKey(100)
		var answers []<-chan response
		for i := range 12 {
			key := heavy
			if i%4 == 0 {
				key = light
			}
			answers = append(answers, postAsync(f, key, fmt.Sprint("call ", i)))
		}
		waitQueue(t, pool, 10) // two run, ten wait
		for range 12 {
			finish(t, gate) // one job ends at a time
		}
		for i, c := range answers {
			if r := receive(t, c); r.status != http.StatusOK {
				t.Errorf("call %d: got %d %s, want 200", i, r.status, r.body)
			}
		}
		fm.check(1, a, b)
		ac, _ := a.stats()
		bc, _ := b.stats()
		if ac+bc != 12 || ac == 0 || bc == 0 {
			t.Errorf("GPUs got %d and %d calls, want 12 shared by both", ac, bc)
		}
		f.wantCounts(light, counts{total: 3, successful: 3, remaining: 97})
		f.wantCounts(heavy, counts{total: 9, successful: 9, remaining: 91})
		st := pool.Stats()
		if st.Queue.Length != 0 || st.Targets[0].InFlight+st.Targets[1].InFlight != 0 || st.Targets[0].Served+st.Targets[1].Served != 12 {
			t.Errorf("pool at the end: %+v, want nothing in flight or waiting and 12 served", st)
		}
	})
}

// TestFairTurns: calls waiting for the one GPU are served round-robin
// between keys: a key with six waiting cannot keep a key with two waiting
// behind all six.
func TestFairTurns(t *testing.T) {
	fm := newFarm(t)
	gate := make(chan struct{})
	g := fm.gpu("gpu", gated(gate))
	f, pool := newPoolFelix(t, storetest.URL(t, "sqlite"), backend.Options{MaxInFlight: 1}, g.url())
	heavy, light := f.createKey(100), f.createKey(100)
	var answers []<-chan response
	send := func(key, prompt string, queued int) {
		answers = append(answers, postAsync(f, key, prompt))
		waitQueue(t, pool, queued)
	}
	send(heavy, "h0", 0)
	waitFor(t, func() bool { return pool.Stats().Targets[0].InFlight == 1 })
	for i := range 6 {
		send(heavy, fmt.Sprint("h", i+1), i+1)
	}
	send(light, "l1", 7)
	send(light, "l2", 8)
	for range answers {
		finish(t, gate)
	}
	for _, c := range answers {
		if r := receive(t, c); r.status != http.StatusOK {
			t.Errorf("got %d %s, want 200", r.status, r.body)
		}
	}
	want := []string{"h0", "h1", "l1", "h2", "l2", "h3", "h4", "h5", "h6"}
	if !slices.Equal(fm.prompt, want) {
		t.Errorf("order the GPU got the calls in: got %v, want %v", fm.prompt, want)
	}
}

// TestQueueRefusals: a full queue and a wait past QUEUE_TIMEOUT answer 503
// with Retry-After; those calls were admitted (totalCalls) but are not
// charged and their reservations are released.
func TestQueueRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		fm := newFarm(t)
		gate := make(chan struct{})
		g := fm.gpu("gpu", gated(gate))
		clock := targettest.NewClock(time.Now())
		f, pool := newPoolFelix(t, db, backend.Options{MaxInFlight: 1, QueueMax: 1, QueueTimeout: time.Minute, Clock: clock}, g.url())
		key := f.createKey(10)
		running := postAsync(f, key, "runs")
		waitFor(t, func() bool { return pool.Stats().Targets[0].InFlight == 1 })
		queued := postAsync(f, key, "waits")
		waitQueue(t, pool, 1)

		full := f.post(context.Background(), key, "one too many")
		f.wantError(full, http.StatusServiceUnavailable, "queue_full")
		wantRetryAfter(t, full)

		clock.Advance(time.Minute)
		late := receive(t, queued)
		f.wantError(late, http.StatusServiceUnavailable, "queue_timeout")
		wantRetryAfter(t, late)

		finish(t, gate)
		if r := receive(t, running); r.status != http.StatusOK {
			t.Errorf("running call: got %d %s, want 200", r.status, r.body)
		}
		f.wantCounts(key, counts{total: 3, successful: 1, remaining: 9})
		g.wantCalls(t, 1)
		// The two refused calls are rows without a target or a status.
		want := []string{"failed null", "failed null", g.URL + " success 200"}
		if got := f.usageTargets(); !slices.Equal(got, want) {
			t.Errorf("usage log, newest first: got %q, want %q", got, want)
		}
	})
}

// TestLeaveQueue: a client that hangs up while its call waits leaves the
// queue at once; its call is released, never sent, never charged.
func TestLeaveQueue(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		fm := newFarm(t)
		gate := make(chan struct{})
		g := fm.gpu("gpu", gated(gate))
		f, pool := newPoolFelix(t, db, backend.Options{MaxInFlight: 1}, g.url())
		key := f.createKey(10)
		running := postAsync(f, key, "runs")
		waitFor(t, func() bool { return pool.Stats().Targets[0].InFlight == 1 })
		ctx, cancel := context.WithCancel(context.Background())
		gone := make(chan response, 1)
		go func() { gone <- f.post(ctx, key, "gives up") }()
		waitQueue(t, pool, 1)
		cancel()
		receive(t, gone)
		waitQueue(t, pool, 0)
		waitFor(t, func() bool { return f.counts(key).reserved == 1 }) // the running call only
		close(gate)
		if r := receive(t, running); r.status != http.StatusOK {
			t.Errorf("running call: got %d %s, want 200", r.status, r.body)
		}
		f.wantCounts(key, counts{total: 2, successful: 1, remaining: 9})
		g.wantCalls(t, 1) // the one that left was never sent
	})
}

// TestFailover: how each way a first GPU fails decides what the second
// one sees. Only a call that never connected moves on; one whose bytes
// went out is answered from the first GPU's failure and never sent again.
func TestFailover(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		for _, tc := range []struct {
			name       string
			first      func(w http.ResponseWriter, r *http.Request) // nil: refuses connections
			status     int
			code       string
			secondGot  int  // calls the second GPU got
			firstUp    bool // the first GPU is up afterwards
			firstError string
		}{
			{"refuses: the next one serves", nil, 200, "", 1, false, "the connection was refused"},
			{"accepts then closes: never sent again", closeConn, 502, "upstream_unreachable", 0, false, "the connection was closed before an answer"},
			{"hangs: never sent again", hang, 504, "upstream_timeout", 0, false, "no answer before the timeout"},
			{"answers 500: passed on, stays up", fail500, 500, "", 0, true, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				fm := newFarm(t)
				second := fm.gpu("second", nil)
				firstURL := refusing(t)
				gpus := []*gpu{second}
				if tc.first != nil {
					first := fm.gpu("first", tc.first)
					firstURL = first.url()
					gpus = append(gpus, first)
				}
				f, pool := newPoolFelix(t, db, backend.Options{}, firstURL, second.url())
				key := f.createKey(10)
				r := f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, "Authorization", "Bearer "+key, "X-Request-ID", "call-1")
				if r.status != tc.status || (tc.code != "" && r.json["code"] != tc.code) {
					t.Errorf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
				}
				fm.check(0, gpus...)
				second.wantCalls(t, tc.secondGot)
				if tc.secondGot > 0 && (len(second.ids) == 0 || second.ids[0] != "call-1") {
					t.Errorf("second GPU got X-Request-ID %q, want the client's call-1", second.ids[0])
				}
				want := counts{total: 1, remaining: 10}
				wantRow := fmt.Sprintf("%s failed %d", firstURL, tc.status) // the target's own status, or null
				switch tc.status {
				case 200:
					want = counts{total: 1, successful: 1, remaining: 9}
					wantRow = second.URL + " success 200"
				case 502, 504:
					wantRow = firstURL.String() + " failed null"
				}
				f.wantCounts(key, want)
				if got := f.usageTargets(); len(got) == 0 || got[0] != wantRow {
					t.Errorf("usage log, newest first: got %q, want %q first", got, wantRow)
				}
				st := pool.Stats().Targets[0]
				if wantFailed := int64(map[bool]int{true: 0, false: 1}[tc.firstUp]); st.Failed != wantFailed || st.Served != 1-wantFailed {
					t.Errorf("first GPU: got served %d, failed %d; want %d and %d", st.Served, st.Failed, 1-wantFailed, wantFailed)
				}
				if st.Up != tc.firstUp || (tc.firstError == "") != (st.LastError == nil) ||
					st.LastError != nil && !strings.HasPrefix(*st.LastError, tc.firstError) {
					t.Errorf("first GPU: got %+v (lastError %v), want up %v and lastError starting %q", st, ptr(st.LastError), tc.firstUp, tc.firstError)
				}
			})
		}
	})
}

// TestNeverSentTwice: a GPU that closes a kept-alive connection after
// reading a call gave no answer, but the call reached it: it is answered
// 502 and sent nowhere else, neither again on a new connection (the
// HTTP client's own retry) nor to the next GPU.
func TestNeverSentTwice(t *testing.T) {
	fm := newFarm(t)
	var calls int
	var mu sync.Mutex
	first := fm.gpu("first", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			answer(w, r) // the connection stays open for the next call
			return
		}
		closeConn(w, r)
	})
	second := fm.gpu("second", nil)
	f, _ := newPoolFelix(t, storetest.URL(t, "sqlite"), backend.Options{}, first.url(), second.url())
	key := f.createKey(10)
	if r := f.generate(key); r.status != http.StatusOK {
		t.Fatalf("first call: got %d %s, want 200", r.status, r.body)
	}
	f.wantError(f.generate(key), http.StatusBadGateway, "upstream_unreachable")
	fm.check(0, first, second)
	first.wantCalls(t, 2)
	second.wantCalls(t, 0)
	f.wantCounts(key, counts{total: 2, successful: 1, remaining: 9})
}

// usageTargets returns the target of every call in the usage log,
// newest first, with its outcome and status: "target outcome status".
func (f *felix) usageTargets() []string {
	f.t.Helper()
	var usage struct {
		Calls []struct {
			Target  string
			Outcome string
			Status  *int
		}
	}
	r := f.do("GET", "/api/usage", nil, admin()...)
	if r.status != http.StatusOK || json.Unmarshal(r.body, &usage) != nil {
		f.t.Fatalf("usage log: got %d %s", r.status, r.body)
	}
	var out []string
	for _, c := range usage.Calls {
		status := "null"
		if c.Status != nil {
			status = strconv.Itoa(*c.Status)
		}
		out = append(out, strings.TrimSpace(c.Target+" "+c.Outcome+" "+status))
	}
	return out
}

func ptr(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestNoTargetAvailable: once both GPUs refused a call they are down for
// the cooldown: later calls are answered 503 no_target_available at once,
// not charged; after the cooldown they are tried again. A lone GPU is
// never left out: every call tries it, as with no pool.
func TestNoTargetAvailable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		clock := targettest.NewClock(time.Now())
		f, pool := newPoolFelix(t, db, backend.Options{Cooldown: 10 * time.Second, Clock: clock}, refusing(t), refusing(t))
		key := f.createKey(5)
		f.wantError(f.generate(key), http.StatusBadGateway, "upstream_unreachable") // after trying both
		r := f.generate(key)
		f.wantError(r, http.StatusServiceUnavailable, "no_target_available")
		if got := r.header.Get("Retry-After"); got != "10" {
			t.Errorf("Retry-After: got %q, want 10 (the cooldown left)", got)
		}
		clock.Advance(10 * time.Second)
		f.wantError(f.generate(key), http.StatusBadGateway, "upstream_unreachable") // tried again
		f.wantCounts(key, counts{total: 3, remaining: 5})
		for i, st := range pool.Stats().Targets {
			if st.Failed != 2 || st.Up {
				t.Errorf("target %d: got %+v, want down with 2 failed calls", i, st)
			}
		}

		lone, _ := newPoolFelix(t, db, backend.Options{Clock: clock}, refusing(t))
		key = lone.createKey(5)
		for range 2 {
			lone.wantError(lone.generate(key), http.StatusBadGateway, "upstream_unreachable")
		}
		lone.wantCounts(key, counts{total: 2, remaining: 5})
	})
}

// TestTargetsEndpoint is GET /api/targets: admin only, every target in
// configuration order and the queue.
func TestTargetsEndpoint(t *testing.T) {
	fm := newFarm(t)
	a, b := fm.gpu("a", nil), fm.gpu("b", fail500)
	f, _ := newPoolFelix(t, storetest.URL(t, "sqlite"), backend.Options{MaxInFlight: 2, QueueMax: 50}, a.url(), b.url())
	key := f.createKey(5)
	f.generate(key)
	f.generate(key) // both on a: it is first and empty again each time

	f.wantError(f.do("GET", "/api/targets", nil), http.StatusUnauthorized, "admin_required")
	r := f.do("GET", "/api/targets", nil, admin()...)
	want := fmt.Sprintf(`{"targets":[`+
		`{"url":%q,"up":true,"inFlight":0,"maxInFlight":2,"served":2,"failed":0,"lastError":null},`+
		`{"url":%q,"up":true,"inFlight":0,"maxInFlight":2,"served":0,"failed":0,"lastError":null}],`+
		`"queue":{"length":0,"max":50}}`, a.URL, b.URL)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != want {
		t.Errorf("got %d %s\nwant 200 %s", r.status, r.body, want)
	}
}
