package server

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 document of every route, written by hand as
// the contract it is; tests check it against the router and validate the
// contract tests' answers against it.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the OpenAPI document Felix serves at /openapi.json.
func OpenAPI() []byte { return openAPI }

// openAPIHandler serves the document.
func openAPIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Write(openAPI)
	})
}
