package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/felix-gateway/felix/internal/syncbuf"
	"github.com/felix-gateway/felix/internal/testwait"
)

// serving is a `felix serve` running in this process.
type serving struct {
	logs  *syncbuf.Buffer
	addrs map[string]string // log message → its addr: "felix listening", "metrics listening"
}

// serve runs `felix serve` with environ until the test ends, once every
// message of want has been logged with its address.
func serve(t *testing.T, environ map[string]string, want ...string) serving {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := serving{logs: &syncbuf.Buffer{}, addrs: map[string]string{}}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve stopped with %v", err)
		}
	})
	lookup := func(k string) (string, bool) { v, ok := environ[k]; return v, ok }
	go func() { done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0"}, lookup, io.Discard, s.logs) }()
	if !testwait.For(30*time.Second, func() bool {
		for line := range strings.Lines(s.logs.String()) {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Addr != "" {
				s.addrs[rec.Msg] = rec.Addr
			}
		}
		return len(s.addrs) >= len(want)
	}) {
		t.Fatalf("serve did not log %v within 30s:\n%s", want, s.logs.String())
	}
	return s
}

// TestMetricsListener: with METRICS_ADDR, /metrics is served there without
// a token and the main port answers 404 for it; every metric that the
// Grafana dashboard and the alert rules in docs/ use is in a scrape; each
// request is one JSON log line with its ID, route, status, duration,
// outcome and masked key.
func TestMetricsListener(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"images":[]}`)
	}))
	defer backend.Close()
	const token = "admin-token-0123456789abcdef"
	s := serve(t, map[string]string{
		"DATABASE_URL": "sqlite:" + filepath.Join(t.TempDir(), "f.db"), "TARGET_API_DOMAIN": backend.URL,
		"ADMIN_TOKEN": token, "LOG_FORMAT": "json", "METRICS_ADDR": "127.0.0.1:0",
	}, "felix listening", "metrics listening")
	main, scrapeAt := "http://"+s.addrs["felix listening"], "http://"+s.addrs["metrics listening"]

	call := func(method, url, body string, header ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := call("GET", main+"/metrics", "", "Authorization", "Bearer "+token); status != http.StatusNotFound {
		t.Errorf("GET /metrics on the main port with METRICS_ADDR set: %d %.100s, want 404", status, body)
	}
	_, created := call("POST", main+"/api/keys", `{"remainingCalls":5}`, "Authorization", "Bearer "+token)
	key := regexp.MustCompile(`fx_[0-9A-Za-z]+`).FindString(created)
	if status, body := call("POST", main+"/api/generate", `{"prompt":"a cat"}`, "Authorization", "Bearer "+key, "X-Request-ID", "obs-test-1"); status != http.StatusOK {
		t.Fatalf("generate: %d %s", status, body)
	}

	status, text := call("GET", scrapeAt+"/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics on METRICS_ADDR without a token: %d %.200s", status, text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	if status, _ := call("GET", scrapeAt+"/api/stats", "", "Authorization", "Bearer "+token); status != http.StatusNotFound {
		t.Errorf("GET /api/stats on METRICS_ADDR: %d, want 404 (only /metrics is served there)", status)
	}

	for file, exprs := range map[string][]string{
		"grafana-dashboard.json": dashboardExprs(t, "../../docs/grafana-dashboard.json"),
		"prometheus-alerts.yml":  alertExprs(t, "../../docs/prometheus-alerts.yml"),
	} {
		if len(exprs) < 5 {
			t.Errorf("%s: %d queries found, want the whole file's", file, len(exprs))
		}
		for _, expr := range exprs {
			for _, name := range metricNames.FindAllString(expr, -1) {
				if !scraped(families, name) {
					t.Errorf("%s uses %s, which a scrape of /metrics does not have (query %q)", file, name, expr)
				}
			}
		}
	}

	// The generate call's log line.
	var line map[string]any
	for l := range strings.Lines(s.logs.String()) {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "request" && rec["request_id"] == "obs-test-1" {
			if line != nil {
				t.Errorf("two log lines for one request:\n%v\n%v", line, rec)
			}
			line = rec
		}
	}
	want := map[string]any{"route": "POST /api/generate", "status": float64(200), "outcome": "success", "method": "POST"}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log line %s: got %v, want %v (line %v)", k, line[k], v, line)
		}
	}
	if masked, _ := line["key"].(string); line["duration"] == nil || masked == "" || strings.Contains(masked, key) || !strings.HasPrefix(key, strings.TrimSuffix(masked, "…")) {
		t.Errorf("log line: want a duration and the key masked as its prefix…, got %v (key %s)", line, key)
	}
	if strings.Contains(s.logs.String(), key) {
		t.Errorf("the full key %s is in the log", key)
	}
}

// metricNames finds the metrics of Felix, Go and the process in a query.
var metricNames = regexp.MustCompile(`\b(?:felix|go|process)_[a-zA-Z0-9_]+`)

// scraped reports whether name is in the scrape: a family, or a
// histogram's _bucket, _sum or _count series.
func scraped(families map[string]*dto.MetricFamily, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if mf, ok := families[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && mf.GetType() == dto.MetricType_HISTOGRAM {
			return true
		}
	}
	return false
}

// dashboardExprs returns every query of a Grafana dashboard: each
// "expr" anywhere in its JSON.
func dashboardExprs(t *testing.T, path string) []string {
	var doc any
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &doc)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return exprs
}

// alertExprs returns the expression of every rule in a Prometheus rules
// file, checking that each alert has a name and a summary.
func alertExprs(t *testing.T, path string) []string {
	var doc struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr string
				Annotations map[string]string
			}
		}
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = yaml.Unmarshal(b, &doc)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: rule %+v lacks an alert name, an expr or a summary", path, r)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	return exprs
}
