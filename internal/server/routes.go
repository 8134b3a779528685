package server

import (
	"net/http"
	"slices"
	"strings"
)

// routes lists every endpoint on one screen.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	allowed := map[string][]string{} // exact path → its methods, for 405s
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, s.observe(h))
		if method, path, ok := strings.Cut(pattern, " "); ok && !strings.HasSuffix(path, "/") {
			allowed[path] = append(allowed[path], method)
		}
	}

	handle("POST /api/generate", s.public(s.generate))
	handle("GET /api/apikey", s.public(s.getKey))
	handle("POST /api/apikey", s.admin(s.createKey))
	handle("PUT /api/apikey", s.admin(s.setRemaining))
	handle("GET /api/stats", s.admin(s.siteStats))

	handle("GET /healthz", s.public(s.healthz))
	handle("GET /readyz", s.public(s.readyz))
	if s.opts.Pages != nil {
		handle("GET /test", s.opts.Pages)
		handle("GET /static/", s.opts.Pages)
	}
	// The catch-all matches every method, so ServeMux's own 405 never
	// happens: noRoute tells a wrong method from an unknown path.
	handle("/", s.public(func(w http.ResponseWriter, r *http.Request) error { return noRoute(allowed, r) }))
	return mux
}

// noRoute answers a request no route took: 405 with Allow when its path
// exists under other methods, 404 otherwise.
func noRoute(allowed map[string][]string, r *http.Request) error {
	methods, ok := allowed[r.URL.Path]
	if !ok {
		return errorf(http.StatusNotFound, "not_found", "no endpoint %s %s: see the README's API reference", r.Method, r.URL.Path)
	}
	if slices.Contains(methods, http.MethodGet) {
		methods = append(methods[:len(methods):len(methods)], http.MethodHead) // ServeMux answers HEAD for GET routes
	}
	e := errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(methods, " or "))
	e.allow = strings.Join(methods, ", ")
	return e
}
