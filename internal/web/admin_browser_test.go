package web_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/felix-gateway/felix/internal/quota"

	"github.com/felix-gateway/felix/internal/testwait"
)

// The widths every page is checked and photographed at: a laptop and a
// phone.
var screenWidths = []struct {
	width, height int64
	mobile        bool
}{{1280, 900, false}, {390, 844, true}}

// TestBrowserAdmin is a whole operator session on /admin in a real
// Chromium, only by typing, clicking and pressing keys: log in, create a
// key and copy it, see a call through the API move the numbers and the
// chart, top up, disable and see the refusal, enable, download the usage
// log, delete with confirmation, log out. Every page is also laid out at
// 1280 and 390 px wide (nothing wider than the screen) and, with
// FELIX_SCREENSHOT_DIR set, photographed at both.
func TestBrowserAdmin(t *testing.T) {
	browserPath := chromium(t)
	f := startFelix(t)
	p := openBrowser(t, browserPath)
	downloads := t.TempDir()
	p.allowClipboardAndDownloads(f.URL, downloads)

	// 0. The root sends a browser to /admin, which asks for the token.
	p.step("0. / and the login")
	p.do("open /", chromedp.Navigate(f.URL+"/"))
	p.waitView("login")
	if path := eval[string](p, `location.pathname`); path != "/admin" {
		p.fatalf("", "GET / ended at %s, want /admin", path)
	}
	if id := eval[string](p, `document.activeElement.id`); id != "login-token" {
		p.fatalf("", "the focus is on #%s after load, want #login-token", id)
	}
	p.photograph("login")

	// 1. A wrong token gets a sentence, not a blank page.
	p.step("1. wrong token")
	p.typeInto("login-token", "not-the-admin-token")
	p.submit("login-form", "login-submit", "error")
	p.expectErrorIn("login-error", "HTTP 401", "admin_required", "not the admin token")
	if got := eval[bool](p, `sessionStorage.getItem("felix.adminToken") === null`); !got {
		p.fatalf("", "a wrong token was kept in sessionStorage")
	}

	// 2. Log in with the keyboard alone: type the token, press Enter.
	p.step("2. log in")
	p.typeInto("login-token", browserAdminToken)
	p.do("press Enter", chromedp.SendKeys(chromedp.ID("login-token"), kb.Enter))
	p.waitView("overview")
	p.expectValue("#ov-total", "0")
	p.expectText("#ov-top", "No keys yet — create one")

	// 3. Create a key from the empty list, and copy it.
	p.step("3. create and copy a key")
	p.clickNav("keys")
	p.waitView("keys")
	p.expectText("#keys-empty", "No keys yet — create one.")
	p.click("keys-empty-action")
	p.do("wait for the create form", chromedp.WaitVisible(chromedp.ID("create-remaining")))
	p.typeInto("create-remaining", "3")
	p.typeInto("create-name", "Acme")
	p.typeInto("create-note", "browser test")
	p.submit("create-form", "create-submit", "done")
	p.waitView("keys")
	key := p.text("#created-key")
	if !regexp.MustCompile(`^fx_[0-9A-Za-z]{32}$`).MatchString(key) {
		p.fatalf("keys-view", "#created-key shows %q, want fx_ + 32 base62 characters", key)
	}
	p.click("created-copy")
	p.waitFor("keys-view", "the copy to be confirmed", `document.getElementById("created-copy-status").textContent.includes("Copied") && "ok"`)
	clip := eval[string](p, `navigator.clipboard.readText()`, chromedp.EvalAwaitPromise)
	if clip != key {
		p.fatalf("keys-view", "the clipboard holds %q after Copy, want the new key %q", clip, key)
	}
	rows := p.rowIDs("keys-table")
	if len(rows) != 1 {
		p.fatalf("keys-view", "#keys-table lists %d keys, want 1", len(rows))
	}
	id := rows[0]
	p.expectText(`#keys-table tr[data-id="`+id+`"]`, "Acme")

	// 4. A call through the API moves the numbers and the chart.
	p.step("4. a call moves the numbers")
	p.do("open the key", chromedp.Click(chromedp.CSS(`#keys-table tr[data-id="`+id+`"] a`)))
	p.waitView("key")
	p.expectValue("#key-successful", "0")
	p.expectValue("#key-remaining", "3")
	p.expectAttr("#key-chart", "data-total", "0")
	if status := generate(t, f.URL, key); status != http.StatusOK {
		t.Fatalf("generate with the new key: status %d, want 200", status)
	}
	p.reload("key") // the token survives a reload: it is the tab's
	p.expectValue("#key-successful", "1")
	p.expectValue("#key-remaining", "2")
	p.expectAttr("#key-chart", "data-total", "1") // the last 30 days: no flake at midnight
	if n := eval[int](p, `document.querySelectorAll("#key-chart canvas").length`); n != 1 {
		p.fatalf("key-view", "#key-chart holds %d canvases, want the chart's one", n)
	}
	if n := len(p.rowIDs("key-calls")); n != 1 {
		p.fatalf("key-view", "#key-calls lists %d calls, want 1", n)
	}

	// Times in the browser's zone, UTC on hover.
	if title := p.attr(`#key-facts dd[data-field="createdAt"] time`, "title"); !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$`).MatchString(title) {
		p.fatalf("key-view", "the creation time's title is %q, want the time in UTC", title)
	}

	// 5. Top up, and set: large numbers get the browser's thousands
	// separators.
	p.step("5. top up and set")
	p.typeInto("set-calls", "1234567")
	p.submit("set-form", "set-submit", "done")
	p.expectValue("#key-remaining", "1234567")
	if shown, want := p.text("#key-remaining"), eval[string](p, `new Intl.NumberFormat().format(1234567)`); shown != want || shown == "1234567" {
		p.fatalf("key-view", "#key-remaining shows %q, want %q, with separators", shown, want)
	}
	p.typeInto("set-calls", "2")
	p.submit("set-form", "set-submit", "done")
	p.typeInto("topup-calls", "10")
	p.submit("topup-form", "topup-submit", "done")
	p.expectValue("#key-remaining", "12")
	p.expectText("#key-action-status", "Added 10 calls: 12 left.")

	// Limits: set two, then clear one.
	p.click("limits-edit")
	p.typeInto("limit-rate", "60")
	p.typeInto("limit-concurrent", "2")
	p.submit("limits-form", "limits-submit", "done")
	p.expectText(`#key-limits dd[data-field="rateLimit"]`, "60 calls per minute")
	p.expectText(`#key-limits dd[data-field="maxConcurrent"]`, "2")
	p.click("limits-edit")
	p.typeInto("limit-concurrent", "")
	p.submit("limits-form", "limits-submit", "done")
	p.expectText(`#key-limits dd[data-field="maxConcurrent"]`, "not set")
	p.expectText(`#key-limits dd[data-field="rateLimit"]`, "60 calls per minute")
	if k, err := f.svc.KeyByID(context.Background(), mustInt(t, id)); err != nil || k.RateLimit == nil || k.RateLimit.Requests != 60 || k.MaxConcurrent != nil {
		t.Fatalf("the key's limits on the server: %+v, %v; want 60 per minute and no cap", k, err)
	}

	// 6. Disable: the key is refused, and a refused call is no usage row.
	p.step("6. disable")
	p.submit("toggle-disabled", "toggle-disabled", "done")
	p.expectValue("#key-status", "disabled")
	p.expectText("#toggle-disabled", "Enable key")
	if status := generate(t, f.URL, key); status != http.StatusForbidden {
		t.Fatalf("generate with the disabled key: status %d, want 403", status)
	}
	p.reload("key")
	p.expectValue("#key-status", "disabled")
	p.expectValue("#key-total", "1")
	p.click("key-calls-all")
	p.waitView("usage")
	if n := len(p.rowIDs("usage-table")); n != 1 {
		p.fatalf("usage-view", "the usage log of the disabled key lists %d calls after a refused one, want the 1 admitted", n)
	}

	// 7. Enable again: calls are admitted and logged again.
	p.step("7. enable")
	p.do("open the key from the log", chromedp.Click(chromedp.CSS(`#usage-table a`)))
	p.waitView("key")
	p.submit("toggle-disabled", "toggle-disabled", "done")
	p.expectValue("#key-status", "active")
	if status := generate(t, f.URL, key); status != http.StatusOK {
		t.Fatalf("generate with the enabled key: status %d, want 200", status)
	}
	// Another key's call, which the key's log and CSV must leave out.
	_, other, err := f.svc.CreateKey(context.Background(), quota.KeySpec{Name: "Globex", Remaining: 5})
	if err != nil {
		t.Fatalf("create a second key: %v", err)
	}
	if status := generate(t, f.URL, other); status != http.StatusOK {
		t.Fatalf("generate with the second key: status %d, want 200", status)
	}
	p.click("key-calls-all")
	p.waitView("usage")
	requestIDs := p.columnTexts("usage-table", 7) // the Request ID column
	if len(requestIDs) != 2 {
		p.fatalf("usage-view", "the key's usage log lists %d calls, want 2", len(requestIDs))
	}

	// 8. The CSV holds exactly the rows the filters select.
	p.step("8. CSV download")
	p.submit("usage-filter", "usage-csv", "done")
	records := readDownloadedCSV(t, downloads)
	if len(records) == 0 || !slices.Equal(records[0], quota.CallColumns) {
		t.Fatalf("the CSV's header is %q, want %q", records[0], quota.CallColumns)
	}
	var csvIDs []string
	for _, r := range records[1:] {
		if r[1] != id || r[6] != quota.OutcomeSuccess {
			t.Errorf("CSV row %q: keyId %s, outcome %s; want keyId %s, outcome success", r, r[1], r[6], id)
		}
		csvIDs = append(csvIDs, r[3])
	}
	if !slices.Equal(csvIDs, requestIDs) {
		t.Errorf("the CSV holds the calls %q, want those the page lists, %q", csvIDs, requestIDs)
	}
	p.click("usage-clear")
	p.waitView("usage")
	if n := len(p.rowIDs("usage-table")); n != 3 {
		p.fatalf("usage-view", "the whole usage log lists %d calls, want 3", n)
	}

	// 9. The overview adds it all up.
	p.step("9. overview")
	p.clickNav("overview")
	p.waitView("overview")
	p.expectValue("#ov-total", "3")
	p.expectValue("#ov-keys", "2")
	p.expectAttr("#ov-chart", "data-total", "3")
	p.expectAttr("#ov-chart", "data-days", "30")
	p.click("ov-range-90")
	p.expectAttr("#ov-chart", "data-days", "90")
	p.click("ov-range-30")
	p.expectAttr("#ov-chart", "data-days", "30")
	p.expectText(`#ov-top tbody tr:first-child`, "Acme")
	// The one target, the demo generator, served the 3 calls.
	if rows := p.rowIDs("ov-targets-table"); len(rows) != 1 {
		p.fatalf("overview-view", "the targets card lists %d targets, want the 1 configured", len(rows))
	}
	p.expectText(`#ov-targets-table tbody tr`, "up")
	p.expectText("#ov-queue", "0 calls wait")

	// 10. Every page at both widths.
	p.step("10. layouts")
	p.photograph("overview")
	p.clickNav("keys")
	p.waitView("keys")
	p.photograph("keys")
	p.do("open the key", chromedp.Click(chromedp.CSS(`#keys-table tr[data-id="`+id+`"] a`)))
	p.waitView("key")
	p.photograph("key")
	p.photographDark("key")
	p.clickNav("usage")
	p.waitView("usage")
	p.photograph("usage")

	// 11. Search, filter and page through the keys.
	p.step("11. search and pages")
	p.clickNav("keys")
	p.waitView("keys")
	p.typeInto("keys-q", "acm")
	p.do("press Enter", chromedp.SendKeys(chromedp.ID("keys-q"), kb.Enter))
	p.waitView("keys")
	if rows := p.rowIDs("keys-table"); !slices.Equal(rows, []string{id}) {
		p.fatalf("keys-view", "searching \"acm\" lists keys %q, want [%s]", rows, id)
	}
	p.do("choose disabled", chromedp.SetValue(chromedp.ID("keys-status"), "disabled"))
	p.click("keys-apply")
	p.waitView("keys")
	p.expectText("#keys-empty", "No keys match these filters")
	p.click("keys-empty-action")
	p.waitView("keys")
	for i := range 50 {
		if _, _, err := f.svc.CreateKey(context.Background(), quota.KeySpec{Name: fmt.Sprintf("Bulk %02d", i), Remaining: 1}); err != nil {
			t.Fatalf("create key %d: %v", i, err)
		}
	}
	p.reload("keys")
	if n := len(p.rowIDs("keys-table")); n != 50 {
		p.fatalf("keys-view", "the first page lists %d keys, want 50", n)
	}
	p.click("keys-next")
	p.waitView("keys")
	if rows := p.rowIDs("keys-table"); len(rows) != 2 || rows[1] != id {
		p.fatalf("keys-view", "the second page lists %q, want the two oldest keys, %s last", rows, id)
	}
	p.expectText("#keys-range", "Keys 51–52")
	p.click("keys-prev")
	p.waitView("keys")
	if n := len(p.rowIDs("keys-table")); n != 50 {
		p.fatalf("keys-view", "back on the first page, %d keys, want 50", n)
	}

	// 12. Delete, after a confirmation that names the key; Escape cancels.
	p.step("12. delete")
	p.do("open the key", chromedp.Navigate(f.URL+"/admin/keys/"+id))
	p.waitView("key")
	p.click("delete-open")
	p.expectText("#delete-text", "“Acme” ("+key[:7])
	p.do("press Escape", chromedp.SendKeys(chromedp.ID("delete-cancel"), kb.Escape))
	p.waitFor("key-view", "the dialog to close", `!document.getElementById("delete-dialog").open && "closed"`)
	if _, err := f.svc.KeyByID(context.Background(), mustInt(t, id)); err != nil {
		t.Fatalf("the key after Escape: %v, want it kept", err)
	}
	p.click("delete-open")
	p.click("delete-confirm")
	p.waitView("keys")
	p.expectText("#flash", "Deleted key “Acme”")
	p.typeInto("keys-q", "acme")
	p.click("keys-apply")
	p.waitView("keys")
	p.expectText("#keys-empty", "No keys match these filters")
	if _, err := f.svc.KeyByID(context.Background(), mustInt(t, id)); !errors.Is(err, quota.ErrKeyNotFound) {
		t.Fatalf("the key after the delete: %v, want %v", err, quota.ErrKeyNotFound)
	}
	if status := generate(t, f.URL, key); status != http.StatusUnauthorized {
		t.Fatalf("generate with the deleted key: status %d, want 401", status)
	}

	// 13. Log out: the tab forgets the token and nothing works without it.
	p.step("13. log out")
	p.click("logout")
	p.waitView("login")
	p.expectText("#flash", "Logged out")
	if got := eval[bool](p, `sessionStorage.getItem("felix.adminToken") === null`); !got {
		p.fatalf("", "sessionStorage still holds the admin token after logging out")
	}
	p.do("open /admin/keys", chromedp.Navigate(f.URL+"/admin/keys"))
	p.waitView("login")
	if status := eval[int](p, `fetch("/api/keys").then(r => r.status)`, chromedp.EvalAwaitPromise); status != http.StatusUnauthorized {
		p.fatalf("", "GET /api/keys from the logged-out page answered %d, want 401", status)
	}

	// 14. In front of the same Felix, a GET /api/targets answer with two
	// targets and a queue shows on the overview.
	p.step("14. targets")
	felixURL, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(felixURL)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/targets" {
			proxy.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"targets":[{"url":"http://gpu1:7860","up":true,"inFlight":1,"maxInFlight":1,"served":5120,"failed":0,"lastError":null},
			{"url":"http://gpu2:7860","up":false,"inFlight":0,"maxInFlight":1,"served":4987,"failed":3,"lastError":"the connection was refused"}],
			"queue":{"length":14,"max":1000}}`)
	}))
	defer front.Close()
	p.do("open the other address", chromedp.Navigate(front.URL+"/admin"))
	p.waitView("login")
	p.typeInto("login-token", browserAdminToken)
	p.submit("login-form", "login-submit", "done")
	p.waitView("overview")
	if rows := p.rowIDs("ov-targets-table"); len(rows) != 2 {
		p.fatalf("overview-view", "the targets card lists %d targets, want 2", len(rows))
	}
	p.expectText(`#ov-targets-table tbody tr:nth-child(2)`, "down")
	p.expectText("#ov-queue", "14 calls wait (at most "+eval[string](p, `new Intl.NumberFormat().format(1000)`)+")")
	p.click("logout")
	p.waitView("login")

	// 15. Felix slows down an address after 10 wrong tokens in a minute (one
	// was step 1's): the login says so, and when to try again.
	p.step("15. slowed down")
	status := ""
	for i := 0; i < 12 && status != "HTTP 429"; i++ {
		p.typeInto("login-token", fmt.Sprintf("wrong-guess-%d", i))
		p.submit("login-form", "login-submit", "error")
		status = p.text("#login-error .error-status")
		if status != "HTTP 401" && status != "HTTP 429" {
			p.fatalf("login-view", "wrong token %d: the login shows %q, want HTTP 401, then HTTP 429", i, status)
		}
	}
	p.expectErrorIn("login-error", "HTTP 429", "too_many_attempts", "Too many wrong admin tokens")
	if retry := p.text("#login-error .error-retry"); !regexp.MustCompile(`^Try again in [1-6]?[0-9] seconds \(at .+\)\.$`).MatchString(retry) {
		p.fatalf("login-view", "the login says %q, want when to try again", retry)
	}
	p.step("")
	p.checkConsole()
}

// allowClipboardAndDownloads lets the page use the clipboard and saves
// downloads into dir.
func (p *page) allowClipboardAndDownloads(origin, dir string) {
	p.t.Helper()
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		_, err := chromedp.CallBrowser(p.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
			Setting:    browser.PermissionSettingGranted,
			Origin:     origin,
		})
		if err != nil {
			p.t.Fatalf("grant %s: %v", name, err)
		}
	}
	_, err := chromedp.CallBrowser(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior:     browser.SetDownloadBehaviorBehaviorAllow,
		DownloadPath: dir,
	})
	if err != nil {
		p.t.Fatalf("allow downloads: %v", err)
	}
}

// waitView waits until the view is shown and has loaded its data.
func (p *page) waitView(view string) {
	p.t.Helper()
	got := p.waitFor(view+"-view", "the "+view+" view to load", fmt.Sprintf(
		`(v => v && !v.hidden && (v.dataset.state === "ready" || v.dataset.state === "error") && v.dataset.state)(document.getElementById(%q))`,
		view+"-view"))
	if got != "ready" {
		p.fatalf(view+"-view", "the %s view is %q, want ready", view, got)
	}
}

// reload reloads the page and waits for view.
func (p *page) reload(view string) {
	p.t.Helper()
	p.do("reload", chromedp.Reload())
	p.waitView(view)
}

func (p *page) click(id string) {
	p.t.Helper()
	p.do("click #"+id, chromedp.WaitVisible(chromedp.ID(id)), chromedp.Click(chromedp.ID(id)))
}

func (p *page) clickNav(view string) {
	p.t.Helper()
	p.do("click "+view+" in the navigation", chromedp.Click(chromedp.CSS(`#nav a[data-view="`+view+`"]`)))
}

func (p *page) expectText(selector, want string) {
	p.t.Helper()
	if got := p.text(selector); !strings.Contains(got, want) {
		p.fatalf("", "%s shows %q, want it to contain %q", selector, got, want)
	}
}

// expectValue checks an element's raw value (data-value).
func (p *page) expectValue(selector, want string) {
	p.t.Helper()
	p.expectAttr(selector, "data-value", want)
}

func (p *page) expectAttr(selector, name, want string) {
	p.t.Helper()
	if got := p.attr(selector, name); got != want {
		p.fatalf("", "%s has %s=%q, want %q", selector, name, got, want)
	}
}

// expectErrorIn checks an error box: shown, with status, code and a
// sentence containing mention.
func (p *page) expectErrorIn(id, status, code, mention string) {
	p.t.Helper()
	if hidden := eval[bool](p, fmt.Sprintf(`document.getElementById(%q).hidden`, id)); hidden {
		p.fatalf("", "#%s is hidden, want the error shown", id)
	}
	p.expectText("#"+id+" .error-status", status)
	p.expectText("#"+id+" .error-code", code)
	p.expectText("#"+id+" .error-message", mention)
}

// rowIDs returns the data-id of each row of a table's body.
func (p *page) rowIDs(table string) []string {
	p.t.Helper()
	return eval[[]string](p, fmt.Sprintf(`[...document.querySelectorAll("#%s tbody tr[data-id]")].map(tr => tr.dataset.id)`, table))
}

// columnTexts returns the text of column col (from 0) of a table's rows.
func (p *page) columnTexts(table string, col int) []string {
	p.t.Helper()
	return eval[[]string](p, fmt.Sprintf(`[...document.querySelectorAll("#%s tbody tr[data-id]")].map(tr => tr.cells[%d].textContent.trim())`, table, col))
}

// photograph lays the current page out at each screen width, checks that
// nothing is wider than the screen, and writes admin-NAME-WIDTH.png into
// FELIX_SCREENSHOT_DIR when it is set.
func (p *page) photograph(name string) {
	p.t.Helper()
	for _, s := range screenWidths {
		opts := []chromedp.EmulateViewportOption{}
		if s.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		p.do(fmt.Sprintf("set the width to %d", s.width), chromedp.EmulateViewport(s.width, s.height, opts...))
		// The charts follow their box's width on the next frame.
		p.waitFor("", "the charts to fit", `[...document.querySelectorAll(".chart")].every(f =>
			f.offsetParent === null || [...f.querySelectorAll(".uplot")].every(u => u.offsetWidth <= f.clientWidth + 1)) && "ok"`)
		if w := eval[int](p, `document.documentElement.scrollWidth`); w > int(s.width) {
			p.fatalf("", "the %s page is %d px wide on a %d px screen, want no wider", name, w, s.width)
		}
		p.screenshot(fmt.Sprintf("admin-%s-%d.png", name, s.width))
	}
	p.do("back to the laptop width", chromedp.EmulateViewport(screenWidths[0].width, screenWidths[0].height))
}

// photographDark shows the current page in the dark scheme, checks that
// the page follows it, and writes admin-NAME-dark-1280.png into
// FELIX_SCREENSHOT_DIR when it is set.
func (p *page) photographDark(name string) {
	p.t.Helper()
	scheme := func(value string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: value}},
			})
			return err
		})
	}
	p.do("prefer the dark scheme", scheme("dark"))
	if bg := eval[string](p, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(18, 21, 27)" {
		p.fatalf("", "the body's background is %s in the dark scheme, want rgb(18, 21, 27)", bg)
	}
	p.screenshot("admin-" + name + "-dark-1280.png")
	p.do("prefer the light scheme", scheme("light"))
}

// screenshot writes the whole page as file into FELIX_SCREENSHOT_DIR, when
// it is set.
func (p *page) screenshot(file string) {
	p.t.Helper()
	dir := os.Getenv(envScreenshotDir)
	if dir == "" {
		return
	}
	shot, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.fatalf("", "screenshot: %v", err)
	}
	if _, err := png.DecodeConfig(bytes.NewReader(shot)); err != nil {
		p.t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), shot, 0o644); err != nil {
		p.t.Fatalf("write screenshot: %v", err)
	}
}

// generate makes one call through Felix's API with key and returns the
// status.
func generate(t *testing.T, base, key string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/api/generate",
		strings.NewReader(`{"prompt":"a lighthouse","width":64,"height":64}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /api/generate: %v", err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode
}

// readDownloadedCSV waits for the one .csv file in dir and parses it.
func readDownloadedCSV(t *testing.T, dir string) [][]string {
	t.Helper()
	var files []string
	if !testwait.For(stepTimeout, func() bool {
		files, _ = filepath.Glob(filepath.Join(dir, "felix-usage-*.csv"))
		return len(files) == 1
	}) {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("no felix-usage-*.csv in the download folder after %v (it holds %v)", stepTimeout, entries)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	records, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("the downloaded %s is not CSV: %v", filepath.Base(files[0]), err)
	}
	return records
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("%q is not an id: %v", s, err)
	}
	return n
}
