package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envOf returns a lookup func over a fixed set of variables.
func envOf(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// writeFile writes name with content into dir.
func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := Load(envOf(nil), t.TempDir(), false)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"DatabaseURL", c.DatabaseURL, ""},
		{"TargetURLs == nil", c.TargetURLs == nil, true},
		{"TargetEndpoints", strings.Join(c.TargetEndpoints(), ","), ""},
		{"TargetPath", c.TargetPath, "/api/generate"},
		{"TargetKey", c.TargetKey, ""},
		{"TargetKeyHeader", c.TargetKeyHeader, "Authorization"},
		{"TargetTimeout", c.TargetTimeout, 120 * time.Second},
		{"ReservationGrace", c.ReservationGrace, 30 * time.Second},
		{"AdminToken", c.AdminToken, ""},
		{"Addr", c.Addr, ":3000"},
		{"MaxBodyBytes", c.MaxBodyBytes, int64(1 << 20)},
		{"MaxWidth", c.MaxWidth, 2048},
		{"MaxHeight", c.MaxHeight, 2048},
		{"MaxSteps", c.MaxSteps, 150},
		{"MaxBatchSize", c.MaxBatchSize, 8},
		{"ShutdownTimeout", c.ShutdownTimeout, 30 * time.Second},
		{"StatsLocation", c.StatsLocation, time.UTC},
		{"InstanceID", c.InstanceID, ""},
		{"LogLevel", c.LogLevel, slog.LevelInfo},
		{"LogFormat", c.LogFormat, "text"},
		{"AutoMigrate", c.AutoMigrate, true},
		{"TargetMaxInFlight", c.TargetMaxInFlight, 0},
		{"QueueMax", c.QueueMax, 1000},
		{"QueueTimeout", c.QueueTimeout, 60 * time.Second},
		{"TargetCooldown", c.TargetCooldown, 10 * time.Second},
		{"TargetHealthPath", c.TargetHealthPath, ""},
		{"TargetHealthInterval", c.TargetHealthInterval, 5 * time.Second},
		{"MetricsAddr", c.MetricsAddr, ""},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadValues(t *testing.T) {
	c, err := Load(envOf(map[string]string{
		"DATABASE_URL":           "postgres://felix:secret@db:5432/felix",
		"TARGET_API_DOMAIN":      "https://gpu.example.com/sd/",
		"TARGET_API_PATH":        "/sdapi/v1/txt2img",
		"TARGET_API_KEY":         "sk-123",
		"TARGET_API_KEY_HEADER":  "X-API-Key",
		"TARGET_TIMEOUT":         "5m",
		"TARGET_IDLE_TIMEOUT":    "90s",
		"RESERVATION_GRACE":      "0s",
		"ADMIN_TOKEN":            "0123456789abcdef",
		"PORT":                   "8080",
		"MAX_BODY_BYTES":         "4096",
		"MAX_WIDTH":              "1024",
		"MAX_HEIGHT":             "768",
		"MAX_STEPS":              "50",
		"MAX_BATCH_SIZE":         "4",
		"SHUTDOWN_TIMEOUT":       "10s",
		"STATS_TIMEZONE":         "Europe/Berlin",
		"INSTANCE_ID":            "felix-1",
		"LOG_LEVEL":              "DEBUG",
		"LOG_FORMAT":             "JSON",
		"AUTO_MIGRATE":           "false",
		"TARGET_MAX_IN_FLIGHT":   "1",
		"QUEUE_MAX":              "50",
		"QUEUE_TIMEOUT":          "2m",
		"TARGET_COOLDOWN":        "3s",
		"TARGET_HEALTH_PATH":     "/internal/ping",
		"TARGET_HEALTH_INTERVAL": "1s",
		"METRICS_ADDR":           "127.0.0.1:9464",
	}), t.TempDir(), true)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"DatabaseURL", c.DatabaseURL, "postgres://felix:secret@db:5432/felix"},
		{"TargetEndpoints", strings.Join(c.TargetEndpoints(), ","), "https://gpu.example.com/sd/sdapi/v1/txt2img"},
		{"TargetKey", c.TargetKey, "sk-123"},
		{"TargetKeyHeader", c.TargetKeyHeader, "X-API-Key"},
		{"TargetTimeout", c.TargetTimeout, 5 * time.Minute},
		{"TargetIdleTimeout", c.TargetIdleTimeout, 90 * time.Second},
		{"ReservationGrace", c.ReservationGrace, time.Duration(0)},
		{"AdminToken", c.AdminToken, "0123456789abcdef"},
		{"Addr", c.Addr, ":8080"},
		{"MaxBodyBytes", c.MaxBodyBytes, int64(4096)},
		{"MaxWidth", c.MaxWidth, 1024},
		{"MaxHeight", c.MaxHeight, 768},
		{"MaxSteps", c.MaxSteps, 50},
		{"MaxBatchSize", c.MaxBatchSize, 4},
		{"ShutdownTimeout", c.ShutdownTimeout, 10 * time.Second},
		{"StatsLocation", c.StatsLocation.String(), "Europe/Berlin"},
		{"InstanceID", c.InstanceID, "felix-1"},
		{"LogLevel", c.LogLevel, slog.LevelDebug},
		{"LogFormat", c.LogFormat, "json"},
		{"AutoMigrate", c.AutoMigrate, false},
		{"TargetMaxInFlight", c.TargetMaxInFlight, 1},
		{"QueueMax", c.QueueMax, 50},
		{"QueueTimeout", c.QueueTimeout, 2 * time.Minute},
		{"TargetCooldown", c.TargetCooldown, 3 * time.Second},
		{"TargetHealthPath", c.TargetHealthPath, "/internal/ping"},
		{"TargetHealthInterval", c.TargetHealthInterval, time.Second},
		{"MetricsAddr", c.MetricsAddr, "127.0.0.1:9464"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLoadBadValue(t *testing.T) {
	tests := []struct {
		name, value string
		want        string // in the error, besides the name
	}{
		{"DATABASE_URL", "mysql://u:p@h/db", "DATABASE_URL=postgres://"},
		{"DATABASE_URL", "mysql://u:p@h/db", `unsupported scheme "mysql"`},
		{"DATABASE_URL", "http://db.example.com/felix", `unsupported scheme "http"`},
		{"DATABASE_URL", "localhost:5432/felix", "postgres://"},
		{"DATABASE_URL", "host=db user=felix", "key=value"},
		{"DATABASE_URL", "/var/lib/felix/", "folder"},
		{"DATABASE_URL", "sqlite:", "names no SQLite file"},
		{"DATABASE_URL", "file:felix.db?mode=ro", "Felix sets them itself"},
		{"DATABASE_URL", "postgres://u:p#ss@h/db", "percent-encode"},
		{"TARGET_API_DOMAIN", "gpu.example.com", "TARGET_API_DOMAIN=https://gpu.example.com"},
		{"TARGET_API_DOMAIN", "ftp://gpu.example.com", "not an http or https URL"},
		{"TARGET_API_DOMAIN", "https://", "not an http or https URL"},
		{"TARGET_API_DOMAIN", "https://gpu.example.com/?x=1", "query or fragment"},
		{"TARGET_API_DOMAIN", "https://user:pw@gpu.example.com", "user name or password"},
		{"TARGET_API_DOMAIN", "http://a.example.com,,http://b.example.com", "empty entry"},
		{"TARGET_API_DOMAIN", ",", "empty entry"},
		{"TARGET_API_DOMAIN", "http://a.example.com, http://a.example.com", "lists http://a.example.com twice"},
		{"TARGET_API_DOMAIN", "http://a.example.com,b.example.com", `"b.example.com" is not an http or https URL`},
		{"TARGET_API_PATH", "api/generate", "TARGET_API_PATH=/api/generate"},
		{"TARGET_API_PATH", "//evil.example.com/x", "not a path"},
		{"TARGET_API_PATH", "/generate?x=1", "not a path"},
		{"TARGET_API_KEY", "sk-123\n", "line break"},
		{"TARGET_API_KEY_HEADER", "X API Key", "TARGET_API_KEY_HEADER=X-API-Key"},
		{"TARGET_API_KEY_HEADER", "X-Key:", "not a valid header name"},
		{"TARGET_TIMEOUT", "abc", "TARGET_TIMEOUT=120s"},
		{"TARGET_TIMEOUT", "120", "not a duration"},
		{"TARGET_TIMEOUT", "0s", "not greater than zero"},
		{"TARGET_IDLE_TIMEOUT", "1 minute", "TARGET_IDLE_TIMEOUT=60s"},
		{"TARGET_IDLE_TIMEOUT", "0", "not greater than zero"},
		{"RESERVATION_GRACE", "-1s", "RESERVATION_GRACE=30s"},
		{"ADMIN_TOKEN", "short", "openssl rand -hex 32"},
		{"ADMIN_TOKEN", "0123456789 abcdef", "space"},
		{"PORT", "0", "PORT=3000"},
		{"PORT", "65536", "PORT=3000"},
		{"PORT", "http", "PORT=3000"},
		{"MAX_BODY_BYTES", "1MB", "MAX_BODY_BYTES=1048576"},
		{"MAX_WIDTH", "0", "MAX_WIDTH=2048"},
		{"MAX_HEIGHT", "-5", "MAX_HEIGHT=2048"},
		{"MAX_STEPS", "1.5", "MAX_STEPS=150"},
		{"MAX_BATCH_SIZE", "many", "MAX_BATCH_SIZE=8"},
		{"SHUTDOWN_TIMEOUT", "0", "SHUTDOWN_TIMEOUT=30s"},
		{"STATS_TIMEZONE", "Mars/Olympus", "STATS_TIMEZONE=Europe/Berlin"},
		{"STATS_TIMEZONE", "Local", "not an IANA time zone"},
		{"LOG_LEVEL", "verbose", "LOG_LEVEL=info"},
		{"LOG_FORMAT", "xml", "LOG_FORMAT=text"},
		{"AUTO_MIGRATE", "maybe", "AUTO_MIGRATE=false"},
		{"TARGET_MAX_IN_FLIGHT", "-1", "TARGET_MAX_IN_FLIGHT=1"},
		{"TARGET_MAX_IN_FLIGHT", "one", "0 or more"},
		{"QUEUE_MAX", "0", "QUEUE_MAX=1000"},
		{"QUEUE_TIMEOUT", "0s", "QUEUE_TIMEOUT=60s"},
		{"TARGET_COOLDOWN", "10", "TARGET_COOLDOWN=10s"},
		{"TARGET_HEALTH_PATH", "health", "TARGET_HEALTH_PATH=/internal/ping"},
		{"TARGET_HEALTH_INTERVAL", "-5s", "TARGET_HEALTH_INTERVAL=5s"},
		{"METRICS_ADDR", "9464", "METRICS_ADDR=127.0.0.1:9464"},
		{"METRICS_ADDR", "127.0.0.1:http", "METRICS_ADDR=127.0.0.1:9464"},
		{"METRICS_ADDR", "127.0.0.1:70000", "METRICS_ADDR=127.0.0.1:9464"},
		{"METRICS_ADDR", "http://127.0.0.1:9464", "METRICS_ADDR=127.0.0.1:9464"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			_, err := Load(envOf(map[string]string{tt.name: tt.value}), t.TempDir(), false)
			if err == nil {
				t.Fatalf("got no error, want one naming %s", tt.name)
			}
			msg := err.Error()
			if strings.Count(msg, "\n") != 0 {
				t.Errorf("got %d lines, want 1: %s", strings.Count(msg, "\n")+1, msg)
			}
			if !strings.HasPrefix(msg, tt.name) {
				t.Errorf("got %q, want it to start with %s", msg, tt.name)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("got %q, want it to contain %q", msg, tt.want)
			}
		})
	}
}

func TestLoadNeverEchoesSecrets(t *testing.T) {
	tests := []struct{ name, value, secret string }{
		{"DATABASE_URL", "mysql://felix:hunter2@db/felix", "hunter2"},
		{"DATABASE_URL", "postgres://felix:hun#ter2@db/felix", "hun#ter2"},
		{"TARGET_API_DOMAIN", "https://felix:hunter2@gpu.example.com", "hunter2"},
		{"TARGET_API_DOMAIN", "http://gpu1.example.com,https://felix:hunter2@gpu2.example.com", "hunter2"},
		{"TARGET_API_KEY", "hunter2\r\n", "hunter2"},
		{"ADMIN_TOKEN", "hunter2", "hunter2"},
	}
	for _, tt := range tests {
		_, err := Load(envOf(map[string]string{tt.name: tt.value}), t.TempDir(), false)
		if err == nil {
			t.Errorf("%s=%q: got no error, want one", tt.name, tt.value)
			continue
		}
		if strings.Contains(err.Error(), tt.secret) {
			t.Errorf("%s=%q: got %q, want no %q in it", tt.name, tt.value, err, tt.secret)
		}
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load(envOf(map[string]string{
		"TARGET_TIMEOUT": "abc",
		"PORT":           "99999",
		"LOG_LEVEL":      "loud",
	}), t.TempDir(), true)
	if err == nil {
		t.Fatal("got no error, want four problems")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"TARGET_API_DOMAIN is not set", "TARGET_TIMEOUT=", "PORT=", "LOG_LEVEL="}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i, prefix := range want {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d: got %q, want it to start with %q", i+1, lines[i], prefix)
		}
	}
}

// TestLoadDatabaseFile: a SQLite file may be named as operators write
// it, as a bare path, whether it exists yet or not.
func TestLoadDatabaseFile(t *testing.T) {
	for _, v := range []string{"./data/felix.db", "/var/lib/felix/felix.db", "felix.db", "sqlite:/var/lib/felix/felix.db", "file:felix.db"} {
		c, err := Load(envOf(map[string]string{"DATABASE_URL": v}), t.TempDir(), false)
		if err != nil || c.DatabaseURL != v {
			t.Errorf("DATABASE_URL=%s: got %q, %v; want it accepted", v, c.DatabaseURL, err)
		}
	}
}

func TestLoadRequireTarget(t *testing.T) {
	tests := []struct {
		domain        string
		requireTarget bool
		wantErr       bool
		wantEndpoint  string
	}{
		{"", false, false, ""},
		{"", true, true, ""},
		{"https://gpu.example.com", false, false, "https://gpu.example.com/api/generate"},
		{"https://gpu.example.com", true, false, "https://gpu.example.com/api/generate"},
		{"http://10.0.0.5:7860/", true, false, "http://10.0.0.5:7860/api/generate"},
		{"not a url", false, true, ""},
		{"http://10.0.0.5:7860, http://10.0.0.6:7860/sd", true, false, "http://10.0.0.5:7860/api/generate,http://10.0.0.6:7860/sd/api/generate"},
	}
	for _, tt := range tests {
		vars := map[string]string{}
		if tt.domain != "" {
			vars["TARGET_API_DOMAIN"] = tt.domain
		}
		c, err := Load(envOf(vars), t.TempDir(), tt.requireTarget)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q, requireTarget=%v: got error %v, want error %v", tt.domain, tt.requireTarget, err, tt.wantErr)
			continue
		}
		if got := strings.Join(c.TargetEndpoints(), ","); got != tt.wantEndpoint {
			t.Errorf("%q, requireTarget=%v: got endpoint %q, want %q", tt.domain, tt.requireTarget, got, tt.wantEndpoint)
		}
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, ".env", `
# lowest
TARGET_API_DOMAIN=https://from-env-file.example.com
PORT=4000
MAX_STEPS=10
LOG_LEVEL=warn
`)
	writeFile(t, dir, ".env.local", `
TARGET_API_DOMAIN="https://from-env-local.example.com"
PORT=5000
LOG_LEVEL=
`)
	c, err := Load(envOf(map[string]string{"PORT": "6000"}), dir, true)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"PORT (environment wins)", c.Addr, ":6000"},
		{"TARGET_API_DOMAIN (.env.local beats .env)", c.TargetURLs[0].Host, "from-env-local.example.com"},
		{"MAX_STEPS (.env only)", c.MaxSteps, 10},
		{"LOG_LEVEL (empty in .env.local means default)", c.LogLevel, slog.LevelInfo},
		{"MAX_WIDTH (default)", c.MaxWidth, 2048},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}

	// A variable set but empty in the environment hides the files.
	c, err = Load(envOf(map[string]string{"PORT": ""}), dir, true)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Addr != ":3000" {
		t.Errorf("PORT set to empty in the environment: got %q, want %q", c.Addr, ":3000")
	}
}

func TestLoadMalformedFile(t *testing.T) {
	for _, name := range []string{".env", ".env.local"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, name, "PORT=4000\nTARGET_API_KEY=\"unterminated\n")
			_, err := Load(envOf(nil), dir, false)
			if err == nil {
				t.Fatal("got no error, want one naming the file")
			}
			if want := filepath.Join(dir, name); !strings.Contains(err.Error(), want) {
				t.Errorf("got %q, want it to name %s", err, want)
			}
		})
	}
}

func TestLoadUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, ".env"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Load(envOf(nil), dir, false)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, ".env")) {
		t.Errorf("got %v, want an error naming %s", err, filepath.Join(dir, ".env"))
	}
}

func TestLoadLeavesProcessEnvironmentAlone(t *testing.T) {
	const canary = "FELIX_CONFIG_TEST_CANARY"
	for _, name := range []string{canary, "TARGET_API_DOMAIN"} {
		if _, ok := os.LookupEnv(name); ok {
			t.Skipf("%s is set in the test environment", name)
		}
	}
	dir := t.TempDir()
	writeFile(t, dir, ".env", canary+"=1\nTARGET_API_DOMAIN=https://gpu.example.com\n")
	if _, err := Load(envOf(nil), dir, true); err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, name := range []string{canary, "TARGET_API_DOMAIN"} {
		if v, ok := os.LookupEnv(name); ok {
			t.Errorf("%s: got %q in the process environment, want it unset", name, v)
		}
	}
}

func TestVarsCoverLoad(t *testing.T) {
	seen := map[string]bool{}
	var asked []string
	lookup := func(name string) (string, bool) {
		asked = append(asked, name)
		return "", false
	}
	if _, err := Load(lookup, t.TempDir(), false); err != nil {
		t.Fatalf("Load: %v", err)
	}
	for _, name := range asked {
		seen[name] = true
	}
	for _, v := range Vars {
		if !seen[v.Name] {
			t.Errorf("%s: listed in Vars, got never read by Load", v.Name)
		}
		if v.Help == "" || strings.Contains(v.Help, "\n") {
			t.Errorf("%s: got help %q, want one non-empty line", v.Name, v.Help)
		}
	}
	if len(seen) != len(Vars) {
		t.Errorf("got %d variables read, want %d (one per entry of Vars)", len(seen), len(Vars))
	}
}

func TestLogValueHidesSecrets(t *testing.T) {
	c, err := Load(envOf(map[string]string{
		"DATABASE_URL":      "postgres://felix:hunter2@db/felix",
		"TARGET_API_DOMAIN": "https://gpu.example.com",
		"TARGET_API_KEY":    "sk-hunter2",
		"ADMIN_TOKEN":       "hunter2hunter2hunter2",
	}), t.TempDir(), true)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "config", c)
	if strings.Contains(b.String(), "hunter2") {
		t.Errorf("got %q, want no secret in it", b.String())
	}
}
