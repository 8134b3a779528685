package server

import (
	"net/http"
	"slices"
	"strings"
)

// route is one endpoint: its ServeMux pattern, whether it needs the admin
// token, and what serves it.
type route struct {
	pattern string       // "METHOD /path", as ServeMux takes it
	admin   bool         // needs Authorization: Bearer <ADMIN_TOKEN>
	api     handler      // a JSON endpoint, or
	page    http.Handler // a page, an asset or a document, served as is
}

// routeTable lists every endpoint on one screen.
func (s *Server) routeTable() []route {
	routes := []route{
		{pattern: generateRoute, api: s.generate},
		{pattern: "GET /api/apikey", api: s.getKey},
		{pattern: "POST /api/apikey", admin: true, api: s.createKey},
		{pattern: "PUT /api/apikey", admin: true, api: s.setRemaining},
		{pattern: "GET /api/stats", admin: true, api: s.siteStats},
		{pattern: "GET /api/targets", admin: true, api: s.targets},

		{pattern: "POST /api/keys", admin: true, api: s.createKeyByID},
		{pattern: "GET /api/keys", admin: true, api: s.listKeys},
		{pattern: "GET /api/keys/{id}", admin: true, api: s.getKeyByID},
		{pattern: "PATCH /api/keys/{id}", admin: true, api: s.patchKey},
		{pattern: "DELETE /api/keys/{id}", admin: true, api: s.deleteKey},
		{pattern: "POST /api/keys/{id}/topup", admin: true, api: s.topUp},
		{pattern: "GET /api/keys/{id}/events", admin: true, api: s.keyEvents},
		{pattern: "GET /api/keys/{id}/daily", admin: true, api: s.keyDaily},
		{pattern: "GET /api/usage", admin: true, api: s.usage},
		{pattern: "GET /api/usage.csv", admin: true, api: s.usageCSV},

		{pattern: "GET /healthz", api: s.healthz},
		{pattern: "GET /readyz", api: s.readyz},
		{pattern: "GET /openapi.json", page: openAPIHandler()},
	}
	if s.opts.Metrics != nil {
		routes = append(routes, route{pattern: "GET /metrics", admin: true, page: s.opts.Metrics})
	}
	if s.opts.Pages != nil {
		// The pages are shells: the data they show comes from the admin
		// API above, with the token the operator entered.
		routes = append(routes,
			route{pattern: "GET /{$}", page: s.opts.Pages}, // redirects to /admin
			route{pattern: "GET /admin", page: s.opts.Pages},
			route{pattern: "GET /admin/keys", page: s.opts.Pages},
			route{pattern: "GET /admin/keys/{id}", page: s.opts.Pages},
			route{pattern: "GET /admin/usage", page: s.opts.Pages},
			route{pattern: "GET /test", page: s.opts.Pages},
			route{pattern: "GET /static/", page: s.opts.Pages},
		)
	}
	return routes
}

// Routes returns the pattern of every route, in table order.
func (s *Server) Routes() []string {
	var patterns []string
	for _, r := range s.routeTable() {
		patterns = append(patterns, r.pattern)
	}
	return patterns
}

// routes builds the mux from the table. Every request is observed (request
// ID, one log line), and one that no route takes gets a 404, or a 405 with
// Allow when its path exists under other methods.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, r := range s.routeTable() {
		h := r.page
		switch {
		case r.admin && r.api != nil:
			h = s.adapt(s.requireAdmin(r.api))
		case r.admin:
			h = s.adapt(s.requireAdmin(serve(r.page)))
		case r.api != nil:
			h = s.adapt(r.api)
		}
		mux.Handle(r.pattern, s.observe(r.pattern, h))
	}
	// The catch-all matches every method, so ServeMux's own 405 never
	// happens: noRoute asks the mux which methods the path has.
	mux.Handle("/", s.observe(unmatched, s.adapt(func(w http.ResponseWriter, r *http.Request) error { return noRoute(mux, r) })))
	return mux
}

// serve turns an http.Handler into a handler, to put it behind requireAdmin.
func serve(h http.Handler) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	}
}

// methods are those a route of Felix may have.
var methods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// noRoute answers a request no route took: 405 with Allow when the mux has
// routes for its path under other methods, 404 otherwise.
func noRoute(mux *http.ServeMux, r *http.Request) error {
	var allowed []string
	for _, m := range methods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if slices.Contains(allowed, http.MethodGet) {
		allowed = append(allowed, http.MethodHead) // ServeMux answers HEAD for GET routes
	}
	if len(allowed) == 0 {
		return errorf(http.StatusNotFound, "not_found", "no endpoint %s %s: see the API reference (docs/api.md)", r.Method, r.URL.Path)
	}
	return errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(allowed, " or ")).
		with("Allow", strings.Join(allowed, ", "))
}
