//go:build !fuzzing

package server_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"

	"github.com/felix-gateway/felix/internal/metrics"
	"github.com/felix-gateway/felix/internal/server"
)

// contract is the validator of the OpenAPI document, built once.
var contract = sync.OnceValues(func() (validator.Validator, error) {
	doc, err := libopenapi.NewDocument(server.OpenAPI())
	if err != nil {
		return nil, err
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%v", errs)
	}
	return v, nil
})

// checkContract validates one exchange against the OpenAPI document;
// every request the contract tests send through felix.do passes here.
// The answer must be documented for its route and status, headers and
// body included; the request too when it was accepted (2xx), since the
// document must describe everything Felix accepts. A path the document
// does not have must have been answered 404 not_found, a method it does
// not list 405 method_not_allowed. On POST /api/generate a non-2xx answer
// without Felix's error JSON is the target's own, passed through: the
// document's default response, which takes anything.
func checkContract(t testing.TB, req *http.Request, sent []byte, resp *http.Response, body []byte) {
	t.Helper()
	v, err := contract()
	if err != nil {
		t.Fatalf("the OpenAPI document does not load: %v", err)
	}
	in := req.Clone(req.Context())
	in.Body = io.NopCloser(bytes.NewReader(sent))
	out := *resp
	out.Body = io.NopCloser(bytes.NewReader(body))
	what := fmt.Sprintf("%s %s → %d", req.Method, req.URL.RequestURI(), resp.StatusCode)

	var e struct{ Error, Code *string }
	felixError := json.Unmarshal(body, &e) == nil && e.Error != nil && e.Code != nil
	if req.Method == "POST" && req.URL.Path == "/api/generate" && resp.StatusCode/100 != 2 && !felixError {
		if resp.Header.Get("X-Request-ID") == "" {
			t.Errorf("OpenAPI: %s: the target's answer came without X-Request-ID", what)
		}
		return
	}
	ok, errs := v.ValidateHttpResponse(in, &out)
	if !ok && unknownRoute(errs) {
		want := map[int]string{404: "not_found", 405: "method_not_allowed"}[resp.StatusCode]
		if !felixError || want == "" || *e.Code != want {
			t.Errorf("OpenAPI: %s is not in the document, and its answer %s is not 404 not_found or 405 method_not_allowed", what, body)
		}
		return
	}
	for _, ve := range errs {
		t.Errorf("OpenAPI: %s: the answer does not match the document: %s (%s) %.300s", what, ve.Message, ve.Reason, body)
	}
	if resp.StatusCode/100 != 2 {
		return
	}
	if strings.EqualFold(in.Header.Get("Content-Encoding"), "gzip") {
		zr, err := gzip.NewReader(bytes.NewReader(sent))
		if err != nil {
			t.Fatalf("OpenAPI: %s: Felix accepted a gzip body that does not decode: %v", what, err)
		}
		sent, _ = io.ReadAll(zr)
		in.Header.Del("Content-Encoding")
	}
	in.Body = io.NopCloser(bytes.NewReader(sent))
	if len(sent) > 0 && in.Header.Get("Content-Type") == "" {
		in.Header.Set("Content-Type", "application/json") // Felix reads every body as JSON
	}
	if ok, errs := v.ValidateHttpRequest(in); !ok {
		for _, ve := range errs {
			t.Errorf("OpenAPI: %s: Felix accepted a request the document does not allow: %s (%s) %.300s", what, ve.Message, ve.Reason, sent)
		}
	}
}

func unknownRoute(errs []*verrors.ValidationError) bool {
	for _, e := range errs {
		if e.ValidationType == helpers.PathValidation && e.ValidationSubType == helpers.ValidationMissing ||
			e.ValidationSubType == helpers.ValidationMissingOperation {
			return true
		}
	}
	return false
}

// TestOpenAPIDocument: the document is a valid OpenAPI 3.1 document.
func TestOpenAPIDocument(t *testing.T) {
	v, err := contract()
	if err != nil {
		t.Fatal(err)
	}
	if ok, errs := v.ValidateDocument(); !ok {
		for _, e := range errs {
			t.Errorf("openapi.json: %s (%s)", e.Message, e.Reason)
		}
	}
	var doc struct{ OpenAPI string }
	if err := json.Unmarshal(server.OpenAPI(), &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("openapi.json: version %q, %v; want 3.1.x", doc.OpenAPI, err)
	}
}

// TestOpenAPIRoutes: the router and the document list the same
// "METHOD path" set; a path parameter's name does not matter, a pattern
// ending in "/" (a tree of assets) is a path ending in a parameter, and
// one ending in "{$}" is the path without it.
func TestOpenAPIRoutes(t *testing.T) {
	m := metrics.New(metrics.Options{})
	s := server.New(server.Options{Pages: http.NotFoundHandler(), Metrics: m.Handler(), Observer: m})
	var routed []string
	for _, p := range s.Routes() {
		method, path, _ := strings.Cut(p, " ")
		path = strings.TrimSuffix(path, "{$}") // "/{$}" is exactly "/"
		if strings.HasSuffix(path, "/") && path != "/" {
			path += "{}"
		}
		routed = append(routed, method+" "+params.ReplaceAllString(path, "{}"))
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(server.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range doc.Paths {
		for method := range item {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+params.ReplaceAllString(path, "{}"))
		}
	}
	slices.Sort(routed)
	slices.Sort(documented)
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routed, d) {
			t.Errorf("openapi.json has %s, which no route serves", d)
		}
	}
}

var params = regexp.MustCompile(`\{[^}]*\}`)

// TestOpenAPIServed: GET /openapi.json is public and serves the document.
func TestOpenAPIServed(t *testing.T) {
	f := newFelix(t, "sqlite:"+t.TempDir()+"/f.db")
	r := f.do("GET", "/openapi.json", nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, server.OpenAPI()) || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Errorf("GET /openapi.json: %d %s, %d bytes; want 200 application/json and the document", r.status, r.header.Get("Content-Type"), len(r.body))
	}
}
