// Package config reads Felix's settings from the environment and from .env files.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"

	"github.com/felix-gateway/felix/internal/store"
)

// Config is every setting Felix reads. Load fills it; the zero value is not
// usable.
type Config struct {
	DatabaseURL       string         // "" means SQLite at ./felix.db
	DatabaseURLFrom   string         // where DATABASE_URL was set: "the environment", ".env.local", ".env", or "" when unset
	ConnectTimeout    time.Duration  // STORE_CONNECT_TIMEOUT: how long startup may wait for the database
	TargetURLs        []*url.URL     // the image APIs' base URLs, path prefix kept, in configuration order; nil when not required and unset
	TargetPath        string         // path appended to each of TargetURLs, starts with "/"
	TargetKey         string         // secret sent to the target; "" sends none
	TargetKeyHeader   string         // header carrying TargetKey; "Authorization" sends "Bearer <key>"
	TargetTimeout     time.Duration  // how long one call to the target may take
	TargetIdleTimeout time.Duration  // how long a target's answer may pause once its headers arrived
	ReservationGrace  time.Duration  // orphaned calls are released TargetTimeout+ReservationGrace after they start
	AdminToken        string         // bearer token for admin operations; "" disables them
	Addr              string         // listen address, ":PORT"
	MaxBodyBytes      int64          // largest accepted request body
	MaxWidth          int            // largest accepted width
	MaxHeight         int            // largest accepted height
	MaxSteps          int            // largest accepted steps
	MaxBatchSize      int            // largest accepted batch_size
	ShutdownTimeout   time.Duration  // how long in-flight requests may take to finish on shutdown
	StatsLocation     *time.Location // time zone of the daily statistics
	InstanceID        string         // "" means the caller picks one (hostname:port)
	LogLevel          slog.Level     // minimum level logged
	LogFormat         string         // "text" or "json"
	AutoMigrate       bool           // serve applies migrations at start
	UsageRetention    time.Duration  // how long the usage log keeps a call; 0 keeps them forever
	IdempotencyTTL    time.Duration  // how long an Idempotency-Key is remembered
	IdempotencyMax    int64          // largest answer kept for replaying an Idempotency-Key

	TargetMaxInFlight    int           // calls one target runs at once; 0: no cap
	QueueMax             int           // calls that may wait for a target
	QueueTimeout         time.Duration // how long a call may wait for a target
	TargetCooldown       time.Duration // a target that gave no answer is left out this long
	TargetHealthPath     string        // probed with GET on every target; "" probes nothing
	TargetHealthInterval time.Duration // time between probes, and each probe's timeout

	MetricsAddr string // "" serves /metrics on the main port (admin token); host:port serves it there, without a token
}

// Var describes one environment variable Felix reads.
type Var struct {
	Name    string // e.g. "TARGET_API_DOMAIN"
	Default string // used when the variable is unset or empty; "" if none
	Help    string // one line for --help and the README
}

// Vars lists every variable Load reads, in a stable order for --help and the
// README. Load takes its defaults from here, so do not modify it.
var Vars = []Var{
	{"DATABASE_URL", "", "postgres://… for PostgreSQL; a file path (./data/felix.db) or sqlite:PATH for SQLite; empty means SQLite at ./felix.db"},
	{"STORE_CONNECT_TIMEOUT", "10s", "how long startup waits for the database to answer before it fails (Go duration); waiting for another instance's migrations is not counted"},
	{"TARGET_API_DOMAIN", "", "base URL of the image API, or several separated by commas (one per GPU backend), e.g. https://gpu.example.com (required by serve)"},
	{"TARGET_API_PATH", "/api/generate", "path of the generate endpoint on the target"},
	{"TARGET_API_KEY", "", "secret sent to the target; never logged or returned to clients"},
	{"TARGET_API_KEY_HEADER", "Authorization", `header carrying TARGET_API_KEY; with Authorization it is sent as "Bearer <key>"`},
	{"TARGET_TIMEOUT", "120s", "how long Felix waits for the target's response headers (Go duration)"},
	{"TARGET_IDLE_TIMEOUT", "60s", "how long an answer may stall once its headers arrived, the target sending or the client taking nothing (Go duration); the call stays charged"},
	{"RESERVATION_GRACE", "30s", "orphaned calls are released TARGET_TIMEOUT plus this after they start"},
	{"ADMIN_TOKEN", "", "bearer token for admin operations, at least 16 bytes (openssl rand -hex 32); empty disables them"},
	{"PORT", "3000", "TCP port to listen on"},
	{"MAX_BODY_BYTES", "1048576", "largest accepted request body, in bytes"},
	{"MAX_WIDTH", "2048", "largest accepted width"},
	{"MAX_HEIGHT", "2048", "largest accepted height"},
	{"MAX_STEPS", "150", "largest accepted steps"},
	{"MAX_BATCH_SIZE", "8", "largest accepted batch_size"},
	{"SHUTDOWN_TIMEOUT", "30s", "how long in-flight requests may take to finish on shutdown"},
	{"STATS_TIMEZONE", "UTC", "IANA time zone in which daily statistics are counted, e.g. Europe/Berlin"},
	{"INSTANCE_ID", "", "name of this instance in the store; empty means hostname:port"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"LOG_FORMAT", "text", "text or json"},
	{"AUTO_MIGRATE", "true", "serve applies database migrations at start (true or false)"},
	{"IDEMPOTENCY_TTL", "24h", "how long an Idempotency-Key is remembered per API key (Go duration)"},
	{"IDEMPOTENCY_MAX_BYTES", "16777216", "largest answer kept to replay a repeated Idempotency-Key; larger ones answer 409 already_succeeded"},
	{"USAGE_RETENTION_DAYS", "90", "days the usage log keeps each call (0 keeps them forever); counters and daily totals are kept regardless"},
	{"TARGET_MAX_IN_FLIGHT", "0", "calls one target runs at once (a GPU does one or a few jobs at a time); 0 means no cap"},
	{"QUEUE_MAX", "1000", "calls that may wait for a target when every target is full; one more is answered 503 queue_full"},
	{"QUEUE_TIMEOUT", "60s", "how long a call may wait for a target before it is answered 503 queue_timeout (Go duration)"},
	{"TARGET_COOLDOWN", "10s", "a target that refused, reset or timed out a call is left out this long, then tried again"},
	{"TARGET_HEALTH_PATH", "", "path probed with GET on every target, e.g. /internal/ping: 2xx marks it up, anything else down; empty probes nothing"},
	{"TARGET_HEALTH_INTERVAL", "5s", "time between health probes, and how long each may take (Go duration)"},
	{"METRICS_ADDR", "", "host:port of a separate listener for GET /metrics without a token, e.g. 127.0.0.1:9464; empty serves /metrics on the main port behind ADMIN_TOKEN"},
}

// envFiles are read from Load's dir, the first one winning.
var envFiles = []string{".env.local", ".env"}

// Load reads the settings. A variable comes from lookup (normally
// os.LookupEnv) when lookup reports it as set, even to "", else from the file
// .env.local in dir, else from .env in dir, else its default in Vars; an
// empty value means the default. The files are parsed, never loaded: the
// process environment is not modified. A missing file is fine; an unreadable
// or malformed one is an error naming it.
//
// requireTarget makes TARGET_API_DOMAIN mandatory (serve); without it an
// unset TARGET_API_DOMAIN leaves TargetURLs nil.
//
// Every bad variable is reported at once: the error joins one sentence per
// problem, each naming the variable and giving an example value.
func Load(lookup func(string) (string, bool), dir string, requireTarget bool) (Config, error) {
	e := env{lookup: lookup}
	for _, name := range envFiles {
		vars, err := readEnvFile(filepath.Join(dir, name))
		if err != nil {
			e.errs = append(e.errs, err)
		}
		e.files = append(e.files, vars)
	}
	if len(e.errs) > 0 {
		// Variables set in a broken file are unknown; checking the rest
		// would only add misleading errors.
		return Config{}, errors.Join(e.errs...)
	}

	c := Config{
		DatabaseURL:       e.databaseURL(),
		DatabaseURLFrom:   e.from("DATABASE_URL"),
		ConnectTimeout:    e.duration("STORE_CONNECT_TIMEOUT", false),
		TargetURLs:        e.targetURLs(requireTarget),
		TargetPath:        e.targetPath(),
		TargetKey:         e.secret("TARGET_API_KEY"),
		TargetKeyHeader:   e.headerName("TARGET_API_KEY_HEADER"),
		TargetTimeout:     e.duration("TARGET_TIMEOUT", false),
		TargetIdleTimeout: e.duration("TARGET_IDLE_TIMEOUT", false),
		ReservationGrace:  e.duration("RESERVATION_GRACE", true),
		AdminToken:        e.adminToken(),
		Addr:              e.addr(),
		MaxBodyBytes:      int64(e.positiveInt("MAX_BODY_BYTES")),
		MaxWidth:          e.positiveInt("MAX_WIDTH"),
		MaxHeight:         e.positiveInt("MAX_HEIGHT"),
		MaxSteps:          e.positiveInt("MAX_STEPS"),
		MaxBatchSize:      e.positiveInt("MAX_BATCH_SIZE"),
		ShutdownTimeout:   e.duration("SHUTDOWN_TIMEOUT", false),
		StatsLocation:     e.location("STATS_TIMEZONE"),
		InstanceID:        e.get("INSTANCE_ID"),
		LogLevel:          e.logLevel("LOG_LEVEL"),
		LogFormat:         e.oneOf("LOG_FORMAT", "text", "json"),
		AutoMigrate:       e.bool("AUTO_MIGRATE"),
		UsageRetention:    e.days("USAGE_RETENTION_DAYS"),
		IdempotencyTTL:    e.duration("IDEMPOTENCY_TTL", false),
		IdempotencyMax:    int64(e.positiveInt("IDEMPOTENCY_MAX_BYTES")),

		TargetMaxInFlight:    e.count("TARGET_MAX_IN_FLIGHT"),
		QueueMax:             e.positiveInt("QUEUE_MAX"),
		QueueTimeout:         e.duration("QUEUE_TIMEOUT", false),
		TargetCooldown:       e.duration("TARGET_COOLDOWN", false),
		TargetHealthPath:     e.path("TARGET_HEALTH_PATH", "/internal/ping"),
		TargetHealthInterval: e.duration("TARGET_HEALTH_INTERVAL", false),

		MetricsAddr: e.listenAddr("METRICS_ADDR"),
	}
	if len(e.errs) > 0 {
		return Config{}, errors.Join(e.errs...)
	}
	return c, nil
}

// TargetEndpoints returns the URLs requests are forwarded to: each of
// TargetURLs with TargetPath appended.
func (c Config) TargetEndpoints() []string {
	out := make([]string, len(c.TargetURLs))
	for i, u := range c.TargetURLs {
		out[i] = strings.TrimSuffix(u.String(), "/") + c.TargetPath
	}
	return out
}

// LogValue keeps secrets out of logs: the target key and admin token are
// shown only as set or unset, the database password is redacted.
func (c Config) LogValue() slog.Value {
	db := c.DatabaseURL
	if u, err := url.Parse(db); err == nil && u.User != nil {
		db = u.Redacted()
	}
	return slog.GroupValue(
		slog.String("database", db),
		slog.String("targets", strings.Join(c.TargetEndpoints(), ",")),
		slog.Bool("target_key_set", c.TargetKey != ""),
		slog.String("target_key_header", c.TargetKeyHeader),
		slog.Duration("target_timeout", c.TargetTimeout),
		slog.Duration("target_idle_timeout", c.TargetIdleTimeout),
		slog.Duration("reservation_grace", c.ReservationGrace),
		slog.Bool("admin_token_set", c.AdminToken != ""),
		slog.String("addr", c.Addr),
		slog.String("instance_id", c.InstanceID),
		slog.Bool("auto_migrate", c.AutoMigrate),
		slog.String("metrics_addr", c.MetricsAddr),
	)
}

// readEnvFile parses one .env file. A missing file gives no variables.
func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	vars, err := godotenv.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s is not a valid env file (%v): write one NAME=value per line, e.g. PORT=3000, or remove the file", path, err)
	}
	return vars, nil
}

// env looks variables up in order of precedence and collects the problems.
type env struct {
	lookup func(string) (string, bool)
	files  []map[string]string // .env.local, .env
	errs   []error
}

// get returns the value of name from the first source that sets it, or its
// default when that value is empty.
func (e *env) get(name string) string {
	v, ok := e.lookup(name)
	for _, vars := range e.files {
		if ok {
			break
		}
		v, ok = vars[name]
	}
	if v == "" {
		v = defaultOf(name)
	}
	return v
}

// from names the source of name's value as get finds it: "the
// environment", a file name, or "" when it is unset or empty (its default).
func (e *env) from(name string) string {
	if v, ok := e.lookup(name); ok {
		if v == "" {
			return ""
		}
		return "the environment"
	}
	for i, vars := range e.files {
		if v, ok := vars[name]; ok {
			if v == "" {
				return ""
			}
			return envFiles[i]
		}
	}
	return ""
}

// defaultOf returns the default of a variable listed in Vars.
func defaultOf(name string) string {
	for _, v := range Vars {
		if v.Name == name {
			return v.Default
		}
	}
	panic("config: variable " + name + " is missing from Vars")
}

func (e *env) fail(format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf(format, args...))
}

// databaseURL never repeats the value in its errors: it may hold a password.
func (e *env) databaseURL() string {
	const name = "DATABASE_URL"
	const example = "use e.g. DATABASE_URL=postgres://felix:secret@localhost:5432/felix or DATABASE_URL=/var/lib/felix/felix.db"
	s := e.get(name)
	// store.Parse decides what a DATABASE_URL means, and says why when it
	// means nothing.
	if _, _, err := store.Parse(s); err != nil {
		var ue *store.URLError
		if !errors.As(err, &ue) {
			ue = &store.URLError{Problem: "selects no store"}
		}
		e.fail("%s %s: %s", name, ue.Problem, example)
		return ""
	}
	return s
}

// targetURLs reads one base URL or several separated by commas.
func (e *env) targetURLs(required bool) []*url.URL {
	const name = "TARGET_API_DOMAIN"
	const example = "TARGET_API_DOMAIN=https://gpu.example.com or TARGET_API_DOMAIN=http://10.0.0.5:7860,http://10.0.0.6:7860"
	s := e.get(name)
	if s == "" {
		if required {
			e.fail("%s is not set: set it to the image API's base URL, e.g. %s", name, example)
		}
		return nil
	}
	var urls []*url.URL
	seen := map[string]bool{}
	bad := false
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		u := e.targetURL(part, example)
		switch {
		case part == "":
			if !bad {
				e.fail("%s has an empty entry between commas: list base URLs separated by single commas, e.g. %s", name, example)
			}
			bad = true
		case u == nil:
			bad = true
		case seen[u.String()]:
			e.fail("%s lists %s twice: list each target once, e.g. %s", name, u, example)
			bad = true
		default:
			seen[u.String()] = true
			urls = append(urls, u)
		}
	}
	if bad {
		return nil
	}
	return urls
}

// targetURL checks one entry of TARGET_API_DOMAIN; "" is left to the caller.
func (e *env) targetURL(s, example string) *url.URL {
	const name = "TARGET_API_DOMAIN"
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		e.fail("%s=%q is not an http or https URL with a host: use e.g. %s", name, s, example)
	case u.User != nil:
		// Not repeating the value: it holds a password.
		e.fail("%s contains a user name or password: remove it and put the secret in TARGET_API_KEY, e.g. %s", name, example)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		e.fail("%s=%q has a query or fragment: use only a scheme, a host and an optional path prefix, e.g. %s", name, s, example)
	default:
		return u
	}
	return nil
}

func (e *env) targetPath() string { return e.path("TARGET_API_PATH", "/api/generate") }

// path reads a URL path starting with "/"; an empty value is left as is.
func (e *env) path(name, example string) string {
	s := e.get(name)
	if s == "" {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || !strings.HasPrefix(s, "/") || u.Host != "" || strings.ContainsAny(s, "?# ") || strings.ContainsFunc(s, isControl) {
		e.fail("%s=%q is not a path starting with /: use e.g. %s=%s", name, s, name, example)
	}
	return s
}

// secret checks a value sent in a header; its errors never repeat the value.
func (e *env) secret(name string) string {
	s := e.get(name)
	if strings.ContainsFunc(s, isControl) {
		e.fail("%s contains a line break or control character: set it to the key alone, e.g. %s=sk-0123456789abcdef", name, name)
	}
	return s
}

func (e *env) adminToken() string {
	const name = "ADMIN_TOKEN"
	s := e.get(name)
	switch {
	case strings.ContainsFunc(s, func(r rune) bool { return isControl(r) || r == ' ' }):
		e.fail("%s contains a space or control character: generate one with `openssl rand -hex 32` and set %s to its output", name, name)
	case s != "" && len(s) < 16:
		e.fail("%s is shorter than 16 bytes: generate one with `openssl rand -hex 32` and set %s to its output", name, name)
	}
	return s
}

func (e *env) headerName(name string) string {
	s := e.get(name)
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return !isTokenChar(r) }) {
		e.fail("%s=%q is not a valid header name: use e.g. %s=X-API-Key", name, s, name)
	}
	return s
}

func (e *env) duration(name string, zeroOK bool) time.Duration {
	s := e.get(name)
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		e.fail("%s=%q is not a duration: use e.g. %s=%s", name, s, name, defaultOf(name))
	case d < 0 && zeroOK:
		e.fail("%s=%q is negative: use e.g. %s=%s", name, s, name, defaultOf(name))
	case d <= 0 && !zeroOK:
		e.fail("%s=%q is not greater than zero: use e.g. %s=%s", name, s, name, defaultOf(name))
	}
	return d
}

func (e *env) positiveInt(name string) int {
	s := e.get(name)
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		e.fail("%s=%q is not a positive whole number: use e.g. %s=%s", name, s, name, defaultOf(name))
	}
	return n
}

// days reads a whole number of days, 0 or more.
func (e *env) days(name string) time.Duration {
	s := e.get(name)
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 100*366 {
		e.fail("%s=%q is not a whole number of days (0 for forever): use e.g. %s=%s", name, s, name, defaultOf(name))
	}
	return time.Duration(n) * 24 * time.Hour
}

// count reads a whole number of 0 or more.
func (e *env) count(name string) int {
	s := e.get(name)
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		e.fail("%s=%q is not a whole number of 0 or more: use e.g. %s=1", name, s, name)
	}
	return n
}

func (e *env) addr() string {
	const name = "PORT"
	s := e.get(name)
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		e.fail("%s=%q is not a TCP port from 1 to 65535: use e.g. %s=3000", name, s, name)
	}
	return ":" + strconv.Itoa(n)
}

// listenAddr reads an optional host:port to listen on; the host may be
// empty (every interface), the port 0 (any free one).
func (e *env) listenAddr(name string) string {
	s := e.get(name)
	if s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n < 0 || n > 65535 || strings.ContainsAny(host, " /") {
		e.fail("%s=%q is not a host:port to listen on: use e.g. %s=127.0.0.1:9464", name, s, name)
		return ""
	}
	return s
}

func (e *env) location(name string) *time.Location {
	s := e.get(name)
	loc, err := time.LoadLocation(s)
	if err != nil || s == "Local" {
		e.fail("%s=%q is not an IANA time zone: use e.g. %s=Europe/Berlin", name, s, name)
	}
	return loc
}

func (e *env) logLevel(name string) slog.Level {
	s := e.get(name)
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	l, ok := levels[strings.ToLower(s)]
	if !ok {
		e.fail("%s=%q is not debug, info, warn or error: use e.g. %s=info", name, s, name)
	}
	return l
}

func (e *env) oneOf(name string, choices ...string) string {
	s := e.get(name)
	for _, c := range choices {
		if strings.EqualFold(s, c) {
			return c
		}
	}
	e.fail("%s=%q is not %s: use e.g. %s=%s", name, s, strings.Join(choices, " or "), name, choices[0])
	return ""
}

func (e *env) bool(name string) bool {
	s := e.get(name)
	b, err := strconv.ParseBool(s)
	if err != nil {
		e.fail("%s=%q is not true or false: use e.g. %s=false", name, s, name)
	}
	return b
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// isTokenChar reports whether r may appear in an HTTP header name (RFC 9110 tchar).
func isTokenChar(r rune) bool {
	return r < 0x7f && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}
