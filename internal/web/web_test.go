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
		{"/admin", "text/html; charset=utf-8", "<title>Felix · Admin"},
		{"/admin/keys", "text/html; charset=utf-8", "<title>Felix · Admin"},
		{"/admin/keys/7", "text/html; charset=utf-8", "<title>Felix · Admin"},
		{"/admin/usage", "text/html; charset=utf-8", "<title>Felix · Admin"},
		{"/static/style.css", "text/css; charset=utf-8", "--accent"},
		{"/static/admin.css", "text/css; charset=utf-8", ".view"},
		{"/static/test.js", "text/javascript; charset=utf-8", "/api/generate"},
		{"/static/admin.js", "text/javascript; charset=utf-8", "/api/keys"},
		{"/static/felix.js", "text/javascript; charset=utf-8", "ApiError"},
		{"/static/vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8", "uPlot"},
		{"/static/vendor/uplot/uPlot.min.css", "text/css; charset=utf-8", ".uplot"},
		{"/static/vendor/uplot/LICENSE", "text/plain; charset=utf-8", "MIT License"},
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
	if resp, _ := get(t, h, http.MethodGet, "/"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/admin" {
		t.Errorf("GET /: got status %d, Location %q; want 302 to /admin", resp.StatusCode, resp.Header.Get("Location"))
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

// pages are the HTML pages and the files they load that are ours.
var pages = []struct{ html, js, css string }{
	{"test.html", "test.js", "style.css"},
	{"admin.html", "admin.js", "admin.css"},
}

// TestPageIsSelfContained checks what the CSP demands: no external URLs and
// nothing inline, and that every local asset the page names is served.
func TestPageIsSelfContained(t *testing.T) {
	h := Handler()
	for _, pg := range pages {
		page := readStatic(t, pg.html)
		for _, m := range attrURL.FindAllStringSubmatch(page, -1) {
			u := m[1]
			if strings.HasPrefix(u, "#") {
				continue // a place in the page itself
			}
			if strings.Contains(strings.ToLower(u), "http://") || strings.Contains(strings.ToLower(u), "https://") || strings.HasPrefix(u, "//") {
				t.Errorf("%s references an external URL: %s", pg.html, u)
				continue
			}
			if resp, _ := get(t, h, http.MethodGet, u); resp.StatusCode != http.StatusOK {
				t.Errorf("%s references %s, which answers %d", pg.html, u, resp.StatusCode)
			}
		}
		if loc := inlineStyle.FindStringIndex(page); loc != nil {
			t.Errorf("%s has an inline style (blocked by the CSP) at byte %d", pg.html, loc[0])
		}
		if loc := inlineEvent.FindStringIndex(page); loc != nil {
			t.Errorf("%s has an inline event handler (blocked by the CSP) at byte %d", pg.html, loc[0])
		}
		for _, m := range scriptTag.FindAllStringSubmatch(page, -1) {
			if !strings.Contains(m[1], "src=") {
				t.Errorf("%s has an inline <script%s> (blocked by the CSP)", pg.html, m[1])
			}
		}
		for _, name := range []string{pg.css, pg.js, "felix.js"} {
			src := readStatic(t, name)
			if strings.Contains(src, "http://") || strings.Contains(src, "https://") {
				t.Errorf("%s mentions an external URL", name)
			}
		}
	}
}

// TestNoEval checks that no script the pages load needs what the CSP
// forbids: code from strings, or markup written as strings.
func TestNoEval(t *testing.T) {
	forbidden := regexp.MustCompile(`\beval\(|new Function\(|\bFunction\(|set(?:Timeout|Interval)\(\s*["'` + "`" + `]|\.innerHTML\s*=|insertAdjacentHTML|document\.write|setAttribute\(\s*["']style`)
	for _, name := range []string{"felix.js", "test.js", "admin.js", "vendor/uplot/uPlot.iife.min.js"} {
		if loc := forbidden.FindStringIndex(readStatic(t, name)); loc != nil {
			src := readStatic(t, name)
			t.Errorf("%s uses %q at byte %d, which the CSP forbids or which invites injection", name, src[loc[0]:loc[1]], loc[0])
		}
	}
}

var (
	controlTag = regexp.MustCompile(`(?is)<(input|select|textarea)\b([^>]*)>`)
	labelFor   = regexp.MustCompile(`<label[^>]*\sfor="([^"]+)"`)
	buttonTag  = regexp.MustCompile(`(?is)<button\b([^>]*)>(.*?)</button>`)
)

// TestEveryControlHasALabel checks that every field of the pages has a
// <label for> and every button a name a screen reader can say.
func TestEveryControlHasALabel(t *testing.T) {
	for _, pg := range pages {
		page := readStatic(t, pg.html)
		labels := map[string]bool{}
		for _, m := range labelFor.FindAllStringSubmatch(page, -1) {
			labels[m[1]] = true
		}
		for _, m := range controlTag.FindAllStringSubmatch(page, -1) {
			if strings.Contains(m[2], `type="hidden"`) {
				continue
			}
			id := idAttr.FindStringSubmatch(m[2])
			if id == nil {
				t.Errorf("%s: <%s%s> has no id, so no label can name it", pg.html, m[1], m[2])
				continue
			}
			if !labels[id[1]] {
				t.Errorf("%s: <%s id=%q> has no <label for=%q>", pg.html, m[1], id[1], id[1])
			}
		}
		for _, m := range buttonTag.FindAllStringSubmatch(page, -1) {
			if strings.TrimSpace(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(m[2], "")) == "" && !strings.Contains(m[1], "aria-label=") {
				t.Errorf("%s: <button%s> has neither text nor aria-label", pg.html, m[1])
			}
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

// TestAdminIDs keeps the dashboard's hooks: every id is unique and listed in
// the page's header comment, and every id the script looks up is there.
func TestAdminIDs(t *testing.T) {
	page := readStatic(t, "admin.html")
	comment := page[:strings.Index(page, "-->")]
	ids := map[string]int{}
	for _, m := range idAttr.FindAllStringSubmatch(page[len(comment):], -1) {
		ids[m[1]]++
	}
	for id, n := range ids {
		if n > 1 {
			t.Errorf("admin.html: id %q appears %d times", id, n)
		}
	}
	listed := regexp.MustCompile(`#([a-z0-9-]+)`)
	for _, m := range listed.FindAllStringSubmatch(comment, -1) {
		if ids[m[1]] == 0 && m[1] != "keys-empty-action" {
			t.Errorf("the header comment of admin.html lists #%s, which the page does not have", m[1])
		}
	}
	for _, m := range jsIDRef.FindAllStringSubmatch(readStatic(t, "admin.js"), -1) {
		if ids[m[1]] == 0 {
			t.Errorf("admin.js looks up id %q, which admin.html does not have", m[1])
		}
	}
	for _, view := range []string{"login", "overview", "keys", "key", "usage", "notfound"} {
		if ids[view+"-view"] == 0 {
			t.Errorf("admin.html has no #%s-view", view)
		}
	}
}
