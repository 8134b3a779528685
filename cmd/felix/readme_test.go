package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/config"
	"github.com/felix-gateway/felix/internal/demo"
	"github.com/felix-gateway/felix/internal/syncbuf"
)

// variableTables are the files whose tables document config.Vars: the
// README has the few most installations need, docs/configuration.md the rest.
var variableTables = []string{"../../README.md", "../../docs/configuration.md"}

// TestDocsListEveryVariable keeps the configuration tables honest: every
// variable Felix reads is the first cell of exactly one table row.
func TestDocsListEveryVariable(t *testing.T) {
	rows := map[string][]string{} // variable → files whose table lists it
	for _, file := range variableTables {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(text), "\n") {
			cells := strings.Split(line, "|")
			if !strings.HasPrefix(line, "|") || len(cells) < 3 {
				continue
			}
			for _, v := range config.Vars {
				if strings.Contains(cells[1], "`"+v.Name+"`") {
					rows[v.Name] = append(rows[v.Name], file)
				}
			}
		}
	}
	for _, v := range config.Vars {
		if got := rows[v.Name]; len(got) != 1 {
			t.Errorf("%s is in the variable tables of %v; want exactly one of %v", v.Name, got, variableTables)
		}
	}
}

// A readmeBlock is one fenced code block of README.md.
type readmeBlock struct {
	line     int    // line of the opening fence, 1-based
	info     string // the fence's info string, e.g. "sh"
	runnable bool   // the line before the fence is runnableMark
	section  string // the "## " heading it is under
	text     string
}

// runnableMark, on the line before a fence, says TestREADMEExamples runs the
// block verbatim in bash, after the runnable blocks above it.
const runnableMark = "<!-- runnable -->"

func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	text, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	var cur *readmeBlock
	section, prev := "", ""
	for i, line := range strings.Split(string(text), "\n") {
		switch {
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "```"):
			cur = &readmeBlock{line: i + 1, info: strings.TrimPrefix(line, "```"), runnable: strings.TrimSpace(prev) == runnableMark, section: section}
		case strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	if cur != nil {
		t.Fatalf("README.md:%d: the code block is never closed", cur.line)
	}
	return blocks
}

// moduleCopy returns a fresh directory that looks like a clone of the
// repository to the go command (every top-level entry linked) but holds
// none of the files the README's commands write or read there: bin/,
// felix.db and the .env files.
func moduleCopy(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, e := range entries {
		name := e.Name()
		if name == ".git" || name == "bin" || name == ".env" || name == ".env.local" || strings.HasPrefix(name, "felix.db") {
			continue
		}
		if err := os.Symlink(filepath.Join(root, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// shellEnv is this process's environment without any variable Felix reads,
// so a developer's own settings never reach the Felix a test starts.
func shellEnv(extra ...string) []string {
	felixVar := map[string]bool{}
	for _, v := range config.Vars {
		felixVar[v.Name] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); !felixVar[name] {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// needTools fails (under CI) or skips the test when a command the README's
// examples use is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not installed; the README's examples need it", tool)
			}
			t.Skipf("%s is not installed; the README's examples need it", tool)
		}
	}
}

// shell returns bash running script in dir, in its own process group so
// that cancelling ctx ends everything the script started.
func shell(ctx context.Context, dir, script string, env []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// TestREADMEExamples runs the README's runnable shell blocks verbatim, in
// order, in one bash (set -euo pipefail) in a fresh copy of the repository,
// the way a user pastes them. Three substitutions make them run here:
// the example backend URL becomes a demo image generator on loopback,
// `felix serve` listens on a free loopback port instead of :3000, and
// localhost:3000 becomes that address. After a block that starts a server in
// the background the script waits for /readyz; at the end it stops
// background jobs with SIGTERM.
func TestREADMEExamples(t *testing.T) {
	needTools(t, "bash", "curl", "openssl", "grep", "cut")
	blocks := readmeBlocks(t)
	var run []readmeBlock
	for _, b := range blocks {
		if b.runnable {
			run = append(run, b)
		}
		if b.info == "sh" && strings.Contains(b.text, "curl ") && !b.runnable {
			t.Errorf("README.md:%d: a shell example with curl is not marked %s: mark it, so this test runs it", b.line, runnableMark)
		}
		if b.runnable && regexp.MustCompile(`fx_[0-9A-Za-z]{4}`).MatchString(b.text) {
			t.Errorf("README.md:%d: a runnable example uses a literal key; use the variable set from the create answer", b.line)
		}
	}
	if len(run) == 0 || !strings.Contains(run[len(run)-1].text, "/api/generate") {
		t.Fatalf("no runnable README block calls /api/generate: got %d runnable blocks", len(run))
	}

	target := httptest.NewServer(demo.NewTarget(demo.Options{}))
	defer target.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	subst := strings.NewReplacer(
		"https://gpu.example.com", target.URL,
		"felix serve", "felix serve --addr "+addr,
		"localhost:3000", addr,
	)

	var script strings.Builder
	script.WriteString("set -euo pipefail\nexec 2>&1\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n")
	for _, b := range run {
		fmt.Fprintf(&script, "echo '>>> README.md:%d'\n%s", b.line, subst.Replace(b.text))
		if strings.Contains(b.text, " &") {
			ready := "curl -sf -o /dev/null http://" + addr + "/readyz"
			fmt.Fprintf(&script, "for i in $(seq 300); do %s && break; sleep 0.1; done\n%s || { echo 'the server started above never became ready'; exit 1; }\n", ready, ready)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := shell(ctx, moduleCopy(t), script.String(), shellEnv())
	out, err := cmd.Output()
	if err != nil {
		failed, at := string(out), "?"
		if i := strings.LastIndex(failed, ">>> README.md:"); i >= 0 {
			failed = failed[i:]
			at, _, _ = strings.Cut(strings.TrimPrefix(failed, ">>> README.md:"), "\n")
		}
		for _, b := range run {
			if strconv.Itoa(b.line) == at {
				t.Fatalf("README.md:%d failed (%v):\n%s\noutput:\n%s", b.line, err, b.text, failed)
			}
		}
		t.Fatalf("the README's examples failed (%v):\n%s", err, out)
	}
	t.Logf("the README's examples:\n%s", out)
	if !strings.Contains(string(out), `{"images":["`) {
		t.Errorf("the README's generate example printed no image:\n%s", out)
	}
}

// ciOnlyFlags are the flags CI adds to the README's test command: they
// change how the tests run (race detector, no cached results, a deadline),
// not which tests run.
var ciOnlyFlags = regexp.MustCompile(`\s-(race|count=\d+|timeout[= ]\S+)\b`)

// TestREADMEQuickStart keeps the Quick start's two commands what CI runs:
// .ci/run runs the test command (with only ciOnlyFlags added), and this
// test runs the run command verbatim in a fresh copy of the repository,
// on a free loopback port, and opens the test page it prints.
func TestREADMEQuickStart(t *testing.T) {
	needTools(t, "bash")
	var commands []string
	for _, b := range readmeBlocks(t) {
		if b.section != "Quick start" || b.info != "sh" {
			continue
		}
		for _, line := range strings.Split(b.text, "\n") {
			line, _, _ = strings.Cut(line, "#")
			if line = strings.TrimSpace(line); line != "" {
				commands = append(commands, line)
			}
		}
		break
	}
	if len(commands) != 2 || !strings.HasPrefix(commands[0], "go run ") || !strings.HasPrefix(commands[1], "go test ") {
		t.Fatalf("Quick start: got commands %q; want the run command (go run …) and the test command (go test …)", commands)
	}
	run, test := commands[0], commands[1]

	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var ciTests []string
	for _, line := range strings.Split(string(ci), "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "go test ") && strings.HasSuffix(line, " ./...") {
			ciTests = append(ciTests, line)
		}
	}
	if len(ciTests) != 1 || ciOnlyFlags.ReplaceAllString(ciTests[0], "") != test {
		t.Errorf("CI runs %q; want the README's test command %q with at most -race, -count and -timeout added", ciTests, test)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out syncbuf.Buffer
	cmd := shell(ctx, moduleCopy(t), run+" --addr 127.0.0.1:0", shellEnv())
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) // what Ctrl+C does: the demo stops and deletes its data
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("%q did not stop on SIGTERM", run)
		}
	}()

	page := regexp.MustCompile(`Test page\s+(http://\S+)`)
	var url string
	for url == "" {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%q stopped (%v) before printing its test page:\n%s", run, err, out.String())
		case <-ctx.Done():
			t.Fatalf("%q printed no test page within 3 minutes:\n%s", run, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if m := page.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
		}
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s (printed by %q): got %d, want 200", url, run, resp.StatusCode)
	}
}
