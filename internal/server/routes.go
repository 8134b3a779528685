package server

import "net/http"

// routes lists every endpoint on one screen.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	handle := func(pattern string, h http.Handler) { mux.Handle(pattern, s.observe(h)) }

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
	handle("/", s.public(notFound))
	return mux
}

func notFound(w http.ResponseWriter, r *http.Request) error {
	return errorf(http.StatusNotFound, "not_found", "no endpoint %s %s: see the README's API reference", r.Method, r.URL.Path)
}
