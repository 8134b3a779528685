package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/felix-gateway/felix/internal/testwait"
)

// pgServers builds throwaway PostgreSQL servers for failover tests with
// the server binaries (initdb, pg_basebackup, pg_ctl): in a temporary
// folder, on free loopback ports, as the postgres OS user when the test
// runs as root (PostgreSQL refuses root). It never touches another
// cluster: each server has its own port and socket folder, and every one
// it started is stopped when the test ends.
type pgServers struct {
	t    *testing.T
	bin  string // folder of the server binaries
	dir  string // everything lives below it
	cred *syscall.Credential
	all  []*pgNode
}

// pgNode is one server: its data folder and loopback port, kept across
// rebuilds so that a URL listing it stays valid.
type pgNode struct {
	name string
	port int
	data string
	log  string
}

func (n *pgNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// newPGServers finds the PostgreSQL server binaries, or skips the test
// without them (fails it when CI is set).
func newPGServers(t *testing.T) *pgServers {
	t.Helper()
	missing := func(format string, args ...any) *pgServers {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the failover test: "+format, args...)
		}
		t.Skipf(format, args...)
		return nil
	}
	bin := pgBinDir()
	if bin == "" {
		return missing("PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found in PATH or /usr/lib/postgresql/*/bin")
	}
	s := &pgServers{t: t, bin: bin}
	dir, err := os.MkdirTemp("", "felix-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(s.cleanup)
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return missing("running as root, and there is no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s.sweepStale()
	return s
}

// ownerFile holds the id of the test process that made a pgServers
// folder. A test process that is killed (or that panics on -timeout)
// never runs its cleanup, and its servers keep running; ownerFile tells
// such a folder from one that a running test uses.
const ownerFile = "owner.pid"

// sweepStale stops the servers of every pgServers folder whose test
// process is gone, and removes the folder.
func (s *pgServers) sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "felix-pg-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // being made, or not one of ours
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || processAlive(pid) {
			continue
		}
		pids, _ := filepath.Glob(filepath.Join(d, "*", "postmaster.pid"))
		for _, p := range pids {
			s.run("pg_ctl", "-D", filepath.Dir(p), "-m", "immediate", "-w", "stop")
		}
		os.RemoveAll(d)
		s.t.Logf("removed %s and stopped its servers: its test process %d is gone", d, pid)
	}
}

// processAlive reports whether a process with this id exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// pgBinDir returns a folder holding initdb, pg_ctl and pg_basebackup:
// initdb's in PATH (links followed), else the newest of
// /usr/lib/postgresql/*/bin (Debian's layout); "" if none.
func pgBinDir() string {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if p, err = filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	version := func(dir string) int { v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir))); return v }
	slices.SortFunc(found, func(a, b string) int { return version(b) - version(a) })
	for _, dir := range append(dirs, found...) {
		complete := true
		for _, name := range []string{"initdb", "pg_ctl", "pg_basebackup"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				complete = false
			}
		}
		if complete {
			return dir
		}
	}
	return ""
}

// node names a new server and gives it a free loopback port.
func (s *pgServers) node(name string) *pgNode {
	s.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &pgNode{name: name, port: port, data: filepath.Join(s.dir, name), log: filepath.Join(s.dir, name+".log")}
	s.all = append(s.all, n)
	return n
}

// run runs one of the server binaries as the server's OS user.
func (s *pgServers) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=" + s.bin + ":/usr/bin:/bin", "HOME=" + s.dir, "LC_ALL=C"}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *pgServers) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

// initPrimary creates and starts a primary on n.
func (s *pgServers) initPrimary(n *pgNode) {
	s.t.Helper()
	s.must(s.run("initdb", "-D", n.data, "-U", "postgres", "--auth=trust", "--locale=C", "-E", "UTF8", "-N"))
	// fsync off: an immediate stop kills processes, not the machine, so
	// what the servers wrote survives it anyway.
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
fsync = off
shared_buffers = 16MB
max_connections = 60
wal_keep_size = 64MB
log_min_messages = warning
`, s.dir)
	s.must(appendFile(n.data+"/postgresql.conf", conf))
	s.start(n)
}

// startStandby (re)builds n as a streaming standby of primary and starts
// it. It does not make primary wait for it (see makeSync), and it will not
// wait for a standby of its own once promoted.
func (s *pgServers) startStandby(n, primary *pgNode) {
	s.t.Helper()
	s.must(os.RemoveAll(n.data))
	s.must(s.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.port), "-U", "postgres",
		"-D", n.data, "-R", "-X", "stream", "-c", "fast"))
	s.must(appendFile(n.data+"/postgresql.auto.conf", "synchronous_standby_names = ''\n"))
	s.start(n)
}

func (s *pgServers) start(n *pgNode) {
	s.t.Helper()
	s.must(s.run("pg_ctl", "-D", n.data, "-l", n.log, "-o", "-p "+strconv.Itoa(n.port), "-w", "-t", "60", "start"))
}

// stopImmediate stops n as a crash would: no checkpoint, connections cut.
func (s *pgServers) stopImmediate(n *pgNode) {
	s.t.Helper()
	s.must(s.run("pg_ctl", "-D", n.data, "-m", "immediate", "-w", "stop"))
}

// promote turns the standby n into a primary and waits until it accepts
// writes.
func (s *pgServers) promote(n *pgNode) {
	s.t.Helper()
	s.must(s.run("pg_ctl", "-D", n.data, "-w", "-t", "60", "promote"))
}

// exec runs statements on n, each in its own transaction.
func (s *pgServers) exec(n *pgNode, statements ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", n.addr()))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, st := range statements {
		if _, err := conn.Exec(ctx, st); err != nil {
			return fmt.Errorf("%s on %s: %w", st, n.name, err)
		}
	}
	return nil
}

// makeSync makes primary's commits wait for a standby (synchronous
// replication) and waits until one streams synchronously.
func (s *pgServers) makeSync(primary *pgNode) {
	s.t.Helper()
	s.must(s.exec(primary, `ALTER SYSTEM SET synchronous_standby_names = '*'`, `SELECT pg_reload_conf()`))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", primary.addr()))
	s.must(err)
	defer conn.Close(ctx)
	if !testwait.For(30*time.Second, func() bool {
		var n int
		err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'`).Scan(&n)
		return err == nil && n > 0
	}) {
		s.t.Fatalf("no synchronous standby of %s after 30s (%v)", primary.name, err)
	}
}

// cleanup stops every server still running and removes the folder.
func (s *pgServers) cleanup() {
	for _, n := range s.all {
		if _, err := os.Stat(filepath.Join(n.data, "postmaster.pid")); err == nil {
			s.run("pg_ctl", "-D", n.data, "-m", "immediate", "-w", "stop")
		}
	}
	if s.t.Failed() {
		for _, n := range s.all {
			if b, err := os.ReadFile(n.log); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				s.t.Logf("log of PostgreSQL %s (%s), last lines:\n%s", n.name, n.addr(), strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
	}
	os.RemoveAll(s.dir)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	return errors.Join(err, f.Close())
}

// TestPGServersSweepStale: a server left running by a test process that
// is gone is stopped, and its folder removed, by the next pgServers; the
// folder of a running test process is left alone.
func TestPGServersSweepStale(t *testing.T) {
	old := newPGServers(t)
	n := old.node("left")
	old.initPrimary(n)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old.dir, ownerFile), []byte(strconv.Itoa(gone.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	live := newPGServers(t) // its own folder names this process: kept
	newPGServers(t)
	if _, err := os.Stat(old.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the folder of a gone test process is still there: %v", err)
	}
	if c, err := net.DialTimeout("tcp", n.addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("the server left by a gone test process still answers on %s", n.addr())
	}
	if _, err := os.Stat(live.dir); err != nil {
		t.Errorf("the folder of a running test process was removed: %v", err)
	}
}
