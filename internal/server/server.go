// Package server is Felix's HTTP layer: routes, the generate proxy, the
// admin API, error JSON and middleware. It talks to quota.Service only,
// never to a store.
package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/target"
)

// Options configure a Server.
type Options struct {
	Quota *quota.Service
	// Targets are the image APIs calls go to. When nil, Target (a base
	// URL, TargetPath appended) is the only one, with no cap and no queue.
	Targets    *target.Pool
	Target     *url.URL
	TargetPath string
	// TargetKey is sent to the target in TargetKeyHeader ("Bearer <key>"
	// when the header is Authorization).
	TargetKey       quota.Secret
	TargetKeyHeader string
	// TargetTimeout bounds the wait for the target's response headers.
	TargetTimeout time.Duration
	// TargetIdleTimeout bounds each wait for the next bytes of an answer
	// once its headers arrived, and each write of them to the client
	// (60s when zero).
	TargetIdleTimeout time.Duration
	// AdminToken guards the admin API; empty disables it.
	AdminToken quota.Secret
	Limits     Limits
	// Pages serves the embedded web pages (/, /admin…, /test, /static/…);
	// nil serves none.
	Pages http.Handler
	// Transport reaches the target; nil means one tuned for a single
	// busy backend.
	Transport http.RoundTripper
	Logger    *slog.Logger
	// Now is the clock that counts wrong admin tokens; nil means time.Now.
	Now func() time.Time
	// Observer records every request as it ends, for metrics; nil
	// records nothing.
	Observer Observer
	// Metrics serves GET /metrics behind the admin token; nil serves no
	// such route (404), e.g. when METRICS_ADDR serves the metrics on a
	// listener of their own.
	Metrics http.Handler
}

// Server handles Felix's HTTP API.
type Server struct {
	quota *quota.Service
	pool  *target.Pool // nil when no target is configured
	// targetAuth carries the target's key; nil without one
	targetAuth http.Header
	opts       Options
	proxy      *httputil.ReverseProxy
	log        *slog.Logger
	mux        *http.ServeMux
	attempts   *attempts // wrong admin tokens per address
	obs        Observer
	badFraming http.Handler // answers a request refused for its framing
	// targetTime records, per target, how long a call took to its status
	// line (see Observer.Target)
	targetTime map[*target.Target]func(time.Duration)
}

// New returns a Server. Zero limits get the defaults of the SPEC.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TargetPath == "" {
		o.TargetPath = "/api/generate"
	}
	if o.TargetKeyHeader == "" {
		o.TargetKeyHeader = "Authorization"
	}
	if o.TargetTimeout <= 0 {
		o.TargetTimeout = 120 * time.Second
	}
	if o.TargetIdleTimeout <= 0 {
		o.TargetIdleTimeout = 60 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Limits = o.Limits.withDefaults()
	if o.Transport == nil {
		o.Transport = NewTransport(o.TargetTimeout)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	s := &Server{
		quota: o.Quota, pool: o.Targets, opts: o, log: o.Logger, obs: o.Observer,
		targetAuth: TargetAuth(o.TargetKeyHeader, o.TargetKey), attempts: newAttempts(o.Now, maxTrackedAddrs),
	}
	if s.pool == nil && o.Target != nil {
		s.pool = target.New(target.Options{URLs: []*url.URL{o.Target}, Path: o.TargetPath, Logger: o.Logger})
	}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      failover{s},
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.proxyError,
		ErrorLog:       slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		BufferPool:     &bufferPool{},
	}
	if s.pool != nil {
		s.targetTime = make(map[*target.Target]func(time.Duration), len(s.pool.Targets()))
		for _, t := range s.pool.Targets() {
			s.targetTime[t] = s.obs.Target(t.String())
		}
	}
	s.mux = s.routes()
	s.badFraming = s.observe(badFraming, s.adapt(func(_ http.ResponseWriter, r *http.Request) error { return r.Context().Value(refusedKey).(error) }))
	return s
}

func (l Limits) withDefaults() Limits {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = 1 << 20
	}
	if l.MaxWidth <= 0 {
		l.MaxWidth = 2048
	}
	if l.MaxHeight <= 0 {
		l.MaxHeight = 2048
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = 150
	}
	if l.MaxBatchSize <= 0 {
		l.MaxBatchSize = 8
	}
	return l
}

// ServeHTTP serves the API. A request framed ambiguously on the wire is
// refused before anything else (see framing.go).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := checkFraming(r); err != nil {
		s.badFraming.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), refusedKey, err)))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// TargetAuth returns the header that carries key to a target: headerName:
// key, or Authorization: Bearer key; nil when key is empty.
func TargetAuth(headerName string, key quota.Secret) http.Header {
	if key == "" {
		return nil
	}
	if http.CanonicalHeaderKey(headerName) == "Authorization" {
		return http.Header{"Authorization": {"Bearer " + string(key)}}
	}
	return http.Header{http.CanonicalHeaderKey(headerName): {string(key)}}
}

// NewTransport returns the transport Felix uses to reach a target: enough
// idle connections for hundreds of concurrent calls, and a timeout awaiting
// the response headers (image generation happens before them).
func NewTransport(timeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		// Pass the target's encoding through untouched instead of
		// decompressing it in Felix.
		DisableCompression: true,
	}
}

// NewHTTPServer returns an http.Server for h with timeouts that cut off
// slow clients but let long generations and large images stream. Serve it
// on Listener(ln), so that every request's framing is checked.
func NewHTTPServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ConnContext:       framingContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// bufferPool recycles the proxy's 32 KiB copy buffers: without it every
// response allocates its own, which shows with thousands in flight.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if buf, ok := b.p.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
