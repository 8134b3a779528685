package config

import (
	"strings"
	"testing"
	"time"
)

// TestDatabaseURLFrom: Felix remembers where DATABASE_URL came from, so
// that a database error can say which value to fix.
func TestDatabaseURLFrom(t *testing.T) {
	const url = "postgres://felix@db:5432/felix"
	cases := []struct {
		name             string
		env              map[string]string
		envLocal, dotEnv string // file contents
		want             string
	}{
		{"environment", map[string]string{"DATABASE_URL": url}, "DATABASE_URL=sqlite:a.db\n", "", "the environment"},
		{".env.local", nil, "DATABASE_URL=" + url + "\n", "DATABASE_URL=sqlite:b.db\n", ".env.local"},
		{".env", nil, "PORT=3001\n", "DATABASE_URL=" + url + "\n", ".env"},
		{"unset", nil, "", "", ""},
		{"empty in the environment wins", map[string]string{"DATABASE_URL": ""}, "DATABASE_URL=" + url + "\n", "", ""},
	}
	for _, c := range cases {
		dir := t.TempDir()
		if c.envLocal != "" {
			writeFile(t, dir, ".env.local", c.envLocal)
		}
		if c.dotEnv != "" {
			writeFile(t, dir, ".env", c.dotEnv)
		}
		cfg, err := Load(envOf(c.env), dir, false)
		if err != nil {
			t.Fatalf("%s: Load: %v", c.name, err)
		}
		if cfg.DatabaseURLFrom != c.want {
			t.Errorf("%s: got DatabaseURLFrom %q, want %q", c.name, cfg.DatabaseURLFrom, c.want)
		}
	}
}

func TestStoreConnectTimeout(t *testing.T) {
	cases := []struct {
		value   string
		want    time.Duration
		wantErr bool
	}{
		{"", 10 * time.Second, false},
		{"3s", 3 * time.Second, false},
		{"1m30s", 90 * time.Second, false},
		{"0s", 0, true},
		{"-1s", 0, true},
		{"10", 0, true},
	}
	for _, c := range cases {
		cfg, err := Load(envOf(map[string]string{"STORE_CONNECT_TIMEOUT": c.value}), t.TempDir(), false)
		switch {
		case c.wantErr && (err == nil || !strings.Contains(err.Error(), "STORE_CONNECT_TIMEOUT")):
			t.Errorf("STORE_CONNECT_TIMEOUT=%q: got error %v, want one naming the variable", c.value, err)
		case !c.wantErr && err != nil:
			t.Errorf("STORE_CONNECT_TIMEOUT=%q: %v", c.value, err)
		case !c.wantErr && cfg.ConnectTimeout != c.want:
			t.Errorf("STORE_CONNECT_TIMEOUT=%q: got %s, want %s", c.value, cfg.ConnectTimeout, c.want)
		}
	}
}
