//go:build !fuzzing

package server_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// BenchmarkGenerate is one generate call through a real Felix on SQLite
// in front of a fake target that answers at once: the whole request path,
// accounting included. BenchmarkBareProxy is the same without Felix.
func BenchmarkGenerate(b *testing.B) {
	f := newFelix(b, storetest.URL(b, "sqlite"))
	benchmarkPost(b, f.url, f.createKey(1<<40))
}

// BenchmarkBareProxy is httputil.ReverseProxy with Felix's transport in
// front of the same fake target: the baseline.
func BenchmarkBareProxy(b *testing.B) {
	tg := newTarget(b)
	u, _ := url.Parse(tg.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = server.NewTransport(0)
	srv := httptest.NewServer(rp)
	b.Cleanup(srv.Close)
	benchmarkPost(b, srv.URL, "any")
}

func benchmarkPost(b *testing.B, base, key string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	const body = `{"prompt":"bench","width":512,"height":512}`
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", base+"/api/generate", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
