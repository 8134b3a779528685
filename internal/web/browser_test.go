package web_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/felix-gateway/felix/internal/demo"
	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/syncbuf"
	"github.com/felix-gateway/felix/internal/testwait"
	"github.com/felix-gateway/felix/internal/web"
)

const (
	browserAdminToken = "admin-token-for-browser-tests-0123456789"
	browserDemoToken  = "demo-target-token-for-browser-tests"

	// envChromium names a browser binary to use instead of the one on PATH.
	envChromium = "FELIX_CHROMIUM"
	// envScreenshotDir names a directory for felix-test-page.png, the
	// full-page screenshot taken at the end (used by the README).
	envScreenshotDir = "FELIX_SCREENSHOT_DIR"

	// stepTimeout bounds one wait in the page, well inside the test's
	// overall timeout so that a failure still has time to dump the card.
	stepTimeout = 15 * time.Second
)

// chromium returns the browser to drive. Without one the test is skipped,
// except in CI, where a missing browser must fail the run.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(envChromium); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Fatalf("%s=%s: %v", envChromium, p, err)
		}
		return path
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	const how = "no chromium on PATH: install it (apt-get install -y chromium) or set " + envChromium
	if os.Getenv("CI") != "" {
		t.Fatal(how + "; browser tests must run in CI")
	}
	t.Skip(how)
	return ""
}

// countingTarget counts the generate requests that reach the demo target.
type countingTarget struct {
	next  http.Handler
	calls atomic.Int64
}

func (c *countingTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		c.calls.Add(1)
	}
	c.next.ServeHTTP(w, r)
}

// felixUnderTest is a real Felix (fresh SQLite store) in front of the demo
// image generator, both on 127.0.0.1.
type felixUnderTest struct {
	URL    string
	srv    *server.Server
	svc    *quota.Service
	target *countingTarget
}

func startFelix(t *testing.T) *felixUnderTest {
	t.Helper()
	target := &countingTarget{next: demo.NewTarget(demo.Options{Token: browserDemoToken})}
	targetSrv := httptest.NewServer(target)
	t.Cleanup(targetSrv.Close)
	targetURL, err := url.Parse(targetSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	st := storetest.Open(t, storetest.URL(t, store.SQLiteKind))
	svc := quota.NewService(quota.Options{Ledger: st, Keys: st, Usage: st, Owner: "browser-test"})
	srv := server.New(server.Options{
		Quota:         svc,
		Target:        targetURL,
		TargetKey:     browserDemoToken,
		AdminToken:    browserAdminToken,
		TargetTimeout: 10 * time.Second,
		Pages:         web.Handler(),
	})
	felix := httptest.NewServer(srv)
	t.Cleanup(felix.Close)
	return &felixUnderTest{URL: felix.URL, srv: srv, svc: svc, target: target}
}

// TestBrowserTestPage drives /test in a real Chromium against a real Felix
// (fresh SQLite store) in front of the demo image generator, only by typing
// and clicking, and checks what the page shows and what the server counted.
func TestBrowserTestPage(t *testing.T) {
	browserPath := chromium(t)
	f := startFelix(t)
	svc, target := f.svc, f.target

	p := openBrowser(t, browserPath)
	p.step("0. open /test")
	p.do("open /test", chromedp.Navigate(f.URL+"/test"), chromedp.WaitVisible(chromedp.ID("create-submit")))

	// 1. Create a key with 3 calls and a name, as an admin.
	p.step("1. create a key")
	p.typeInto("admin-token", browserAdminToken)
	p.typeInto("create-remaining", "3")
	p.typeInto("create-name", "Browser test")
	p.submit("create-card", "create-submit", "done")
	p.do("wait for the new key", chromedp.WaitVisible(chromedp.ID("create-result")))
	key := p.text("#created-key")
	if !regexp.MustCompile(`^fx_[0-9A-Za-z]{32}$`).MatchString(key) {
		p.fatalf("create-card", "#created-key shows %q (%d chars), want fx_ + 32 base62 characters (35)", key, len(key))
	}
	if got := p.value("key-input"); got != key {
		p.fatalf("credentials-card", "API key field holds %q after creating, want the new key %q", got, key)
	}
	created := p.statsTable("created-table")
	p.expectStats("create-card", "created-table", created, map[string]string{"remainingCalls": "3", "name": "Browser test"})

	// 2. The key's statistics before any call.
	p.step("2. key statistics")
	p.submit("stats-card", "stats-submit", "done")
	p.expectStats("stats-card", "stats-table", p.statsTable("stats-table"),
		map[string]string{"remainingCalls": "3", "totalCalls": "0", "successfulCalls": "0"})

	// 3. Generate two 64×64 images.
	p.step("3. generate")
	p.typeInto("prompt", "A lighthouse on a cliff at sunset, watercolour")
	p.typeInto("width", "64")
	p.typeInto("height", "64")
	p.typeInto("batch-size", "2")
	p.submit("generate-card", "generate-submit", "done")
	srcs := p.images()
	if len(srcs) != 2 {
		p.fatalf("generate-card", "#images holds %d <img>, want 2", len(srcs))
	}
	for i, src := range srcs {
		if err := checkPNG(src, 64, 64); err != nil {
			p.fatalf("generate-card", "image %d: %v", i+1, err)
		}
	}
	if meta := p.text("#generate-meta"); !strings.HasPrefix(meta, "2 images") {
		p.fatalf("generate-card", "#generate-meta says %q, want it to start with \"2 images\"", meta)
	}

	// Every card that shows the key now shows its new count, without being
	// asked: the new-key card and the statistics card alike.
	for _, table := range []string{"created-table", "stats-table"} {
		p.expectStats("generate-card", table, p.statsTable(table),
			map[string]string{"remainingCalls": "2", "totalCalls": "1", "successfulCalls": "1"})
	}

	// 4. One successful call is counted, per key and for the site.
	p.step("4. statistics after one call")
	p.submit("stats-card", "stats-submit", "done")
	p.expectStats("stats-card", "stats-table", p.statsTable("stats-table"),
		map[string]string{"remainingCalls": "2", "totalCalls": "1", "successfulCalls": "1"})
	p.submit("site-card", "site-submit", "done")
	if total, daily := p.attr("#site-total", "data-value"), p.attr("#site-daily", "data-value"); total != "1" || daily != "1" {
		p.fatalf("site-card", "site statistics show total %q and today %q, want 1 and 1", total, daily)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	if got := p.attr(`#site-days tr[data-date="`+today+`"] td.num`, "data-value"); got != "1" {
		p.fatalf("site-card", "the per-day table shows %q generations for %s, want 1", got, today)
	}

	// 5. With no calls left, Felix answers 429 and the page shows it.
	p.step("5. quota exhausted")
	p.typeInto("set-remaining", "0")
	p.submit("set-card", "set-submit", "done")
	p.expectStats("set-card", "set-table", p.statsTable("set-table"), map[string]string{"remainingCalls": "0"})
	// Someone else renames the key meanwhile: the cards learn of it from the
	// refused call's refresh, as they would of any other change.
	id, err := strconv.ParseInt(created["id"].value, 10, 64)
	if err != nil {
		p.fatalf("create-card", "#created-table shows id %q: %v", created["id"].value, err)
	}
	renamed := "Browser test, renamed"
	if _, err := svc.ChangeKey(context.Background(), id, quota.KeyChange{Name: &renamed}); err != nil {
		t.Fatalf("rename the key: %v", err)
	}
	p.submit("generate-card", "generate-submit", "error")
	p.expectError("generate-card", "HTTP 429", "quota_exhausted", "")
	if n := len(p.images()); n != 0 {
		p.fatalf("generate-card", "#images holds %d <img> after a refused call, want none", n)
	}
	// The session that once showed "Remaining 3" in two cards and 2 in a
	// third: after the refused call every card shows the real key.
	for _, table := range []string{"created-table", "stats-table", "set-table"} {
		p.expectStats("generate-card", table, p.statsTable(table), map[string]string{"remainingCalls": "0", "name": renamed})
	}

	// 6. Bad input is refused by Felix with a sentence naming the field.
	p.step("6. empty prompt")
	p.typeInto("prompt", "")
	p.submit("generate-card", "generate-submit", "error")
	p.expectError("generate-card", "HTTP 400", "invalid_request", "prompt")

	// 7. A wrong admin token cannot create keys.
	p.step("7. wrong admin token")
	p.typeInto("admin-token", "not-the-admin-token")
	p.submit("create-card", "create-submit", "error")
	p.expectError("create-card", "HTTP 401", "admin_required", "")
	if got := p.value("key-input"); got != key {
		p.fatalf("credentials-card", "API key field holds %q after a failed create, want the earlier key %q", got, key)
	}

	// The server counted exactly what the page did: one successful call,
	// nothing for the refused ones, and the target saw one request.
	k, err := svc.Key(context.Background(), key)
	if err != nil {
		t.Fatalf("quota.Service.Key: %v", err)
	}
	if k.SuccessfulCalls != 1 || k.RemainingCalls != 0 || k.TotalCalls != 1 || k.ReservedCalls != 0 {
		t.Errorf("server counters: successful %d, remaining %d, total %d, reserved %d; want 1, 0, 1, 0",
			k.SuccessfulCalls, k.RemainingCalls, k.TotalCalls, k.ReservedCalls)
	}
	if k.Name != renamed {
		t.Errorf("server key name %q, want %q", k.Name, renamed)
	}
	if n := target.calls.Load(); n != 1 {
		t.Errorf("the demo target got %d generate requests, want 1", n)
	}
	keys, _, err := svc.ListKeys(context.Background(), quota.KeyFilter{Limit: 10})
	if err != nil {
		t.Fatalf("quota.Service.ListKeys: %v", err)
	}
	if len(keys) != 1 {
		t.Errorf("the store holds %d keys, want 1 (the create with a wrong admin token must make none)", len(keys))
	}

	// 8. A full-page screenshot, for the README.
	p.step("8. screenshot")
	shot, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.fatalf("", "full screenshot: %v", err)
	}
	if _, err := png.DecodeConfig(bytes.NewReader(shot)); err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if dir := os.Getenv(envScreenshotDir); dir != "" {
		name := filepath.Join(dir, "felix-test-page.png")
		if err := os.WriteFile(name, shot, 0o644); err != nil {
			t.Fatalf("write screenshot: %v", err)
		}
		t.Logf("screenshot written to %s", name)
	}
	p.step("")

	p.checkConsole()
}

// checkPNG decodes an <img> data URL and checks it is a PNG of w×h pixels.
func checkPNG(src string, w, h int) error {
	const prefix = "data:image/png;base64,"
	if !strings.HasPrefix(src, prefix) {
		return fmt.Errorf("src starts %.40q, want %q", src, prefix)
	}
	data, err := base64.StdEncoding.DecodeString(src[len(prefix):])
	if err != nil {
		return fmt.Errorf("src is not base64: %w", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("src is not a PNG: %w", err)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		return fmt.Errorf("PNG is %d×%d, want %d×%d", b.Dx(), b.Dy(), w, h)
	}
	return nil
}

// page is the test page open in a browser tab.
type page struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string        // uncaught exceptions, console errors, CSP violations
	logs     []string        // every console and log entry, for failure reports
	output   *syncbuf.Buffer // written by the browser process's pipes

	stepName  string
	stepStart time.Time
}

// step logs how long the previous step took and starts the next one.
func (p *page) step(name string) {
	now := time.Now()
	if p.stepName != "" {
		p.t.Logf("%-30s %v", p.stepName, now.Sub(p.stepStart).Round(time.Millisecond))
	}
	p.stepName, p.stepStart = name, now
}

// openBrowser starts a headless Chromium with a fresh profile. The browser
// is closed and its profile removed when the test ends.
func openBrowser(t *testing.T, browserPath string) *page {
	t.Helper()
	profile := t.TempDir()
	output := &syncbuf.Buffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(output),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), 60*time.Second)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tabCtx, cancelTab := chromedp.NewContext(allocCtx)
	p := &page{t: t, ctx: tabCtx, output: output}

	// Cleanups run last-in first-out: this one runs before t.TempDir's, so
	// the browser has stopped and its profile is gone when that removes the
	// directory. Child processes may still write there for a moment after
	// the browser exits, hence the retries.
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		cancelTimeout()
		if t.Failed() {
			p.dumpDiagnostics()
		}
		var err error
		if !testwait.For(5*time.Second, func() bool { err = os.RemoveAll(profile); return err == nil }) {
			t.Logf("remove browser profile: %v", err)
		}
	})

	started := time.Now()
	if err := chromedp.Do(tabCtx); err != nil {
		t.Fatalf("start %s: %v\nbrowser output:\n%s", browserPath, err, tail(output, 4000))
	}
	t.Logf("%-30s %v", "start "+filepath.Base(browserPath), time.Since(started).Round(time.Millisecond))
	if err := chromedp.Listen(tabCtx, p.record); err != nil {
		t.Fatalf("listen to the browser: %v", err)
	}
	return p
}

// record keeps what the page reports. It runs on chromedp's event loop and
// must return fast.
func (p *page) record(ev any) {
	var entry string
	problem := false
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		entry = fmt.Sprintf("uncaught exception: %s", d.Text)
		if d.Exception != nil && d.Exception.Description != "" {
			entry += " " + d.Exception.Description
		}
		entry += fmt.Sprintf(" (%s:%d:%d)", d.URL, d.LineNumber+1, d.ColumnNumber+1)
		problem = true
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			if a.Value != nil {
				args = append(args, string(a.Value))
			} else {
				args = append(args, a.Description)
			}
		}
		entry = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
		problem = ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert
	case *log.EventEntryAdded:
		e := ev.Entry
		entry = fmt.Sprintf("log %s/%s: %s %s", e.Source, e.Level, e.Text, e.URL)
		// Failed API calls (4xx) are logged by the network source; they
		// are expected here. Anything else at error level is not, e.g. a
		// Content-Security-Policy violation.
		problem = e.Level == log.EntryLevelError && e.Source != log.EntrySourceNetwork
	default:
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logs = append(p.logs, entry)
	if problem {
		p.problems = append(p.problems, entry)
	}
}

// checkConsole fails the test if the page threw, logged an error or broke
// its Content-Security-Policy.
func (p *page) checkConsole() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.problems {
		p.t.Errorf("the page reported: %s", pr)
	}
}

func (p *page) dumpDiagnostics() {
	p.mu.Lock()
	logs := strings.Join(p.logs, "\n")
	p.mu.Unlock()
	if logs != "" {
		p.t.Logf("page console and log:\n%s", logs)
	}
	if out := tail(p.output, 3000); out != "" {
		p.t.Logf("browser output (tail):\n%s", out)
	}
}

// fatalf fails the test with the visible text of card (an id; "" for the
// whole page), so that a failure shows what the user would have seen.
func (p *page) fatalf(card, format string, args ...any) {
	p.t.Helper()
	p.t.Fatalf("%s\n%s", fmt.Sprintf(format, args...), p.describe(card))
}

func (p *page) describe(card string) string {
	expr := `document.body.innerText`
	what := "page"
	if card != "" {
		expr = fmt.Sprintf(`(e => e ? e.innerText + "\n[data-state=" + (e.dataset.state || "") + "]" : "(no element #%s)")(document.getElementById(%q))`, card, card)
		what = "#" + card
	}
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		return fmt.Sprintf("(could not read %s: %v)", what, err)
	}
	return fmt.Sprintf("--- %s shows ---\n%s\n---", what, strings.TrimSpace(text))
}

// do runs actions, failing the test with what was being done.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fatalf("", "%s: %v", what, err)
	}
}

// eval evaluates expr in the page; it must not throw.
func eval[T any](p *page, expr string, opts ...chromedp.EvaluateOption) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		p.fatalf("", "evaluate %s: %v", expr, err)
	}
	return v
}

// typeInto replaces the contents of the field with id as a user would:
// focus it, select everything, delete, then type text key by key.
func (p *page) typeInto(id, text string) {
	p.t.Helper()
	sel := chromedp.ID(id)
	p.do("focus #"+id, chromedp.WaitVisible(sel), chromedp.Focus(sel))
	eval[chromedp.Void](p, fmt.Sprintf(`document.getElementById(%q).select()`, id))
	keys := kb.Backspace + text
	p.do("type into #"+id, chromedp.SendKeys(sel, keys))
	if got := p.value(id); got != text {
		p.fatalf("", "#%s holds %q after typing, want %q", id, got, text)
	}
}

func (p *page) value(id string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`document.getElementById(%q).value`, id))
}

func (p *page) text(selector string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(e => e ? e.textContent.trim() : "(no element)")(document.querySelector(%q))`, selector))
}

func (p *page) attr(selector, name string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`(e => e ? (e.getAttribute(%q) ?? "(no attribute)") : "(no element)")(document.querySelector(%q))`, name, selector))
}

// waitFor waits until the JavaScript expression gives a non-empty string,
// and returns that string. It re-checks on a short timer rather than on DOM
// mutations, because an image finishing its decoding mutates nothing.
func (p *page) waitFor(card, what, expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout+5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[string](expr,
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout)))
	if err != nil {
		p.fatalf(card, "waiting for %s: %v", what, err)
	}
	return v
}

// submit clicks button and waits until its card's request has ended, then
// checks the card's state ("done" or "error"). The card's data-state is
// cleared first, so an earlier request's state cannot be mistaken for this
// one's.
func (p *page) submit(card, button, want string) {
	p.t.Helper()
	p.do("reset #"+card, chromedp.RemoveAttribute(chromedp.ID(card), "data-state"))
	p.do("click #"+button, chromedp.WaitEnabled(chromedp.ID(button)), chromedp.Click(chromedp.ID(button)))
	got := p.waitFor(card, "#"+card+" to finish its request", fmt.Sprintf(
		`(s => (s === "done" || s === "error") && !document.getElementById(%q).disabled && s)(document.getElementById(%q).dataset.state)`,
		button, card))
	if got != want {
		p.fatalf(card, "after clicking #%s the card's state is %q, want %q", button, got, want)
	}
}

type statCell struct{ value, text string }

// statsTable reads a statistics table: field → raw value and shown text.
func (p *page) statsTable(id string) map[string]statCell {
	p.t.Helper()
	rows := eval[map[string][2]string](p, fmt.Sprintf(`Object.fromEntries(
		[...document.querySelectorAll("#%s tr[data-field]")].map(tr => {
			const td = tr.querySelector("td");
			return [tr.dataset.field, [td.dataset.value, td.textContent.trim()]];
		}))`, id))
	table := make(map[string]statCell, len(rows))
	for k, v := range rows {
		table[k] = statCell{value: v[0], text: v[1]}
	}
	return table
}

// expectStats checks raw values and, for numbers, the shown text too.
func (p *page) expectStats(card, table string, got map[string]statCell, want map[string]string) {
	p.t.Helper()
	if visible := eval[bool](p, fmt.Sprintf(`(e => !!e && !e.hidden && e.offsetParent !== null)(document.getElementById(%q))`, table)); !visible {
		p.fatalf(card, "#%s is not visible", table)
	}
	for field, w := range want {
		c, ok := got[field]
		if !ok {
			p.fatalf(card, "#%s has no row for %s", table, field)
		}
		if c.value != w || c.text != w {
			p.fatalf(card, "#%s shows %s = %q (raw %q), want %q", table, field, c.text, c.value, w)
		}
	}
}

// expectError checks the card's error box: visible, with the status line,
// code and a sentence (mentioning mention, when given).
func (p *page) expectError(card, status, code, mention string) {
	p.t.Helper()
	box := eval[map[string]string](p, fmt.Sprintf(`(box => ({
		hidden: String(box.hidden),
		status: box.querySelector(".error-status")?.textContent ?? "",
		code: box.querySelector(".error-code")?.textContent ?? "",
		message: box.querySelector(".error-message")?.textContent ?? "",
	}))(document.querySelector("#%s .error"))`, card))
	if box["hidden"] != "false" {
		p.fatalf(card, "the error box of #%s is hidden, want it shown", card)
	}
	if box["status"] != status || box["code"] != code {
		p.fatalf(card, "the error box of #%s shows %q %q, want %q %q", card, box["status"], box["code"], status, code)
	}
	msg := box["message"]
	if len(strings.Fields(msg)) < 3 {
		p.fatalf(card, "the error message %q is not a sentence", msg)
	}
	if mention != "" && !strings.Contains(strings.ToLower(msg), mention) {
		p.fatalf(card, "the error message %q does not mention %q", msg, mention)
	}
}

// images returns the src of every <img> in #images once they have loaded.
func (p *page) images() []string {
	p.t.Helper()
	p.waitFor("generate-card", "the images to load",
		`[...document.querySelectorAll("#images img")].every(img => img.complete) && "loaded"`)
	broken := eval[int](p, `[...document.querySelectorAll("#images img")].filter(img => img.naturalWidth === 0).length`)
	if broken != 0 {
		p.fatalf("generate-card", "%d images in #images did not render", broken)
	}
	return eval[[]string](p, `[...document.querySelectorAll("#images img")].map(img => img.getAttribute("src"))`)
}

// tail returns the last n bytes of the browser's output, without the
// D-Bus complaints a browser in a container makes.
func tail(output *syncbuf.Buffer, n int) string {
	lines := strings.SplitAfter(output.String(), "\n")
	var kept strings.Builder
	for _, l := range lines {
		if !strings.Contains(l, ":ERROR:dbus/") {
			kept.WriteString(l)
		}
	}
	s := kept.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}
