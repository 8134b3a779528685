// Package web holds Felix's embedded pages: the admin dashboard (/admin)
// and the API test page (/test).
//
// The files under static/ are compiled into the binary: plain HTML, CSS and
// JavaScript with no build step and no external resources; the one library,
// uPlot for charts, is vendored under static/vendor/ with its licence. Every
// response carries a strict Content-Security-Policy, so the pages hold no
// inline scripts or styles. The pages are public shells: every piece of data
// they show comes from the JSON API, which checks the admin token.
package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var embedded embed.FS

// ContentSecurityPolicy is the policy sent with every page and asset: only
// this origin, plus data: URLs for generated images.
const ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self'; " +
	"script-src 'self'; base-uri 'none'; frame-ancestors 'none'"

// contentTypes pins the types of the files we ship, so they do not depend
// on the host's mime.types.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// AdminPages are the paths of the admin dashboard. Each serves the same
// page (static/admin.html), whose script shows the view the path names.
var AdminPages = []string{"/admin", "/admin/keys", "/admin/keys/{id}", "/admin/usage"}

// Handler returns the handler for Felix's embedded pages. It serves
//
//	GET /           a redirect to /admin
//	GET /admin…     the admin dashboard (AdminPages)
//	GET /test       the API test page (static/test.html)
//	GET /static/…   their stylesheets, scripts, icon and vendored library
//
// and answers 404 with the error JSON to anything else under /static/,
// including directories. Mount it under the same patterns:
//
//	pages := web.Handler()
//	mux.Handle("GET /{$}", pages)
//	mux.Handle("GET /admin", pages) // and the other AdminPages
//	mux.Handle("GET /test", pages)
//	mux.Handle("GET /static/", pages)
func Handler() http.Handler {
	static, err := fs.Sub(embedded, "static")
	if err != nil {
		panic("web: " + err.Error()) // the embed directive guarantees the directory
	}
	files := http.StripPrefix("/static", http.FileServerFS(static))

	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			setHeaders(w, name)
			http.ServeFileFS(w, r, static, name)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", http.RedirectHandler("/admin", http.StatusFound))
	for _, p := range AdminPages {
		mux.Handle("GET "+p, page("admin.html"))
	}
	mux.Handle("GET /test", page("test.html"))
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/static/")
		if info, err := fs.Stat(static, name); err != nil || info.IsDir() {
			setHeaders(w, "")
			notFound(w, r) // also for directories: no listings
			return
		}
		setHeaders(w, name)
		files.ServeHTTP(w, r)
	})
	return mux
}

// notFound answers with the error JSON every Felix endpoint uses.
func notFound(w http.ResponseWriter, r *http.Request) {
	body, _ := json.Marshal(map[string]string{
		"error": "there is no file " + r.URL.Path,
		"code":  "not_found",
	})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	w.Write(append(body, '\n'))
}

func setHeaders(w http.ResponseWriter, name string) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Embedded files carry no modification time, so ask browsers to fetch
	// again rather than keep a page from an older binary.
	h.Set("Cache-Control", "no-cache")
	if ct, ok := contentTypes[path.Ext(name)]; ok {
		h.Set("Content-Type", ct)
	}
}
