package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/felix-gateway/felix/internal/config"
	"github.com/felix-gateway/felix/internal/demo"
	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
)

// demoCalls is how many calls the printed demo key gets.
const demoCalls = 100

func demoCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "demo", "[--addr host:port]",
		"Run the whole product with zero configuration, for trying Felix:\nSQLite in a temporary folder (deleted on exit), a built-in image generator as\nthe target, a random admin token and a demo key, printed with the test page URL.\nIt ignores the environment and .env files, so it never touches a real database.", nil)
	addr := fs.String("addr", "127.0.0.1:3000", "listen address; if the port is taken a free one is chosen")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "felix-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	noEnv := func(string) (string, bool) { return "", false }
	cfg, err := config.Load(noEnv, dir, false)
	if err != nil {
		return err
	}
	cfg.DatabaseURL = "sqlite:" + filepath.Join(dir, "felix.db")
	cfg.InstanceID = "demo"
	cfg.AdminToken = strings.ToLower(rand.Text())
	cfg.TargetKey = strings.ToLower(rand.Text())
	cfg.ShutdownTimeout = 5 * time.Second

	// The built-in image generator, on a loopback port of its own.
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	target := &http.Server{
		Handler:           demo.NewTarget(demo.Options{Token: cfg.TargetKey, MaxWidth: cfg.MaxWidth, MaxHeight: cfg.MaxHeight, MaxBatch: cfg.MaxBatchSize}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go target.Serve(tln)
	defer target.Close()
	cfg.TargetURLs = []*url.URL{{Scheme: "http", Host: tln.Addr().String()}}

	m := newMetrics(cfg)
	st, err := openStore(ctx, cfg.DatabaseURL, true, store.Options{Observer: m})
	if err != nil {
		return err
	}
	defer st.Close()
	log := newLogger(cfg, e.stderr)
	svc := newService(cfg, st, log, m)
	_, key, err := svc.CreateKey(ctx, quota.KeySpec{Name: "demo", Remaining: demoCalls})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		host, _, _ := net.SplitHostPort(*addr)
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return fmt.Errorf("listen on %s: %w (try --addr 127.0.0.1:3001)", *addr, err)
	}
	cfg.Addr = ln.Addr().String()
	base := "http://" + cfg.Addr
	fmt.Fprintf(e.stdout, `
Felix demo is running (Ctrl+C stops it and deletes its data).

  Test page     %s/test
  Dashboard     %s/admin   (log in with the admin token)
  Admin token   %s
  Demo key      %s   (%d calls)

Try it from a shell:
  curl -s %s/api/generate -H 'Authorization: Bearer %s' -d '{"prompt":"a red fox","width":256,"height":256}' | head -c 120; echo
  curl -s '%s/api/apikey?apiKey=%s'
  curl -s %s/api/stats -H 'Authorization: Bearer %s'

`, base, base, cfg.AdminToken, key, demoCalls, base, key, base, key, base, cfg.AdminToken)
	return serveOn(ctx, ln, nil, cfg, svc, m, log)
}
