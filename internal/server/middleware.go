package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
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
)

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// logNote adds an attribute to the request's access log line.
func logNote(ctx context.Context, a slog.Attr) {
	if attrs, ok := ctx.Value(logAttrsKey).(*[]slog.Attr); ok {
		*attrs = append(*attrs, a)
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

// observe gives every request an ID (the client's X-Request-ID when it is
// sane) and logs one line when it ends.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = strings.ToLower(rand.Text())
		}
		w.Header().Set("X-Request-ID", id)
		var attrs []slog.Attr
		ctx := context.WithValue(context.WithValue(r.Context(), requestIDKey, id), logAttrsKey, &attrs)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(ctx))
		if !s.log.Enabled(ctx, slog.LevelInfo) {
			return
		}
		attrs = append(attrs,
			slog.String("request_id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Int64("bytes", sw.bytes), slog.Duration("duration", time.Since(start)))
		s.log.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
	})
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
// token's length leaks).
func (s *Server) requireAdmin(h handler) handler {
	want := sha256.Sum256([]byte(s.opts.AdminToken))
	return func(w http.ResponseWriter, r *http.Request) error {
		if s.opts.AdminToken == "" {
			return errorf(http.StatusForbidden, "admin_disabled",
				"admin endpoints are disabled: set ADMIN_TOKEN (e.g. ADMIN_TOKEN=$(openssl rand -hex 32)) and restart felix")
		}
		token, ok := bearer(r)
		got := sha256.Sum256([]byte(token))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
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
