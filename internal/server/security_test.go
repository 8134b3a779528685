//go:build !fuzzing

package server_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/syncbuf"
)

// TestSecretsStayOut: after a session that uses every secret (client keys
// in all three places, the admin token, the target key, successes and
// failures), no secret is in any log line, in any response, or stored in
// plaintext in any table.
func TestSecretsStayOut(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		var logs syncbuf.Buffer // written by concurrent handlers
		log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		f := newFelix(t, db, func(o *server.Options) { o.Logger = log })
		const custom = "custom-client-key-0123456789"
		var responses strings.Builder
		record := func(r response) { responses.Write(r.body); responses.WriteString(r.header.Get("WWW-Authenticate")) }

		// Creation answers show the full key once, by design: not recorded.
		f.do("POST", "/api/apikey", map[string]any{"apiKey": custom, "initialRemainingCalls": 2}, admin()...)
		generated := f.createKey(2)
		record(f.do("POST", "/api/generate", map[string]any{"apiKey": custom, "prompt": "x"}))
		record(f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, "X-API-Key", generated))
		record(f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, "Authorization", "Bearer "+generated))
		record(f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, "Authorization", "Bearer "+generated)) // 429
		record(f.do("GET", "/api/apikey?apiKey="+custom, nil))
		record(f.do("PUT", "/api/apikey", map[string]any{"apiKey": custom, "remainingCalls": 9}, admin()...))
		record(f.do("GET", "/api/stats", nil, "Authorization", "Bearer wrong-"+adminToken))
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) })
		record(f.do("POST", "/api/generate", map[string]any{"prompt": "x"}, "X-API-Key", custom))

		req, _ := f.target.lastRequest()
		if req.Header.Get("Authorization") != "Bearer target-secret" {
			t.Fatalf("the target key was not used: %q", req.Header.Get("Authorization"))
		}
		if !strings.Contains(logs.String(), quota.Mask(custom)) {
			t.Errorf("log lines do not name the key by its masked prefix %q", quota.Mask(custom))
		}
		stored := storetest.Dump(t, db)
		if !strings.Contains(stored, quota.HashKey(custom)) {
			t.Fatalf("the dump does not hold the key's hash; is it reading the right database?\n%s", stored)
		}
		for _, secret := range []string{custom, generated, adminToken, "target-secret"} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("a log line contains the secret %q", secret)
			}
			if strings.Contains(responses.String(), secret) {
				t.Errorf("a response contains the secret %q", secret)
			}
			if strings.Contains(stored, secret) {
				t.Errorf("the database stores %q in plaintext", secret)
			}
		}
	})
}

// TestServerCutsOffSlowAndHugeHeaders: a client that trickles its headers
// is disconnected by ReadHeaderTimeout, and headers over the limit are
// refused with 431.
func TestServerCutsOffSlowAndHugeHeaders(t *testing.T) {
	f := newFelix(t, storetest.URL(t, "sqlite"))
	hs := server.NewHTTPServer("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, f.url+r.URL.Path, http.StatusTemporaryRedirect)
	}), slog.New(slog.DiscardHandler))
	hs.ReadHeaderTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("the slow client was not disconnected within 5 s: %v", err)
	}

	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 128<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB of headers: got %d, want 431", resp.StatusCode)
	}
}
