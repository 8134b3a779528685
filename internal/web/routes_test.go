package web_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/felix-gateway/felix/internal/web"
)

// TestServerServesThePages checks that Felix's route table mounts every
// page the web handler has: the dashboard's paths, the root's redirect, and
// a 405 (not a 404) for other methods on them.
func TestServerServesThePages(t *testing.T) {
	f := startFelix(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range web.AdminPages {
		path := strings.ReplaceAll(p, "{id}", "7")
		resp, err := client.Get(f.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("GET %s: got %d %s, want 200 text/html", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != web.ContentSecurityPolicy {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", path, got, web.ContentSecurityPolicy)
		}
		req, _ := http.NewRequest(http.MethodPost, f.URL+path, nil)
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: got %d, Allow %q; want 405, Allow GET, HEAD", path, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
	resp, err := client.Get(f.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/admin" {
		t.Errorf("GET /: got %d, Location %q; want 302 to /admin", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = client.Get(f.URL + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: got %d, want 404 (only the root redirects)", resp.StatusCode)
	}
}

// TestRouteTableListsThePages checks that the table every route is read
// from (405s, and the route list) names each page.
func TestRouteTableListsThePages(t *testing.T) {
	routes := startFelix(t).srv.Routes()
	want := []string{"GET /{$}", "GET /test", "GET /static/"}
	for _, p := range web.AdminPages {
		want = append(want, "GET "+p)
	}
	for _, w := range want {
		if !slices.Contains(routes, w) {
			t.Errorf("the route table lacks %q; it has %q", w, routes)
		}
	}
}
