package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the benchmark started: felix, or this program in a
// helper role.
type child struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // how it exited; read only after exited
}

// startChild starts path with args and env (nil: this process's), its
// stderr copied line by line to log with the child's name in front. The
// child has a process group of its own, so that Ctrl+C reaches only the
// benchmark, which stops its children in order; it is killed if the
// benchmark dies.
func startChild(name string, log *lineLog, dir string, env []string, stdout io.Writer, path string, args ...string) (*child, error) {
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = stdout
	cmd.Stderr = log.writer(name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// pid returns the child's process ID.
func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to finish (SIGTERM), kills it after 15 s, and
// reports whether it had died before being asked or failed to stop.
func (c *child) stop() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited before the end of the benchmark: %v", c.name, c.err)
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
		return fmt.Errorf("%s did not stop within 15s of SIGTERM and was killed", c.name)
	}
	if c.err != nil {
		return fmt.Errorf("%s: %w", c.name, c.err)
	}
	return nil
}

// firstLine sends the first line written to it on line and discards the
// rest.
type firstLine struct {
	buf  []byte
	line chan<- string // buffered: the send never blocks
	sent bool
}

// Write implements io.Writer.
func (f *firstLine) Write(p []byte) (int, error) {
	if !f.sent {
		f.buf = append(f.buf, p...)
		if i := bytes.IndexByte(f.buf, '\n'); i >= 0 {
			f.line <- string(f.buf[:i])
			f.buf, f.sent = nil, true
		}
	}
	return len(p), nil
}

// startHelper starts this program in a helper role and returns it with
// the base URL it announced.
func startHelper(ctx context.Context, self, name string, log *lineLog, args ...string) (*child, string, error) {
	line := make(chan string, 1)
	c, err := startChild(name, log, "", nil, &firstLine{line: line}, self, args...)
	if err != nil {
		return nil, "", err
	}
	select {
	case l := <-line:
		addr, ok := strings.CutPrefix(l, listeningPrefix)
		if !ok {
			c.stop()
			return nil, "", fmt.Errorf("%s: unexpected first line %q", name, l)
		}
		return c, "http://" + addr, nil
	case <-c.exited:
		return nil, "", fmt.Errorf("%s exited at start: %v", name, c.err)
	case <-time.After(15 * time.Second):
		c.stop()
		return nil, "", fmt.Errorf("%s did not announce its address within 15s", name)
	case <-ctx.Done():
		c.stop()
		return nil, "", ctx.Err()
	}
}

// buildFelix builds ./cmd/felix of the module containing the working
// directory into dir and returns the binary's path.
func buildFelix(ctx context.Context, dir string, stderr io.Writer) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run felix-bench from inside the felix module (e.g. go run ./cmd/felix-bench)")
	}
	bin := filepath.Join(dir, "felix")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/felix")
	cmd.Dir = filepath.Dir(gomod)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/felix: %w", err)
	}
	return bin, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// memory is a process's resident set size now (VmRSS) and at its peak
// since it started (VmHWM), in bytes.
type memory struct {
	rss, hwm int64
}

// readMemory reads a process's memory from /proc/<pid>/status.
func readMemory(pid int) (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	m, err := parseMemory(string(b))
	if err != nil {
		return memory{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return m, nil
}

// parseMemory reads VmRSS and VmHWM from the text of /proc/<pid>/status.
func parseMemory(status string) (memory, error) {
	var m memory
	for line := range strings.SplitSeq(status, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name != "VmRSS" && name != "VmHWM" {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("%s: %w", name, err)
		}
		if name == "VmRSS" {
			m.rss = kb << 10
		} else {
			m.hwm = kb << 10
		}
	}
	if m.rss == 0 || m.hwm == 0 {
		return memory{}, errors.New("no VmRSS or VmHWM line")
	}
	return m, nil
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// cpuTime reads the CPU time (user and system, all threads) a process has
// used, to 10 ms.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	d, err := parseCPUTime(string(b))
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return d, nil
}

// parseCPUTime reads utime + stime from the text of /proc/<pid>/stat.
func parseCPUTime(stat string) (time.Duration, error) {
	// The command name, in parentheses, may contain spaces and
	// parentheses; utime and stime are the 12th and 13th fields after it.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// cpuTimes sums the CPU times of several processes.
func cpuTimes(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		d, err := cpuTime(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// samplePeakRSS samples the sum of the processes' VmRSS every interval
// until the returned function is called, which returns the largest sample
// in bytes.
func samplePeakRSS(pids []int, every time.Duration) (stop func() int64) {
	done, peak := make(chan struct{}), make(chan int64, 1)
	go func() {
		var highest int64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var sum int64
			for _, pid := range pids {
				if m, err := readMemory(pid); err == nil {
					sum += m.rss
				}
			}
			highest = max(highest, sum)
			select {
			case <-done:
				peak <- highest
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-peak
	}
}

// mib converts bytes to MiB.
func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// raiseFileLimit raises this process's open-file limit to its hard limit,
// enough for thousands of connections, and returns the new limit.
func raiseFileLimit() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// lineLog is the benchmark's stderr, shared by the children: each of their
// lines is written whole, with the child's name in front.
type lineLog struct {
	mu sync.Mutex
	w  io.Writer
}

// printf writes one message of the benchmark itself.
func (l *lineLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}

// writer returns a writer for the output of the child name.
func (l *lineLog) writer(name string) io.Writer { return &prefixWriter{log: l, name: name} }

// prefixWriter writes each complete line written to it to a lineLog.
type prefixWriter struct {
	log     *lineLog
	name    string
	partial []byte // the line being written
}

// Write implements io.Writer.
func (p *prefixWriter) Write(b []byte) (int, error) {
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.log.printf("[%s] %s", p.name, p.partial[:i])
		p.partial = p.partial[i+1:]
	}
}
