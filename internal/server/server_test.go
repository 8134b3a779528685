//go:build !fuzzing

package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/metrics"
	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

const adminToken = "admin-token-for-tests-0123456789"

// target is a fake image API that records what reaches it.
type target struct {
	*httptest.Server
	calls   atomic.Int64
	mu      sync.Mutex
	last    *http.Request
	body    []byte
	respond atomic.Value // http.HandlerFunc
}

func newTarget(t testing.TB) *target {
	tg := &target{}
	tg.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"images":["aW1n"]}`)
	})
	tg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		tg.mu.Lock()
		tg.last, tg.body = r, body
		tg.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		tg.respond.Load().(http.HandlerFunc)(w, r)
	}))
	t.Cleanup(tg.Close)
	return tg
}

func (tg *target) setHandler(h http.HandlerFunc) { tg.respond.Store(h) }

func (tg *target) lastRequest() (*http.Request, []byte) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return tg.last, tg.body
}

// felix is a real Felix server on a fresh store, in front of a fake target.
type felix struct {
	t      testing.TB
	url    string
	target *target
	quota  *quota.Service
	store  store.Store
}

func newFelixOn(t testing.TB, databaseURL string, tg *target, configure ...func(*server.Options)) *felix {
	t.Helper()
	return newFelixFull(t, databaseURL, tg, nil, nil, configure...)
}

// newFelixServer is newFelixOn with the http.Server's settings changed by
// configureHTTP (when not nil), e.g. a short ReadTimeout.
func newFelixServer(t testing.TB, databaseURL string, tg *target, configureHTTP func(*http.Server), configure ...func(*server.Options)) *felix {
	t.Helper()
	return newFelixFull(t, databaseURL, tg, nil, configureHTTP, configure...)
}

// newFelixQuota is newFelixOn with the quota options set by qconf too.
func newFelixQuota(t testing.TB, databaseURL string, tg *target, qconf func(*quota.Options), configure ...func(*server.Options)) *felix {
	t.Helper()
	return newFelixFull(t, databaseURL, tg, qconf, nil, configure...)
}

// newFelixFull builds a Felix with every setting a test may change: the
// quota options (qconf), the http.Server's (configureHTTP) and the
// server's (configure); nil ones are left as they are. Every layer reports
// to one set of metrics, served at /metrics, as in felix serve.
func newFelixFull(t testing.TB, databaseURL string, tg *target, qconf func(*quota.Options), configureHTTP func(*http.Server), configure ...func(*server.Options)) *felix {
	t.Helper()
	m := metrics.New(metrics.Options{Outcomes: server.Outcomes, Targets: []string{tg.URL}})
	st := storetest.OpenWith(t, databaseURL, store.Options{Observer: m})
	qo := quota.Options{Ledger: st, Keys: st, Usage: st, Owner: "test", Observer: m}
	if qconf != nil {
		qconf(&qo)
	}
	svc := quota.NewService(qo)
	u, _ := url.Parse(tg.URL)
	o := server.Options{
		Quota: svc, Target: u, TargetKey: "target-secret", AdminToken: adminToken,
		TargetTimeout: 2 * time.Second, Observer: m, Metrics: m.Handler(),
	}
	for _, c := range configure {
		c(&o)
	}
	return &felix{t: t, url: httptestServer(t, server.New(o), configureHTTP), target: tg, quota: svc, store: st}
}

// httptestServer serves h on 127.0.0.1 the way felix serve does
// (server.NewHTTPServer on server.Listener) and returns its base URL.
func httptestServer(t testing.TB, h http.Handler, configure ...func(*http.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.NewHTTPServer(ln.Addr().String(), h, slog.New(slog.DiscardHandler))
	for _, c := range configure {
		if c != nil {
			c(hs)
		}
	}
	go hs.Serve(server.Listener(ln))
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

func newFelix(t testing.TB, databaseURL string, configure ...func(*server.Options)) *felix {
	return newFelixOn(t, databaseURL, newTarget(t), configure...)
}

type response struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

// do sends a request; body is JSON-encoded unless it is a string.
// headers come in name, value pairs.
func (f *felix) do(method, path string, body any, headers ...string) response {
	f.t.Helper()
	var sent []byte
	switch b := body.(type) {
	case nil:
	case string:
		sent = []byte(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		sent = data
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(sent)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	r.body, _ = io.ReadAll(resp.Body)
	json.Unmarshal(r.body, &r.json)
	checkContract(f.t, req, sent, resp, r.body)
	return r
}

func admin() []string { return []string{"Authorization", "Bearer " + adminToken} }

func (f *felix) createKey(remaining int) string {
	f.t.Helper()
	r := f.do("POST", "/api/apikey", map[string]any{"initialRemainingCalls": remaining}, admin()...)
	if r.status != http.StatusCreated {
		f.t.Fatalf("create key: got %d %s", r.status, r.body)
	}
	return r.json["apiKey"].(string)
}

func (f *felix) generate(key string) response {
	return f.do("POST", "/api/generate", map[string]any{"prompt": "a cat"}, "Authorization", "Bearer "+key)
}

type counts struct{ total, successful, remaining, reserved int64 }

func (f *felix) counts(key string) counts {
	f.t.Helper()
	k, err := f.quota.Key(context.Background(), key)
	if err != nil {
		f.t.Fatalf("key stats: %v", err)
	}
	return counts{k.TotalCalls, k.SuccessfulCalls, k.RemainingCalls, k.ReservedCalls}
}

func (f *felix) wantCounts(key string, want counts) {
	f.t.Helper()
	if got := f.counts(key); got != want {
		f.t.Errorf("key counters (total, successful, remaining, reserved): got %v, want %v", got, want)
	}
}

func (f *felix) wantError(r response, status int, code string) {
	f.t.Helper()
	if r.status != status || r.json["code"] != code || r.json["error"] == "" {
		f.t.Errorf("got %d %s, want %d with code %q and a sentence", r.status, r.body, status, code)
	}
}

// siteTotals returns totalGenerations and the sum of the daily history.
func (f *felix) siteTotals() (total, daily int64) {
	f.t.Helper()
	st, err := f.quota.SiteStats(context.Background(), 3660)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, d := range st.Days {
		daily += d.Generations
	}
	return st.TotalGenerations, daily
}
