package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	resp := w.Result()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, string(body)
}

func TestPagesAndAssets(t *testing.T) {
	h := Handler()
	tests := []struct {
		path        string
		contentType string
		contains    string
	}{
		{"/test", "text/html; charset=utf-8", "<title>Felix"},
		{"/static/style.css", "text/css; charset=utf-8", "--accent"},
		{"/static/test.js", "text/javascript; charset=utf-8", "/api/generate"},
		{"/static/favicon.svg", "image/svg+xml", "<svg"},
	}
	for _, tt := range tests {
		resp, body := get(t, h, http.MethodGet, tt.path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: got status %d, want 200", tt.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tt.contentType {
			t.Errorf("GET %s: Content-Type %q, want %q", tt.path, got, tt.contentType)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", tt.path, got, ContentSecurityPolicy)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", tt.path, got)
		}
		if !strings.Contains(body, tt.contains) {
			t.Errorf("GET %s: body does not contain %q", tt.path, tt.contains)
		}
	}

	if resp, body := get(t, h, http.MethodHead, "/test"); resp.StatusCode != http.StatusOK || body != "" {
		t.Errorf("HEAD /test: got status %d and %d body bytes, want 200 and none", resp.StatusCode, len(body))
	}
}

func TestCSPValue(t *testing.T) {
	want := "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'"
	if ContentSecurityPolicy != want {
		t.Errorf("ContentSecurityPolicy = %q, want %q", ContentSecurityPolicy, want)
	}
}

func TestNotFound(t *testing.T) {
	h := Handler()
	for _, path := range []string{"/static/", "/static/nope.css", "/static/x/", "/static/test.js/"} {
		resp, body := get(t, h, http.MethodGet, path)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: got status %d, want 404", path, resp.StatusCode)
			continue
		}
		var e struct{ Error, Code string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != "not_found" || e.Error == "" {
			t.Errorf("GET %s: got body %q, want the error JSON with code not_found", path, body)
		}
	}
	if resp, _ := get(t, h, http.MethodPost, "/test"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /test: got status %d, want 405", resp.StatusCode)
	}
}

var (
	attrURL     = regexp.MustCompile(`(?i)\s(?:src|href|action|srcset|poster)\s*=\s*["']?([^"'\s>]+)`)
	inlineStyle = regexp.MustCompile(`(?i)<style|\sstyle\s*=`)
	scriptTag   = regexp.MustCompile(`(?i)<script([^>]*)>`)
	inlineEvent = regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
	idAttr      = regexp.MustCompile(`\sid="([^"]+)"`)
	jsIDRef     = regexp.MustCompile(`\$\("([^"]+)"\)`)
)

func readStatic(t *testing.T, name string) string {
	t.Helper()
	b, err := embedded.ReadFile("static/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPageIsSelfContained checks what the CSP demands: no external URLs and
// nothing inline, and that every local asset the page names is served.
func TestPageIsSelfContained(t *testing.T) {
	h := Handler()
	page := readStatic(t, "test.html")
	for _, m := range attrURL.FindAllStringSubmatch(page, -1) {
		u := m[1]
		if strings.Contains(strings.ToLower(u), "http://") || strings.Contains(strings.ToLower(u), "https://") || strings.HasPrefix(u, "//") {
			t.Errorf("test.html references an external URL: %s", u)
			continue
		}
		if resp, _ := get(t, h, http.MethodGet, u); resp.StatusCode != http.StatusOK {
			t.Errorf("test.html references %s, which answers %d", u, resp.StatusCode)
		}
	}
	if loc := inlineStyle.FindStringIndex(page); loc != nil {
		t.Errorf("test.html has an inline style (blocked by the CSP) at byte %d", loc[0])
	}
	if loc := inlineEvent.FindStringIndex(page); loc != nil {
		t.Errorf("test.html has an inline event handler (blocked by the CSP) at byte %d", loc[0])
	}
	for _, m := range scriptTag.FindAllStringSubmatch(page, -1) {
		if !strings.Contains(m[1], "src=") {
			t.Errorf("test.html has an inline <script%s> (blocked by the CSP)", m[1])
		}
	}
	for _, name := range []string{"style.css", "test.js"} {
		src := readStatic(t, name)
		if strings.Contains(src, "http://") || strings.Contains(src, "https://") {
			t.Errorf("%s mentions an external URL", name)
		}
	}
}

// TestStableIDs keeps the hooks browser tests rely on: the ids exist, are
// unique, are listed in the page's header comment, and every id the script
// looks up is in the page.
func TestStableIDs(t *testing.T) {
	page := readStatic(t, "test.html")
	ids := map[string]int{}
	for _, m := range idAttr.FindAllStringSubmatch(page, -1) {
		ids[m[1]]++
	}
	for id, n := range ids {
		if n > 1 {
			t.Errorf("id %q appears %d times", id, n)
		}
	}
	comment := page[:strings.Index(page, "-->")]
	want := []string{
		"admin-token", "key-input",
		"create-key", "create-remaining", "create-name", "create-submit", "created-key", "create-error",
		"stats-submit", "stats-table", "stats-error",
		"set-remaining", "set-submit", "set-error",
		"prompt", "width", "height", "steps", "batch-size", "model", "generate-submit", "images", "generate-error",
		"site-submit", "site-stats", "site-error",
	}
	for _, id := range want {
		if ids[id] == 0 {
			t.Errorf("test.html has no element with id %q", id)
		}
		if !strings.Contains(comment, "#"+id) {
			t.Errorf("the header comment of test.html does not list #%s", id)
		}
	}
	for _, m := range jsIDRef.FindAllStringSubmatch(readStatic(t, "test.js"), -1) {
		if ids[m[1]] == 0 {
			t.Errorf("test.js looks up id %q, which test.html does not have", m[1])
		}
	}
	if n := strings.Count(page, `class="error"`); n != 5 {
		t.Errorf("test.html has %d .error boxes, want one per API card (5)", n)
	}
}
