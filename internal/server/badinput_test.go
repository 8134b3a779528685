//go:build !fuzzing

package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/felix-gateway/felix/internal/server"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestBadInput is SPEC §5: every malformed request gets a 4xx error JSON
// that names the problem, the target is not called and no counter moves.
func TestBadInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db, func(o *server.Options) { o.Limits.MaxBodyBytes = 4096 })
		key := f.createKey(5)
		auth := []string{"Authorization", "Bearer " + key}
		ctrl := "bad\x01key"
		long := strings.Repeat("k", 257)
		for _, tc := range []struct {
			name, method, path, body string
			headers                  []string
			status                   int
			code, mention            string
		}{
			{"empty body", "POST", "/api/generate", "", auth, 400, "invalid_request", "empty"},
			{"not JSON", "POST", "/api/generate", "prompt=cat", auth, 400, "invalid_request", "not valid JSON"},
			{"truncated", "POST", "/api/generate", `{"prompt":"cat"`, auth, 400, "invalid_request", "JSON"},
			{"array", "POST", "/api/generate", `["prompt"]`, auth, 400, "invalid_request", "JSON object"},
			{"null", "POST", "/api/generate", `null`, auth, 400, "invalid_request", "JSON object"},
			{"two objects", "POST", "/api/generate", `{"prompt":"a"}{"prompt":"b"}`, auth, 400, "invalid_request", "after"},
			{"no prompt", "POST", "/api/generate", `{"width":512}`, auth, 400, "invalid_request", "prompt"},
			{"empty prompt", "POST", "/api/generate", `{"prompt":"  "}`, auth, 400, "invalid_request", "prompt"},
			{"prompt not string", "POST", "/api/generate", `{"prompt":42}`, auth, 400, "invalid_request", "prompt"},
			{"width string", "POST", "/api/generate", `{"prompt":"a","width":"512"}`, auth, 400, "invalid_request", "width"},
			{"width fraction", "POST", "/api/generate", `{"prompt":"a","width":512.5}`, auth, 400, "invalid_request", "width"},
			{"width negative", "POST", "/api/generate", `{"prompt":"a","width":-512}`, auth, 400, "invalid_request", "width"},
			{"width zero", "POST", "/api/generate", `{"prompt":"a","width":0}`, auth, 400, "invalid_request", "width"},
			{"height absurd", "POST", "/api/generate", `{"prompt":"a","height":100000}`, auth, 400, "invalid_request", "height"},
			{"height huge exponent", "POST", "/api/generate", `{"prompt":"a","height":1e400}`, auth, 400, "invalid_request", "height"},
			{"steps over limit", "POST", "/api/generate", `{"prompt":"a","steps":151}`, auth, 400, "invalid_request", "steps"},
			{"batch over limit", "POST", "/api/generate", `{"prompt":"a","batch_size":9}`, auth, 400, "invalid_request", "batch_size"},
			{"batch bool", "POST", "/api/generate", `{"prompt":"a","batch_size":true}`, auth, 400, "invalid_request", "batch_size"},
			{"model object", "POST", "/api/generate", `{"prompt":"a","model":{}}`, auth, 400, "invalid_request", "model"},
			{"body over limit", "POST", "/api/generate", `{"prompt":"` + strings.Repeat("a", 5000) + `"}`, auth, 413, "body_too_large", "4096"},
			{"no key", "POST", "/api/generate", `{"prompt":"a"}`, nil, 401, "invalid_api_key", "API key"},
			{"unknown key", "POST", "/api/generate", `{"prompt":"a"}`, []string{"X-API-Key", "nope-nope"}, 401, "invalid_api_key", "unknown"},
			{"two different keys", "POST", "/api/generate", `{"prompt":"a","apiKey":"other"}`, auth, 400, "invalid_request", "differs"},
			{"key not string", "POST", "/api/generate", `{"prompt":"a","apiKey":7}`, nil, 400, "invalid_request", "apiKey"},
			{"key with control char", "POST", "/api/generate", `{"prompt":"a","apiKey":"bad\u0001key"}`, nil, 400, "invalid_request", "control"},
			{"key too long", "POST", "/api/generate", `{"prompt":"a"}`, []string{"X-API-Key", long}, 400, "invalid_request", "256"},
			{"get: no key", "GET", "/api/apikey", "", nil, 401, "invalid_api_key", "API key"},
			{"get: control char", "GET", "/api/apikey?apiKey=" + strings.ReplaceAll(ctrl, "\x01", "%01"), "", nil, 400, "invalid_request", "control"},
			{"create: no amount", "POST", "/api/apikey", `{"apiKey":"abcdefgh"}`, admin(), 400, "invalid_request", "initialRemainingCalls"},
			{"create: negative", "POST", "/api/apikey", `{"initialRemainingCalls":-1}`, admin(), 400, "invalid_request", "initialRemainingCalls"},
			{"create: string amount", "POST", "/api/apikey", `{"initialRemainingCalls":"5"}`, admin(), 400, "invalid_request", "initialRemainingCalls"},
			{"create: unknown field", "POST", "/api/apikey", `{"initialRemainingCalls":5,"remaining":5}`, admin(), 400, "invalid_request", "remaining"},
			{"create: long key", "POST", "/api/apikey", `{"initialRemainingCalls":5,"apiKey":"` + long + `"}`, admin(), 400, "invalid_request", "256"},
			{"create: duplicate", "POST", "/api/apikey", `{"initialRemainingCalls":5,"apiKey":"` + key + `"}`, admin(), 409, "key_exists", "exists"},
			{"set: negative", "PUT", "/api/apikey", `{"apiKey":"` + key + `","remainingCalls":-5}`, admin(), 400, "invalid_request", "remainingCalls"},
			{"set: no key", "PUT", "/api/apikey", `{"remainingCalls":5}`, admin(), 400, "invalid_request", "apiKey"},
			{"set: not JSON", "PUT", "/api/apikey", `remainingCalls=5`, admin(), 400, "invalid_request", "JSON"},
			{"stats: bad days", "GET", "/api/stats?days=-1", "", admin(), 400, "invalid_request", "days"},
			{"unknown path", "GET", "/api/nothing", "", nil, 404, "not_found", "/api/nothing"},
			{"wrong method", "DELETE", "/api/apikey", "", admin(), 405, "method_not_allowed", "GET or POST or PUT or HEAD"},
			{"generate by GET", "GET", "/api/generate", "", auth, 405, "method_not_allowed", "use POST"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := f.do(tc.method, tc.path, tc.body, tc.headers...)
				f.wantError(r, tc.status, tc.code)
				if msg, _ := r.json["error"].(string); !strings.Contains(msg, tc.mention) {
					t.Errorf("error %q does not mention %q", msg, tc.mention)
				}
				if allow := r.header.Get("Allow"); (tc.status == http.StatusMethodNotAllowed) != (allow != "") {
					t.Errorf("Allow header %q with status %d: a 405 and only a 405 names the allowed methods", allow, tc.status)
				}
			})
		}
		if n := f.target.calls.Load(); n != 0 {
			t.Errorf("target called %d times by bad requests", n)
		}
		f.wantCounts(key, counts{total: 0, successful: 0, remaining: 5})
		if total, daily := f.siteTotals(); total != 0 || daily != 0 {
			t.Errorf("site counters moved: total %d, daily %d", total, daily)
		}
		if r := f.generate(key); r.status != http.StatusOK {
			t.Errorf("a good request after the bad ones: %d %s", r.status, r.body)
		}
	})
}
