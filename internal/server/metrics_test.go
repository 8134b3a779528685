//go:build !fuzzing

package server_test

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/felix-gateway/felix/internal/metrics"
	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	backend "github.com/felix-gateway/felix/internal/target"
)

// metricsFelix is a Felix with every layer reporting to one set of
// metrics, served at /metrics, and a store whose Settle can be made to
// fail (each failure moves the clock on by 20 s of a 1-minute hold).
func metricsFelix(t *testing.T, db string) (*felix, *failingSettle) {
	m := metrics.New(metrics.Options{Outcomes: server.Outcomes})
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	st := &failingSettle{Store: storetest.OpenWith(t, db, store.Options{Observer: m}), onFail: func() { now.Add(int64(20 * time.Second)) }}
	svc := quota.NewService(quota.Options{
		Ledger: st, Keys: st, Usage: st, Owner: "metrics", Hold: time.Minute, Observer: m,
		Now: func() time.Time { return time.Unix(0, now.Load()) },
	})
	tg := newTarget(t)
	u, _ := url.Parse(tg.URL)
	pool := backend.New(backend.Options{URLs: []*url.URL{u}, Path: "/api/generate"})
	m.ObservePool(pool)
	srv := httptestServer(t, server.New(server.Options{
		Quota: svc, Targets: pool, AdminToken: adminToken, TargetTimeout: time.Minute,
		Limits: server.Limits{MaxBodyBytes: 4096}, Observer: m, Metrics: m.Handler(),
	}))
	return &felix{t: t, url: srv, target: tg, quota: svc, store: st}, st
}

// scrape reads /metrics in the text format.
func (f *felix) scrape() (map[string]*dto.MetricFamily, string) {
	f.t.Helper()
	r := f.do("GET", "/metrics", nil, admin()...)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		f.t.Fatalf("GET /metrics: %d %s %.200s", r.status, r.header.Get("Content-Type"), r.body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(string(r.body)))
	if err != nil {
		f.t.Fatalf("parse /metrics: %v", err)
	}
	return families, string(r.body)
}

// sample returns the value of the series of name with exactly labels
// (name=value pairs), and whether it exists: a counter's or gauge's value,
// a histogram's sample count.
func sample(families map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf, ok := families[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		if len(m.Label)*2 != len(labels) {
			continue
		}
		for i, l := range m.Label {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsCountOutcomes: after a known mix of calls, a scrape shows
// exactly those counts per outcome, every other outcome at zero, the
// route's statuses, the settle failure, no call left open, and the
// store's group commits; no key or prompt appears anywhere in it.
func TestMetricsCountOutcomes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f, st := metricsFelix(t, db)
		key, empty := f.createKey(100), f.createKey(0)
		created := f.do("POST", "/api/keys", map[string]any{"remainingCalls": 5}, admin()...)
		disabled, _ := created.json["apiKey"].(string)
		f.wantStatus(f.do("PATCH", "/api/keys/"+jsonID(created), map[string]any{"disabled": true}, admin()...), http.StatusOK)

		want := map[string]float64{}
		call := func(outcome string, status int, send func() response) {
			t.Helper()
			if r := send(); r.status != status {
				t.Fatalf("%s: got %d %s, want %d", outcome, r.status, r.body, status)
			}
			want[outcome]++
		}
		generate := func(k string) func() response { return func() response { return f.generate(k) } }
		body := func(b string) func() response {
			return func() response { return f.do("POST", "/api/generate", b, "Authorization", "Bearer "+key) }
		}
		for range 3 {
			call("success", 200, generate(key))
		}
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) })
		call("target_error", 500, generate(key))
		call("target_error", 500, generate(key))
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		})
		call("upstream_unreachable", 502, generate(key))
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"images":[]}`) })
		call("invalid_api_key", 401, generate("fx_unknownunknownunknownunknown1"))
		call("invalid_api_key", 401, func() response { return f.do("POST", "/api/generate", `{"prompt":"a cat"}`) })
		call("quota_exhausted", 429, generate(empty))
		call("key_disabled", 403, generate(disabled))
		call("invalid_request", 400, body(`{"prompt":`))
		call("invalid_request", 400, body(`{"prompt":""}`))
		call("body_too_large", 413, body(`{"prompt":"`+strings.Repeat("a", 5000)+`"}`))
		st.failures.Store(1000)
		call("store_unavailable", 503, generate(key)) // the target answered 200, the settle failed
		st.failures.Store(0)
		f.store.Close()
		call("store_unavailable", 503, generate(key)) // the reservation failed

		if r := f.do("GET", "/metrics", nil); r.status != http.StatusUnauthorized {
			t.Errorf("GET /metrics without the admin token: got %d, want 401", r.status)
		}
		families, text := f.scrape()
		for _, outcome := range append([]string{metrics.Other}, server.Outcomes...) {
			got, ok := sample(families, "felix_generate_requests_total", "outcome", outcome)
			if !ok || got != want[outcome] {
				t.Errorf("felix_generate_requests_total{outcome=%q}: got %v (present %v), want %v", outcome, got, ok, want[outcome])
			}
		}
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"felix_http_requests_total", []string{"code", "200", "route", "POST /api/generate"}, 3},
			{"felix_http_requests_total", []string{"code", "500", "route", "POST /api/generate"}, 2},
			{"felix_http_requests_total", []string{"code", "503", "route", "POST /api/generate"}, 2},
			{"felix_http_requests_total", []string{"code", "200", "route", "PATCH /api/keys/{id}"}, 1},
			{"felix_settle_failures_total", nil, 1},
			{"felix_release_failures_total", nil, 0},
			{"felix_calls_open", nil, 0},
			{"felix_recovered_calls_total", nil, 0},
			// 7 calls went to the target: 3 successes, 2 target errors,
			// the failed settle's and the one that got no answer.
			{"felix_target_duration_seconds", []string{"target", f.target.URL}, 7},
			{"felix_target_answered_total", []string{"target", f.target.URL}, 6},
			{"felix_target_failures_total", []string{"target", f.target.URL}, 1},
			{"felix_target_in_flight", []string{"target", f.target.URL}, 0},
			{"felix_target_up", []string{"target", f.target.URL}, 1},
			{"felix_queue_length", nil, 0},
		} {
			if got, ok := sample(families, c.name, c.labels...); !ok || got != c.want {
				t.Errorf("%s%v: got %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
			}
		}
		// 3 successes, 2 target errors, the unreachable target and the
		// failed settle: 7 admitted calls, each a reserve and a settle or
		// release in some group, and the refused reservations on top.
		if n, _ := sample(families, "felix_store_group_size"); n < 2 {
			t.Errorf("felix_store_group_size: %v group commits observed, want several", n)
		}
		if mf := families["felix_store_group_size"]; mf == nil || mf.Metric[0].Histogram.GetSampleSum() < 7*2 {
			t.Errorf("felix_store_group_size: writes committed %v, want at least 14", mf)
		}
		for _, secret := range []string{key, empty, disabled, "a cat", "fx_unknown"} {
			if strings.Contains(text, secret) {
				t.Errorf("/metrics contains %q", secret)
			}
		}
	})
}

// jsonID is the id of the key an answer holds.
func jsonID(r response) string {
	id, _ := r.json["id"].(float64)
	return strconv.FormatInt(int64(id), 10)
}
