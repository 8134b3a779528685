package server

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// What crosses between a client and the target, besides the bodies.

// clientOnlyHeaders are request fields about the client's connection to
// Felix, its credentials or its framing, none of which the target gets.
var clientOnlyHeaders = []string{
	"Authorization", "X-Api-Key", "Cookie", "Proxy-Authorization", // credentials
	"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade", "Http2-Settings", // hop by hop
	"Content-Length", "Content-Encoding", "Transfer-Encoding", "Expect", // Felix frames its own body
	"Forwarded", "X-Real-Ip", // claims about the client: Felix sets X-Forwarded-For itself
}

// stripClientHeaders removes from a client's request fields those the
// target must not get: clientOnlyHeaders, those the client's Connection
// names, and every X-Forwarded-*. Without Connection and Upgrade, the proxy
// never sees an upgrade to pass on.
func stripClientHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" && http.CanonicalHeaderKey(name) != "Connection" {
				h.Del(name)
			}
		}
	}
	for _, name := range clientOnlyHeaders {
		h.Del(name)
	}
	for name := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(name), "X-Forwarded-") {
			delete(h, name)
		}
	}
}

// targetOnlyHeaders are response fields of the target that its client
// never gets, besides the hop-by-hop ones (and those the target's
// Connection names) that httputil.ReverseProxy removes: its cookies,
// its alternative services and its request ID (the client has Felix's).
var targetOnlyHeaders = []string{"Set-Cookie", "Set-Cookie2", "Alt-Svc", "X-Request-Id"}

// answerHeaders are the fields that describe an answer itself.
var answerHeaders = []string{
	"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
	"Content-Type", "Etag", "Expires", "Last-Modified", "Retry-After", "Vary",
}

// stripTargetHeaders removes the target's fields that its client must not
// get. Go's HTTP client drops a "Connection: close, …" field before Felix
// sees the answer, and with it the names of the other hop-by-hop fields it
// listed; so when the target closed its connection only answerHeaders
// pass.
func stripTargetHeaders(resp *http.Response) {
	h := resp.Header
	if resp.Close && h["Connection"] == nil && resp.ProtoAtLeast(1, 1) {
		for name := range h {
			if !slices.Contains(answerHeaders, http.CanonicalHeaderKey(name)) {
				delete(h, name)
			}
		}
		return
	}
	for _, name := range targetOnlyHeaders {
		h.Del(name)
	}
}

// answerWriter is what the proxy writes a target's answer through. It
// keeps the proxy's header writes to itself until the final status, so
// that a target's interim 1xx answer (and its fields) is not passed on
// and cannot wipe Felix's own fields, and it gives every write to the
// client at most idle: a client that stops reading is cut off.
type answerWriter struct {
	http.ResponseWriter
	header http.Header
	wrote  bool
	idle   time.Duration
	err    error // the first failed write: the client left or stopped reading
}

func (w *answerWriter) Header() http.Header { return w.header }

func (w *answerWriter) WriteHeader(code int) {
	if code < 200 || w.wrote {
		return
	}
	w.wrote = true
	h := w.ResponseWriter.Header()
	for name, values := range w.header {
		h[name] = values
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.idle > 0 {
		http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.idle))
	}
	n, err := w.ResponseWriter.Write(p)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

func (w *answerWriter) Flush() {
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// idleBody is a target's answer body that is cut (by cancelling the
// outbound request) when the target sends nothing for idle while Felix
// waits for its next bytes. Time spent waiting for the client to take
// the bytes does not count.
type idleBody struct {
	io.ReadCloser
	idle  time.Duration
	timer *time.Timer
	idled atomic.Bool
	err   error // the first read error other than EOF
}

func newIdleBody(rc io.ReadCloser, idle time.Duration, cut func()) *idleBody {
	b := &idleBody{ReadCloser: rc, idle: idle}
	b.timer = time.AfterFunc(time.Hour, func() {
		b.idled.Store(true)
		cut()
	})
	b.timer.Stop()
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.ReadCloser.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	return b.ReadCloser.Close()
}
