package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// handler is an HTTP handler that returns its error; adapt turns it into
// an http.Handler that writes the error JSON.
type handler func(w http.ResponseWriter, r *http.Request) error

type ctxKey int

const (
	requestIDKey ctxKey = iota
	logAttrsKey
	callKey
	framingKey
	refusedKey // why a request was refused before routing
)

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// requestLog is what a request's access log line says beyond the basics.
type requestLog struct {
	attrs   []slog.Attr
	outcome string // how the request ended; the latest word counts
}

// logNote adds an attribute to the request's access log line.
func logNote(ctx context.Context, a slog.Attr) {
	if l, ok := ctx.Value(logAttrsKey).(*requestLog); ok {
		l.attrs = append(l.attrs, a)
	}
}

// setOutcome names how the request ended, for its access log line and
// the metrics: an error code, "success", "target_error", "client_gone", …
// (Outcomes lists those of POST /api/generate).
func setOutcome(ctx context.Context, outcome string) {
	if l, ok := ctx.Value(logAttrsKey).(*requestLog); ok {
		l.outcome = outcome
	}
}

// validRequestID accepts a client's X-Request-ID of 1..128 safe characters.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:", c) >= 0) {
			return false
		}
	}
	return true
}

// statusWriter records the status and size of a response for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe gives every request of route (a pattern of the route table) an
// ID (the client's X-Request-ID when it is sane) and, when it ends, one
// observation for the metrics and one log line, also when it ends by a
// panic (a proxied answer cut mid-stream aborts the handler with
// http.ErrAbortHandler).
func (s *Server) observe(route string, next http.Handler) http.Handler {
	record := s.obs.Route(route) // the route's series, resolved once
	generate := route == generateRoute
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = strings.ToLower(rand.Text())
		}
		w.Header().Set("X-Request-ID", id)
		l := &requestLog{}
		ctx := context.WithValue(context.WithValue(r.Context(), requestIDKey, id), logAttrsKey, l)
		sw := &statusWriter{ResponseWriter: w}
		finished := false
		defer func() {
			status, outcome := ended(sw.status, l.outcome, finished)
			elapsed := time.Since(start)
			record(status, elapsed)
			if generate {
				s.obs.Generate(outcome)
			}
			if s.log.Enabled(ctx, slog.LevelInfo) {
				attrs := append(l.attrs,
					slog.String("request_id", id), slog.String("route", route), slog.String("method", r.Method), slog.String("path", r.URL.Path),
					slog.Int("status", status), slog.String("outcome", outcome), slog.Int64("bytes", sw.bytes), slog.Duration("duration", elapsed))
				s.log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
			}
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
		finished = true
	})
}

// ended is the status and outcome a request ended with: what the handler
// said, else what its status implies. A request the handler did not
// finish (it panicked) is "aborted"; one whose client left before any
// answer has status 499, as nginx logs it.
func ended(status int, outcome string, finished bool) (int, string) {
	switch {
	case status == 0 && outcome == "client_gone":
		status = 499 // nothing was sent: nginx's "client closed request"
	case status == 0 && finished:
		status = http.StatusOK // the server sends an empty 200
	}
	switch {
	case outcome != "":
	case !finished:
		outcome = "aborted"
	case status >= 400:
		outcome = "error"
	default:
		outcome = "ok"
	}
	return status, outcome
}

// adapt turns a handler into an http.Handler.
func (s *Server) adapt(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// requireAdmin guards an endpoint with ADMIN_TOKEN as a bearer token,
// compared in constant time (the hashes have equal length, so not even the
// token's length leaks). An address that sent too many wrong tokens is
// refused before its token is looked at (see attempts.go).
func (s *Server) requireAdmin(h handler) handler {
	want := sha256.Sum256([]byte(s.opts.AdminToken))
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.opts.AdminToken == "" {
			return errorf(http.StatusForbidden, "admin_disabled",
				"admin endpoints are disabled: set ADMIN_TOKEN (e.g. ADMIN_TOKEN=$(openssl rand -hex 32)) and restart felix")
		}
		if wait, blocked := s.attempts.blocked(r.RemoteAddr); blocked {
			return errorf(http.StatusTooManyRequests, "too_many_attempts",
				"too many wrong admin tokens from your address: wait %d seconds, then send the right ADMIN_TOKEN", seconds(wait)).
				with("Retry-After", strconv.Itoa(seconds(wait)))
		}
		token, ok := bearer(r)
		got := sha256.Sum256([]byte(token))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			if ok { // a guess; a request without a token guesses nothing
				s.attempts.fail(r.RemoteAddr)
			}
			return errorf(http.StatusUnauthorized, "admin_required", "this endpoint needs the admin token: send Authorization: Bearer <ADMIN_TOKEN>").
				with("WWW-Authenticate", `Bearer realm="felix admin"`)
		}
		return h(w, r)
	}
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return "", false
	}
	return strings.TrimSpace(h[7:]), true
}
