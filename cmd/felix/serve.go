package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/felix-gateway/felix/internal/config"
	"github.com/felix-gateway/felix/internal/metrics"
	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/target"
	"github.com/felix-gateway/felix/internal/web"
)

func serveCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "serve", "[--addr host:port] [--no-migrate]",
		"Run the gateway: POST /api/generate, the key API, /api/stats, /test, /healthz, /readyz, /metrics, /openapi.json.\nStops gracefully on SIGTERM or Ctrl+C: in-flight calls finish and are settled.", allVars())
	addr := fs.String("addr", "", "listen address, e.g. 127.0.0.1:8080 (overrides PORT)")
	noMigrate := fs.Bool("no-migrate", false, "do not apply migrations at start (same as AUTO_MIGRATE=false)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, true)
	if err != nil {
		return err
	}
	if *addr != "" {
		cfg.Addr = *addr
	}
	log := newLogger(cfg, e.stderr)
	// Listen first: a busy port fails before anything is created or
	// migrated, and holding the address proves that the previous process
	// of the same name is gone before this one releases its calls.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (set PORT or --addr to a free port)", cfg.Addr, err)
	}
	defer ln.Close()
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("listen on %s: %w (set METRICS_ADDR to a free address)", cfg.MetricsAddr, err)
		}
		defer metricsLn.Close()
	}
	m := newMetrics(cfg)
	st, err := startStore(ctx, cfg, cfg.AutoMigrate && !*noMigrate, true, store.Options{Observer: m})
	if err != nil {
		return err
	}
	defer st.Close()
	warnAutovacuum(ctx, st, log)
	if cfg.InstanceID == "" {
		host, _ := os.Hostname()
		cfg.InstanceID = host + ":" + portOf(ln.Addr())
	}
	svc := newService(cfg, st, log, m)
	if n, err := svc.ReleaseOwned(ctx); err != nil {
		log.Warn("could not release this instance's orphaned calls; recovery will", "err", err)
	} else if n > 0 {
		log.Info("released calls left open by this instance's previous run", "calls", n)
	}
	log.Info("felix listening", "addr", ln.Addr().String(), "config", cfg)
	return serveOn(ctx, ln, metricsLn, cfg, svc, m, log)
}

// newMetrics returns the metrics every layer reports to, with a latency
// series for each configured target from the start.
func newMetrics(cfg config.Config) *metrics.Metrics {
	urls := make([]string, len(cfg.TargetURLs))
	for i, u := range cfg.TargetURLs {
		urls[i] = u.String() // as the pool names them
	}
	return metrics.New(metrics.Options{Outcomes: server.Outcomes, Targets: urls})
}

// openStore opens the store of databaseURL, applying the migrations first
// when migrate is set. Only migrating creates a SQLite file.
func openStore(ctx context.Context, databaseURL string, migrate bool, o store.Options) (store.Store, error) {
	if migrate {
		if err := store.Migrate(ctx, databaseURL); err != nil {
			return nil, err
		}
	} else if err := databaseExists(databaseURL); err != nil {
		return nil, err
	}
	return store.Open(ctx, databaseURL, o)
}

// warnAutovacuum logs store.AutovacuumWarning when autovacuum is off for
// the store's tables, naming the settings or tables that turn it off.
func warnAutovacuum(ctx context.Context, st store.Store, log *slog.Logger) {
	off, err := store.AutovacuumOff(ctx, st)
	if err != nil {
		log.Warn("could not check whether autovacuum runs on felix's tables", "err", err)
	} else if len(off) > 0 {
		log.Warn(store.AutovacuumWarning, "off", off)
	}
}

// loadConfig reads the configuration, prefixing its errors helpfully.
func loadConfig(e env, requireTarget bool) (config.Config, error) {
	cfg, err := config.Load(e.lookup, e.dir, requireTarget)
	if err != nil {
		return cfg, fmt.Errorf("configuration:\n%w\n(see 'felix serve --help' for every variable)", err)
	}
	return cfg, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// releaseWait bounds how long a shutdown that cut connections waits for
// their handlers to release their calls.
const releaseWait = 5 * time.Second

// pruneInterval is how often the usage log drops calls older than
// USAGE_RETENTION_DAYS (also once at start).
const pruneInterval = time.Hour

// recoveryInterval is how often each instance looks for expired calls:
// an indexed query that usually finds nothing.
const recoveryInterval = time.Second

// hold is how long a call may stay open before recovery may release it:
// TARGET_TIMEOUT + RESERVATION_GRACE, less one recovery interval so that
// an orphan is released no later than TARGET_TIMEOUT + RESERVATION_GRACE
// after it started (but never before TARGET_TIMEOUT). When calls can wait
// for a target (TARGET_MAX_IN_FLIGHT set), QUEUE_TIMEOUT is added: a call
// reserved, then queued, is not an orphan.
func hold(cfg config.Config) time.Duration {
	limit := cfg.TargetTimeout
	if cfg.TargetMaxInFlight > 0 {
		limit += cfg.QueueTimeout
	}
	return max(limit+cfg.ReservationGrace-recoveryInterval, limit)
}

func newService(cfg config.Config, st store.Store, log *slog.Logger, obs quota.Observer) *quota.Service {
	return quota.NewService(quota.Options{
		Observer: obs,
		Ledger:   st,
		Keys:     st,
		Usage:    st,
		Owner:    cfg.InstanceID,
		Hold:     hold(cfg),
		Location: cfg.StatsLocation,

		IdempotencyTTL:      cfg.IdempotencyTTL,
		IdempotencyMaxBytes: cfg.IdempotencyMax,
		Logger:              log,
	})
}

// serveOn serves Felix on ln until ctx ends, then drains: it stops
// accepting, lets in-flight calls finish and settle for up to
// SHUTDOWN_TIMEOUT, and returns. The metrics are served on metricsLn
// without a token, or, when it is nil, at /metrics on ln behind the admin
// token.
func serveOn(ctx context.Context, ln, metricsLn net.Listener, cfg config.Config, svc *quota.Service, m *metrics.Metrics, log *slog.Logger) error {
	targets := newPool(cfg, log)
	m.ObservePool(targets)
	var metricsOnMain http.Handler
	if metricsLn == nil {
		metricsOnMain = m.Handler()
	} else {
		stop := serveMetrics(metricsLn, m, log)
		defer stop()
	}
	h := server.New(server.Options{
		Observer:          m,
		Metrics:           metricsOnMain,
		Quota:             svc,
		Targets:           targets,
		TargetKey:         quota.Secret(cfg.TargetKey),
		TargetKeyHeader:   cfg.TargetKeyHeader,
		TargetTimeout:     cfg.TargetTimeout,
		TargetIdleTimeout: cfg.TargetIdleTimeout,
		AdminToken:        quota.Secret(cfg.AdminToken),
		Limits: server.Limits{
			MaxBodyBytes: cfg.MaxBodyBytes, MaxWidth: cfg.MaxWidth, MaxHeight: cfg.MaxHeight,
			MaxSteps: cfg.MaxSteps, MaxBatchSize: cfg.MaxBatchSize,
		},
		Pages:  web.Handler(),
		Logger: log,
	})
	// inFlight counts running handlers, so that a shutdown that has to cut
	// connections can still wait for their calls to be released.
	var inFlight atomic.Int64
	hs := server.NewHTTPServer(cfg.Addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		h.ServeHTTP(w, r)
	}), log)

	recovery, stopRecovery := context.WithCancel(context.Background())
	defer stopRecovery()
	go svc.RunRecovery(recovery, recoveryInterval)
	go svc.RunPrune(recovery, cfg.UsageRetention, pruneInterval)
	go svc.RunRefills(recovery, recoveryInterval)
	go targets.RunHealth(recovery)

	served := make(chan error, 1)
	ln = &closeOnce{Listener: ln}
	go func() { served <- hs.Serve(server.Listener(ln)) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Stop accepting before saying so: once the line is logged, a new
	// connection is refused. Shutdown closes ln again, harmlessly.
	ln.Close()
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout)
	drain, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Queued calls are served while the drain lasts; those still waiting
	// near its end are answered 503 (and released) while their clients
	// are still connected.
	closeQueue := time.AfterFunc(cfg.ShutdownTimeout-queueCloseMargin(cfg.ShutdownTimeout), targets.CloseQueue)
	defer closeQueue.Stop()
	if err := hs.Shutdown(drain); err != nil {
		// Cut the rest off: their target requests are cancelled and their
		// calls released (not charged) before the store closes.
		log.Warn("drain timed out; closing remaining connections", "in_flight", inFlight.Load())
		hs.Close()
		for deadline := time.Now().Add(releaseWait); inFlight.Load() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// serveMetrics serves GET /metrics on ln, without a token (whoever can
// reach METRICS_ADDR may read them), until stop.
func serveMetrics(ln net.Listener, m *metrics.Metrics, log *slog.Logger) (stop func()) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	hs := server.NewHTTPServer(ln.Addr().String(), mux, log)
	go hs.Serve(ln)
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() { hs.Close() }
}

// closeOnce is a listener that may be closed more than once; only the
// first Close closes it.
type closeOnce struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *closeOnce) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// queueCloseMargin is how long before the end of a graceful shutdown the
// calls still queued are answered 503: a tenth of it, at most a second.
func queueCloseMargin(shutdown time.Duration) time.Duration {
	return min(shutdown/10, time.Second)
}

// newPool builds the targets of cfg, their caps, queue and health checks.
// Probes carry the target's key, as calls do.
func newPool(cfg config.Config, log *slog.Logger) *target.Pool {
	return target.New(target.Options{
		URLs:           cfg.TargetURLs,
		Path:           cfg.TargetPath,
		MaxInFlight:    cfg.TargetMaxInFlight,
		QueueMax:       cfg.QueueMax,
		QueueTimeout:   cfg.QueueTimeout,
		Cooldown:       cfg.TargetCooldown,
		HealthPath:     cfg.TargetHealthPath,
		HealthInterval: cfg.TargetHealthInterval,
		HealthHeader:   server.TargetAuth(cfg.TargetKeyHeader, quota.Secret(cfg.TargetKey)),
		Client: &http.Client{
			Transport:     server.NewTransport(cfg.TargetHealthInterval),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Logger: log,
	})
}

func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

func allVars() []string {
	names := make([]string, len(config.Vars))
	for i, v := range config.Vars {
		names[i] = v.Name
	}
	return names
}

func printVars(w io.Writer, names []string) {
	for _, name := range names {
		for _, v := range config.Vars {
			if v.Name == name {
				def := ""
				if v.Default != "" {
					def = " (default " + v.Default + ")"
				}
				fmt.Fprintf(w, "  %-22s %s%s\n", v.Name, v.Help, def)
			}
		}
	}
}

func migrateCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "migrate", "", "Apply the database migrations embedded in the binary, then exit.\nSafe to run from several instances at once on PostgreSQL (they take turns).", []string{"DATABASE_URL"})
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, false)
	if err != nil {
		return err
	}
	if err := migrateStore(ctx, cfg); err != nil {
		return err
	}
	kind, _, _ := store.Parse(cfg.DatabaseURL)
	fmt.Fprintf(e.stdout, "migrations applied (%s)\n", kind)
	return nil
}
