package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/testwait"
)

// adminToken is the ADMIN_TOKEN every felix process of these tests gets.
const adminToken = "e2e-admin-token-0123456789abcdef"

// felixOptions are the environment of one felix process.
type felixOptions struct {
	DatabaseURL      string
	Target           string        // TARGET_API_DOMAIN
	Instance         string        // INSTANCE_ID
	Addr             string        // 127.0.0.1:port; empty picks a free port
	TargetTimeout    time.Duration // TARGET_TIMEOUT, default 5s
	ReservationGrace time.Duration // RESERVATION_GRACE, default 1s
	ShutdownTimeout  time.Duration // SHUTDOWN_TIMEOUT, default 10s
	Env              []string      // more NAME=value settings
}

func (o felixOptions) env(port string) []string {
	d := func(v, def time.Duration) string {
		if v == 0 {
			v = def
		}
		return v.String()
	}
	// An explicit environment: nothing of the test's own leaks in.
	return append([]string{
		"DATABASE_URL=" + o.DatabaseURL,
		"TARGET_API_DOMAIN=" + o.Target,
		"ADMIN_TOKEN=" + adminToken,
		"PORT=" + port,
		"INSTANCE_ID=" + o.Instance,
		"TARGET_TIMEOUT=" + d(o.TargetTimeout, 5*time.Second),
		"RESERVATION_GRACE=" + d(o.ReservationGrace, time.Second),
		"SHUTDOWN_TIMEOUT=" + d(o.ShutdownTimeout, 10*time.Second),
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
	}, o.Env...)
}

// felix is one running felix serve process.
type felix struct {
	t       testing.TB
	opts    felixOptions
	Addr    string // 127.0.0.1:port
	URL     string // http://127.0.0.1:port
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
}

var felixSeq atomic.Int64

// startFelix starts felix serve with o and waits until /readyz answers
// 200. The process is killed when the test ends if it still runs, and its
// log is shown if the test failed.
func startFelix(t testing.TB, o felixOptions) *felix {
	t.Helper()
	f, err := launchFelix(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// launchFelix is startFelix returning its error, for use off the test's
// goroutine. With no Addr it picks a free loopback port, and picks again
// if another process took it in between.
func launchFelix(t testing.TB, o felixOptions) (*felix, error) {
	for attempt := 0; ; attempt++ {
		addr := o.Addr
		if addr == "" {
			var err error
			if addr, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		f, err := spawnFelix(t, o, addr)
		if err != nil {
			return nil, err
		}
		err = f.waitReady(30 * time.Second)
		if err == nil {
			return f, nil
		}
		if o.Addr == "" && attempt < 3 && strings.Contains(f.logText(), "address already in use") {
			continue
		}
		return nil, err
	}
}

// freeAddr asks the kernel for a free loopback port.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func spawnFelix(t testing.TB, o felixOptions, addr string) (*felix, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	n := felixSeq.Add(1)
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("felix-e2e-%d-%d-%s.log", os.Getpid(), n, o.Instance))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// --addr keeps the server on loopback; PORT is set too, as an operator would.
	cmd := exec.Command(felixBin, "serve", "--addr", addr)
	cmd.Env = o.env(port)
	cmd.Dir = filepath.Dir(logPath) // no .env files there
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start felix: %w", err)
	}
	f := &felix{t: t, opts: o, Addr: addr, URL: "http://" + addr, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		logFile.Close()
		close(f.exited)
	}()
	t.Cleanup(func() {
		if f.running() {
			cmd.Process.Kill()
			<-f.exited
		}
		if t.Failed() {
			t.Logf("log of felix %s (pid %d, %s, %s), last notable lines:\n%s", o.Instance, cmd.Process.Pid, addr, cmd.ProcessState, f.notableLog(20))
		}
		os.Remove(logPath)
	})
	return f, nil
}

// waitReady waits until the process says it listens, so that another
// server that took the port cannot pass for it, then polls /readyz until
// it answers 200. It fails if the process exits.
func (f *felix) waitReady(timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	listening, exited, ready := false, false, false
	testwait.For(timeout, func() bool {
		if exited = !f.running(); exited {
			return true
		}
		if !listening {
			listening = len(f.logRecords("felix listening")) > 0
		}
		if listening {
			if resp, err := hc.Get(f.URL + "/readyz"); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode == http.StatusOK
			}
		}
		return ready
	})
	switch {
	case exited:
		return fmt.Errorf("felix %s exited before it was ready (%s):\n%s", f.opts.Instance, f.cmd.ProcessState, f.logTail(30))
	case !ready:
		return fmt.Errorf("felix %s not ready after %s:\n%s", f.opts.Instance, timeout, f.logTail(30))
	}
	return nil
}

func (f *felix) running() bool {
	select {
	case <-f.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (f *felix) kill() {
	f.t.Helper()
	tally(f.kind(), func(r *tallyRow) { r.kills++ })
	if err := f.cmd.Process.Signal(syscall.SIGKILL); err != nil && f.running() {
		f.t.Fatalf("kill felix %s: %v", f.opts.Instance, err)
	}
	select {
	case <-f.exited:
	case <-time.After(10 * time.Second):
		f.t.Fatalf("felix %s still runs 10s after SIGKILL", f.opts.Instance)
	}
}

// terminate sends SIGTERM.
func (f *felix) terminate() {
	f.t.Helper()
	if err := f.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		f.t.Fatalf("SIGTERM felix %s: %v", f.opts.Instance, err)
	}
}

// waitExit waits up to timeout for the process to exit and returns its
// exit code, or ok false if it still runs.
func (f *felix) waitExit(timeout time.Duration) (code int, ok bool) {
	select {
	case <-f.exited:
		return f.cmd.ProcessState.ExitCode(), true
	case <-time.After(timeout):
		return 0, false
	}
}

// restart starts a new process with the same options on the same address.
func (f *felix) restart(t testing.TB, o felixOptions) *felix {
	t.Helper()
	o.Addr = f.Addr
	return startFelix(t, o)
}

func (f *felix) logText() string {
	b, _ := os.ReadFile(f.logPath)
	return string(b)
}

func (f *felix) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(f.logText(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// notableLog returns the last n log lines that are not access log lines
// of answers below 500.
func (f *felix) notableLog(n int) string {
	var out []string
	for _, line := range strings.Split(strings.TrimRight(f.logText(), "\n"), "\n") {
		var rec struct {
			Msg    string `json:"msg"`
			Status int    `json:"status"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "request" && rec.Status < 500 {
			continue
		}
		out = append(out, line)
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

// logRecords returns the JSON log records whose msg is msg.
func (f *felix) logRecords(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader([]byte(f.logText())))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// waitLog waits until the process has logged msg.
func (f *felix) waitLog(msg string, timeout time.Duration) error {
	if !testwait.For(timeout, func() bool { return len(f.logRecords(msg)) > 0 }) {
		return fmt.Errorf("felix %s did not log %q within %s:\n%s", f.opts.Instance, msg, timeout, f.notableLog(20))
	}
	return nil
}

// releasedAtStart returns how many calls of its previous run the process
// said it released at start.
func (f *felix) releasedAtStart() int {
	n := 0
	for _, rec := range f.logRecords("released calls left open by this instance's previous run") {
		if v, ok := rec["calls"].(float64); ok {
			n += int(v)
		}
	}
	return n
}

// kind is the store f runs on.
func (f *felix) kind() store.Kind {
	kind, _, _ := store.Parse(f.opts.DatabaseURL)
	return kind
}

// interrupt sends SIGTERM while f serves load: a fault in the summary.
func (f *felix) interrupt() {
	f.t.Helper()
	tally(f.kind(), func(r *tallyRow) { r.faults++ })
	f.terminate()
}

// readyz returns the status and error code of f's /readyz (0 when it
// does not answer within 5 s).
func readyz(f *felix) (int, string) {
	var e struct{ Code string }
	status, _ := getJSON(&http.Client{Timeout: 5 * time.Second}, f.URL+"/readyz", "", &e)
	return status, e.Code
}
