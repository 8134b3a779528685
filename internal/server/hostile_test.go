//go:build !fuzzing

package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/syncbuf"
)

// SPEC §5 "Framing and headers", tried the way an attacker would: raw
// bytes on a socket against a real Felix server.

const prompt = `{"prompt":"a cat"}` // 18 bytes, 0x12

// rawClient is one connection to Felix that sends bytes no well-behaved
// HTTP client would.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func (f *felix) dial(t *testing.T) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("sending: %v", err)
	}
}

// answer reads one whole response.
func (c *rawClient) answer() response {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.t.Fatalf("reading Felix's answer: %v", err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header}
	r.body, _ = io.ReadAll(resp.Body)
	json.Unmarshal(r.body, &r.json)
	return r
}

// wantClosed waits for Felix to close the connection, and fails if it
// sends anything more or keeps it open for 10 s.
func (c *rawClient) wantClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	more, err := c.br.ReadString(0)
	var netErr net.Error
	switch {
	case more != "":
		c.t.Errorf("Felix sent more after its answer, so the connection was not closed: %q", more)
	case errors.As(err, &netErr) && netErr.Timeout():
		c.t.Error("the connection is still open 10 s after the answer; want it closed")
	}
}

// post is the head of a generate request with key; fields end with CRLF.
func post(proto, key string, fields ...string) string {
	return "POST /api/generate " + proto + "\r\nHost: felix\r\nAuthorization: Bearer " + key + "\r\n" + strings.Join(fields, "") + "\r\n"
}

// TestFramingRefused: a request framed two ways, or with broken chunks,
// is answered 400 and its connection closed; nothing reaches the target
// (not even the request smuggled behind it) and no counter moves.
func TestFramingRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		key := f.createKey(5)
		chunked := "12\r\n" + prompt + "\r\n0\r\n\r\n"
		smuggled := post("HTTP/1.1", key, "Content-Length: 18\r\n") + prompt
		for _, tc := range []struct{ name, request, mention string }{
			{"CL then TE", post("HTTP/1.1", key, "Content-Length: 4\r\n", "Transfer-Encoding: chunked\r\n") + chunked + smuggled, "both"},
			{"TE then CL", post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n", "Content-Length: 4\r\n") + chunked + smuggled, "both"},
			{"other case", post("HTTP/1.1", key, "content-length: 4\r\n", "TRANSFER-ENCODING: CHUNKED\r\n") + chunked + smuggled, "both"},
			{"HTTP/1.0 keep-alive, TE and CL", post("HTTP/1.0", key, "Connection: keep-alive\r\n", "Transfer-Encoding: chunked\r\n", "Content-Length: 18\r\n") + prompt + smuggled, "both"},
			{"HTTP/1.0 keep-alive, TE", post("HTTP/1.0", key, "Connection: keep-alive\r\n", "Transfer-Encoding: chunked\r\n") + chunked, "HTTP/1.0"},
			{"chunk size too large", post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n") + "ffffffffffffffffff1\r\n" + prompt + "\r\n0\r\n\r\n" + smuggled, "chunked"},
			{"negative chunk size", post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n") + "-1\r\n" + prompt + "\r\n0\r\n\r\n" + smuggled, "chunked"},
			{"hex prefix", post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n") + "0x12\r\n" + prompt + "\r\n0\r\n\r\n" + smuggled, "chunked"},
			{"data longer than its size", post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n") + "5\r\n" + prompt + "\r\n0\r\n\r\n" + smuggled, "chunked"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := f.dial(t)
				c.send(tc.request)
				r := c.answer()
				f.wantError(r, http.StatusBadRequest, "invalid_request")
				if msg, _ := r.json["error"].(string); !strings.Contains(msg, tc.mention) {
					t.Errorf("error %q does not mention %q", msg, tc.mention)
				}
				c.wantClosed()
			})
		}
		if n := f.target.calls.Load(); n != 0 {
			t.Errorf("target called %d times by refused requests", n)
		}
		f.wantCounts(key, counts{remaining: 5})
	})
}

// TestFramingKeepAlive: well-framed requests, chunked or not, keep
// sharing one connection and are all served.
func TestFramingKeepAlive(t *testing.T) {
	f := newFelix(t, storetest.URL(t, "sqlite"))
	key := f.createKey(5)
	c := f.dial(t)
	for i, request := range []string{
		post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n") + "5;ext=1\r\n" + prompt[:5] + "\r\nd\r\n" + prompt[5:] + "\r\n0\r\nX-Trailer: 1\r\n\r\n",
		post("HTTP/1.1", key, "Content-Length: 18\r\n") + prompt,
		post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n") + "12\r\n" + prompt + "\r\n0\r\n\r\n",
	} {
		c.send(request)
		if r := c.answer(); r.status != http.StatusOK {
			t.Fatalf("request %d on the connection: got %d %s, want 200", i, r.status, r.body)
		}
	}
	f.wantCounts(key, counts{total: 3, successful: 3, remaining: 2})
}

// logged is a Felix whose log lines are kept.
func logged(logs *syncbuf.Buffer) func(*server.Options) {
	return func(o *server.Options) {
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// accessLines returns the access log lines of one request ID.
func accessLines(logs *syncbuf.Buffer, id string) []map[string]any {
	var lines []map[string]any
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "request" && m["request_id"] == id {
			lines = append(lines, m)
		}
	}
	return lines
}

// accessLine waits for the access log line of a request ID (it is
// written when the request ends) and checks it is the only one.
func accessLine(t *testing.T, logs *syncbuf.Buffer, id string) map[string]any {
	t.Helper()
	var lines []map[string]any
	waitFor(t, func() bool { lines = accessLines(logs, id); return len(lines) > 0 })
	if len(lines) != 1 {
		t.Errorf("request %s: got %d access log lines, want exactly 1", id, len(lines))
	}
	return lines[0]
}

func wantNoErrorLogs(t *testing.T, logs *syncbuf.Buffer) {
	t.Helper()
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("a client's doing was logged as a server error:\n%s", logs.String())
	}
}

// TestSlowOrVanishingBody: a body that stops arriving gets 408 when the
// server's ReadTimeout ends (and the connection closed), a client that
// hangs up mid-body is logged as gone; neither is a 5xx or an ERROR, and
// no counter moves.
func TestSlowOrVanishingBody(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		var logs syncbuf.Buffer
		f := newFelixServer(t, db, newTarget(t), func(hs *http.Server) { hs.ReadTimeout = time.Second }, logged(&logs))
		_, key, err := f.quota.CreateKey(context.Background(), quota.KeySpec{Remaining: 5}) // not over HTTP: the server's timeout is short
		if err != nil {
			t.Fatal(err)
		}
		slow := f.dial(t)
		slow.send(post("HTTP/1.1", key, "Content-Length: 100\r\n", "X-Request-ID: slow-1\r\n") + `{"prompt":`)
		f.wantError(slow.answer(), http.StatusRequestTimeout, "request_timeout")
		slow.wantClosed()
		if got := accessLine(t, &logs, "slow-1"); got["status"] != 408.0 || got["outcome"] != "request_timeout" {
			t.Errorf("log of the slow body: got %v, want status 408, outcome request_timeout", got)
		}

		g := newFelixOn(t, db, f.target, logged(&logs)) // the default ReadTimeout: the hang-up comes first
		_, key2, err := g.quota.CreateKey(context.Background(), quota.KeySpec{Remaining: 5})
		if err != nil {
			t.Fatal(err)
		}
		gone := g.dial(t)
		gone.send(post("HTTP/1.1", key2, "Content-Length: 100\r\n", "X-Request-ID: gone-1\r\n") + `{"prompt":`)
		gone.conn.Close()
		if got := accessLine(t, &logs, "gone-1"); got["outcome"] != "client_gone" || got["level"] != "INFO" {
			t.Errorf("log of the vanished client: got %v, want outcome client_gone at INFO", got)
		}

		wantNoErrorLogs(t, &logs)
		if n := f.target.calls.Load(); n != 0 {
			t.Errorf("target called %d times", n)
		}
		f.wantCounts(key, counts{remaining: 5})
		g.wantCounts(key2, counts{remaining: 5})
	})
}

// reserveBlocks is a store whose Reserve waits until its caller gives up,
// then fails as a store does.
type reserveBlocks struct {
	store.Store
	started chan struct{}
}

func (s *reserveBlocks) Reserve(ctx context.Context, r quota.ReserveRequest) (quota.Admission, error) {
	close(s.started)
	<-ctx.Done()
	return quota.Admission{}, fmt.Errorf("store: reserve: %w", ctx.Err())
}

// TestClientGoneDuringReserve: a client that hangs up while its call is
// being reserved is logged as gone, not as a 500 with an ERROR line.
func TestClientGoneDuringReserve(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		var logs syncbuf.Buffer
		st := &reserveBlocks{Store: storetest.Open(t, db), started: make(chan struct{})}
		svc := quota.NewService(quota.Options{Ledger: st, Keys: st, Usage: st, Owner: "test"})
		_, key, err := svc.CreateKey(context.Background(), quota.KeySpec{Remaining: 5})
		if err != nil {
			t.Fatal(err)
		}
		tg := newTarget(t)
		u, _ := url.Parse(tg.URL)
		o := server.Options{Quota: svc, Target: u}
		logged(&logs)(&o)
		base := httptestServer(t, server.New(o))

		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/generate", strings.NewReader(prompt))
		req.Header.Set("X-API-Key", key)
		req.Header.Set("X-Request-ID", "left-1")
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		<-st.started
		cancel()
		<-done
		if got := accessLine(t, &logs, "left-1"); got["outcome"] != "client_gone" || got["status"] != 499.0 {
			t.Errorf("log of the call whose client left: got %v, want outcome client_gone, status 499", got)
		}
		wantNoErrorLogs(t, &logs)
		if n := tg.calls.Load(); n != 0 {
			t.Errorf("target called %d times", n)
		}
	})
}

// TestUpgradeNeverForwarded: a client's Upgrade (websocket, h2c) is not
// passed to the target and the call is an ordinary one; a target that
// answers 101 anyway is a failed call (502, released, not charged), and
// nothing the client sends afterwards reaches it.
func TestUpgradeNeverForwarded(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		key := f.createKey(10)
		for _, upgrade := range []string{
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
			"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
			"Connection: upgrade\r\nUpgrade: caf\xc3\xa9\r\n", // not printable ASCII: httputil.ReverseProxy would fail the call
		} {
			c := f.dial(t)
			c.send(post("HTTP/1.1", key, upgrade, "Content-Length: 18\r\n") + prompt)
			if r := c.answer(); r.status != http.StatusOK {
				t.Fatalf("generate asking for an upgrade: got %d %s, want an ordinary 200", r.status, r.body)
			}
			req, _ := f.target.lastRequest()
			for _, name := range []string{"Upgrade", "Connection", "Http2-Settings"} {
				if v := req.Header.Get(name); v != "" {
					t.Errorf("the target got %s: %q", name, v)
				}
			}
			c.send(post("HTTP/1.1", key, "Content-Length: 18\r\n") + prompt) // still HTTP on this connection
			if r := c.answer(); r.status != http.StatusOK {
				t.Errorf("the next request on the connection: got %d %s", r.status, r.body)
			}
		}
		f.wantCounts(key, counts{total: 6, successful: 6, remaining: 4})

		afterSwitch := make(chan string, 1)
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, _ := io.ReadAll(brw) // until Felix closes the connection
			afterSwitch <- string(got)
		})
		c := f.dial(t)
		c.send(post("HTTP/1.1", key, "Connection: Upgrade\r\nUpgrade: websocket\r\n", "Content-Length: 18\r\n") + prompt)
		f.wantError(c.answer(), http.StatusBadGateway, "upstream_unreachable")
		c.send("through the tunnel?\r\n\r\n")
		if got := <-afterSwitch; got != "" {
			t.Errorf("the target received %q after its 101", got)
		}
		f.wantCounts(key, counts{total: 7, successful: 6, remaining: 4})
	})
}

func gzipped(s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	io.WriteString(zw, s)
	zw.Close()
	return b.String()
}

// TestForwardedBody: the target always gets Felix's own re-encoding with
// Content-Length, whatever the client's framing and encoding; bodies
// Felix cannot check exactly are refused and move no counter.
func TestForwardedBody(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		key := f.createKey(10)
		auth := []string{"Authorization", "Bearer " + key}
		wantForwarded := func(body string) {
			t.Helper()
			req, got := f.target.lastRequest()
			if string(got) != body || req.ContentLength != int64(len(body)) || len(req.TransferEncoding) != 0 || req.Header.Get("Content-Encoding") != "" {
				t.Errorf("the target got %q, Content-Length %d, Transfer-Encoding %q, Content-Encoding %q; want %q with its length alone",
					got, req.ContentLength, req.TransferEncoding, req.Header.Get("Content-Encoding"), body)
			}
		}

		c := f.dial(t)
		c.send(post("HTTP/1.1", key, "Transfer-Encoding: chunked\r\n") + "3\r\n{ \"\r\n13\r\nprompt\" : \"a cat\" }\r\n0\r\n\r\n")
		if r := c.answer(); r.status != http.StatusOK {
			t.Fatalf("chunked body: got %d %s", r.status, r.body)
		}
		wantForwarded(prompt)

		if r := f.do("POST", "/api/generate", gzipped(`{"prompt": "a gzip cat"}`), append(auth, "Content-Encoding", "gzip")...); r.status != http.StatusOK {
			t.Fatalf("gzip body: got %d %s", r.status, r.body)
		}
		wantForwarded(`{"prompt":"a gzip cat"}`)

		if r := f.do("POST", "/api/generate", `{"prompt":"\ud83d\ude00"}`, auth...); r.status != http.StatusOK {
			t.Fatalf("a surrogate pair: got %d %s", r.status, r.body)
		}
		wantForwarded(`{"prompt":"\ud83d\ude00"}`)

		bomb := gzipped(`{"prompt":"` + strings.Repeat("a", 2<<20) + `"}`) // 2 MiB from 2 KiB
		for _, tc := range []struct {
			name, body, encoding string
			status               int
			code, mention        string
		}{
			{"brotli", prompt, "br", 415, "unsupported_encoding", "br"},
			{"two encodings", gzipped(gzipped(prompt)), "gzip, gzip", 415, "unsupported_encoding", "gzip, gzip"},
			{"deflate", prompt, "deflate", 415, "unsupported_encoding", "deflate"},
			{"gzip bomb", bomb, "gzip", 413, "body_too_large", "decompressed"},
			{"not gzip", prompt, "gzip", 400, "invalid_request", "gzip"},
			{"truncated gzip", gzipped(prompt)[:20], "gzip", 400, "invalid_request", "gzip"},
			{"invalid UTF-8 in the prompt", `{"prompt":"a ` + "\xff" + ` cat"}`, "", 400, "invalid_request", "UTF-8"},
			{"invalid UTF-8 in an unknown field", `{"prompt":"a cat","extra":"` + "\xc3" + `"}`, "", 400, "invalid_request", "UTF-8"},
			{"invalid UTF-8 in a name", `{"prompt":"a cat","` + "\xfe" + `":1}`, "", 400, "invalid_request", "UTF-8"},
			{"lone high surrogate", `{"prompt":"a \ud800 cat"}`, "", 400, "invalid_request", "surrogate"},
			{"lone low surrogate", `{"prompt":"a cat","x":["\udc00"]}`, "", 400, "invalid_request", "surrogate"},
			{"pair in the wrong order", `{"prompt":"\ude00\ud83d"}`, "", 400, "invalid_request", "surrogate"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				headers := auth
				if tc.encoding != "" {
					headers = append(headers[:2:2], "Content-Encoding", tc.encoding)
				}
				r := f.do("POST", "/api/generate", tc.body, headers...)
				f.wantError(r, tc.status, tc.code)
				if msg, _ := r.json["error"].(string); !strings.Contains(msg, tc.mention) {
					t.Errorf("error %q does not mention %q", msg, tc.mention)
				}
				if tc.status == http.StatusUnsupportedMediaType && r.header.Get("Accept-Encoding") != "gzip" {
					t.Errorf("415 without Accept-Encoding: gzip: %v", r.header)
				}
			})
		}
		if n := f.target.calls.Load(); n != 3 {
			t.Errorf("target calls: got %d, want 3 (refused bodies must not reach it)", n)
		}
		f.wantCounts(key, counts{total: 3, successful: 3, remaining: 7})
	})
}

// TestHeaderHygiene: the target gets none of the client's hop-by-hop or
// forwarding fields, only Felix's X-Forwarded-For; the client gets none
// of the target's hop-by-hop fields (also those its Connection names),
// cookies or interim 1xx answers. When the target closes its connection
// Go's client hides what else its Connection field named, so then only
// the fields describing the answer pass.
func TestHeaderHygiene(t *testing.T) {
	f := newFelix(t, storetest.URL(t, "sqlite"))
	key := f.createKey(5)
	for _, tc := range []struct {
		name, answer string
		want         http.Header // what the client gets besides Date
	}{
		{"target keeps its connection", "HTTP/1.1 200 OK\r\nConnection: X-Internal-Hop, Keep-Alive\r\nKeep-Alive: timeout=5\r\n" +
			"X-Internal-Hop: gpu-7\r\nSet-Cookie: session=target\r\nAlt-Svc: h3=\":443\"\r\nX-Request-ID: the-targets-own\r\n" +
			"X-Seed: 42\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
			http.Header{"Content-Type": {"application/json"}, "Content-Length": {"2"}, "X-Seed": {"42"}, "X-Request-Id": {"hygiene-1"}}},
		{"target closes its connection", "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nSet-Cookie: early=1\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nConnection: close, X-Internal-Hop\r\nX-Internal-Hop: gpu-7\r\nSet-Cookie: session=target\r\n" +
			"Server: internal-sd/1.2\r\nX-Seed: 42\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\n{}",
			http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}, "Content-Length": {"2"}, "X-Request-Id": {"hygiene-1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				io.WriteString(conn, tc.answer)
			})
			c := f.dial(t)
			c.send(post("HTTP/1.1", key,
				"X-Forwarded-For: 6.6.6.6\r\n", "X-Forwarded-Host: evil.example\r\n", "X-Forwarded-Proto: https\r\n",
				"X-Forwarded-Port: 443\r\n", "X-Forwarded-Prefix: /admin\r\n", "Forwarded: for=6.6.6.6;proto=https\r\n", "X-Real-IP: 6.6.6.6\r\n",
				"Connection: X-Client-Hop\r\n", "X-Client-Hop: 1\r\n", "Keep-Alive: timeout=5\r\n", "Cookie: c=1\r\n",
				"X-Request-ID: hygiene-1\r\n", "Accept: application/json\r\n", "Content-Length: 18\r\n") + prompt)
			r := c.answer()
			if r.status != http.StatusOK || string(r.body) != "{}" {
				t.Fatalf("got %d %q first, want the target's 200 {} (no interim answer)", r.status, r.body)
			}
			for name := range r.header {
				if name != "Date" && tc.want.Get(name) == "" {
					t.Errorf("the client got %s: %q", name, r.header.Values(name))
				}
			}
			for name, values := range tc.want {
				if got := r.header.Values(name); fmt.Sprint(got) != fmt.Sprint(values) {
					t.Errorf("the client got %s %q, want %q", name, got, values)
				}
			}

			req, _ := f.target.lastRequest()
			if got := req.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
				t.Errorf("the target got X-Forwarded-For %q, want Felix's own 127.0.0.1", got)
			}
			for name := range req.Header {
				if name != "X-Forwarded-For" && (strings.HasPrefix(name, "X-Forwarded-") || name == "Forwarded" || name == "X-Real-Ip" ||
					name == "X-Client-Hop" || name == "Keep-Alive" || name == "Cookie" || name == "Connection") {
					t.Errorf("the target got the client's %s: %q", name, req.Header.Values(name))
				}
			}
			if req.Header.Get("Accept") != "application/json" {
				t.Errorf("an end-to-end field was lost: Accept %q", req.Header.Get("Accept"))
			}
		})
	}
}

// TestAdminBruteForce: after 10 wrong admin tokens within a minute an
// address gets 429 with Retry-After, whatever token it sends; another
// address with the right token is not affected, and the first one is let
// in again a minute after its first failure.
func TestAdminBruteForce(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	f := newFelix(t, storetest.URL(t, "sqlite"), func(o *server.Options) { o.Now = func() time.Time { return now } })
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	stats := func(client *http.Client, token string) response {
		t.Helper()
		req, _ := http.NewRequest("GET", f.url+"/api/stats", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := response{status: resp.StatusCode, header: resp.Header}
		r.body, _ = io.ReadAll(resp.Body)
		json.Unmarshal(r.body, &r.json)
		return r
	}
	attacker, operator := from("127.0.0.1"), from("127.0.0.2")

	if r := stats(attacker, ""); r.status != http.StatusUnauthorized {
		t.Fatalf("no token: got %d, want 401", r.status)
	}
	for i := range 10 {
		now = now.Add(time.Second)
		if r := stats(attacker, fmt.Sprintf("guess-%d", i)); r.status != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: got %d %s, want 401", i+1, r.status, r.body)
		}
	}
	for _, token := range []string{"guess-10", adminToken} {
		r := stats(attacker, token)
		f.wantError(r, http.StatusTooManyRequests, "too_many_attempts")
		if got := r.header.Get("Retry-After"); got != "51" { // the first failure was at +1 s, now is +10 s
			t.Errorf("Retry-After: got %q, want 51", got)
		}
	}
	if r := stats(operator, adminToken); r.status != http.StatusOK {
		t.Errorf("the right token from another address: got %d %s, want 200", r.status, r.body)
	}
	now = now.Add(51 * time.Second)
	if r := stats(attacker, adminToken); r.status != http.StatusOK {
		t.Errorf("the right token a minute after the first failure: got %d %s, want 200", r.status, r.body)
	}
}

// TestAnswerStreamEnds: every way an answer stream can end early gets
// exactly one access log line naming it, and the call stays charged (it
// was settled at the 2xx status line). A target that goes silent is cut
// after TARGET_IDLE_TIMEOUT, and so is a client that stops reading.
func TestAnswerStreamEnds(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		for _, tc := range []struct {
			name, outcome string
			idle          time.Duration // TARGET_IDLE_TIMEOUT: short only where it is what ends the stream
			handler       http.HandlerFunc
			clientReads   bool
		}{
			{"target closes before its Content-Length", "target_cut", time.Minute, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1000")
				io.WriteString(w, "partial")
				http.NewResponseController(w).Flush()
				conn, _, _ := http.NewResponseController(w).Hijack()
				conn.Close()
			}, true},
			{"target goes silent", "target_idle_timeout", 200 * time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "{")
				http.NewResponseController(w).Flush()
				select { // until Felix gives up on it
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
					t.Error("Felix never cut the silent target")
				}
			}, true},
			{"client stops reading", "client_gone", 200 * time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
				chunk := make([]byte, 64<<10)
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
				t.Error("Felix never cut the client that stopped reading")
			}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var logs syncbuf.Buffer
				f := newFelix(t, db, logged(&logs), func(o *server.Options) { o.TargetIdleTimeout = tc.idle })
				f.target.setHandler(tc.handler)
				key := f.createKey(10)
				c := f.dial(t)
				c.send(post("HTTP/1.1", key, "X-Request-ID: cut-1\r\n", "Content-Length: 18\r\n") + prompt)
				c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(c.br, nil)
				if err == nil && tc.clientReads {
					_, err = io.ReadAll(resp.Body)
				}
				if err == nil && tc.clientReads {
					t.Error("the client read a complete answer from a cut stream")
				}
				got := accessLine(t, &logs, "cut-1")
				if got["outcome"] != tc.outcome || got["status"] != 200.0 {
					t.Errorf("log line: got %v, want status 200, outcome %s", got, tc.outcome)
				}
				wantNoErrorLogs(t, &logs)
				f.wantCounts(key, counts{total: 1, successful: 1, remaining: 9})
			})
		}
	})
}
