//go:build !fuzzing

package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// policyKey is a key's id and plaintext, created with the given fields.
func (f *felix) policyKey(fields map[string]any) (int64, string) {
	f.t.Helper()
	var k keyJSON
	f.wantStatus(f.do("POST", "/api/keys", fields, admin()...), 201).decode(f.t, &k)
	return k.ID, k.APIKey
}

func (f *felix) generateBody(key, body string, headers ...string) response {
	return f.do("POST", "/api/generate", body, append([]string{"Authorization", "Bearer " + key}, headers...)...)
}

// TestPolicyFields: policies are set at creation and by PATCH, shown on
// the Key, cleared with null, and bad values are refused naming the field.
func TestPolicyFields(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		id, _ := f.policyKey(map[string]any{"remainingCalls": 5, "rateLimit": map[string]any{"requests": 60, "per": "minute"},
			"maxConcurrent": 2, "costPerImage": true, "refill": map[string]any{"calls": 1000, "every": "month"}})
		path := fmt.Sprint("/api/keys/", id)
		var k struct {
			RateLimit     *quota.RateLimit `json:"rateLimit"`
			MaxConcurrent *int64           `json:"maxConcurrent"`
			CostPerImage  bool             `json:"costPerImage"`
			Refill        *quota.Refill    `json:"refill"`
		}
		f.wantStatus(f.do("GET", path, nil, admin()...), 200).decode(t, &k)
		if k.RateLimit == nil || *k.RateLimit != (quota.RateLimit{Requests: 60, Per: "minute"}) || k.MaxConcurrent == nil || *k.MaxConcurrent != 2 ||
			!k.CostPerImage || k.Refill == nil || *k.Refill != (quota.Refill{Calls: 1000, Every: "month"}) {
			t.Fatalf("created with policies: %+v", k)
		}
		f.wantStatus(f.do("PATCH", path, `{"rateLimit":null,"maxConcurrent":null,"costPerImage":false,"refill":null}`, admin()...), 200).decode(t, &k)
		if k.RateLimit != nil || k.MaxConcurrent != nil || k.CostPerImage || k.Refill != nil {
			t.Errorf("after clearing: %+v", k)
		}
		for _, tc := range []struct{ body, mention string }{
			{`{"rateLimit":{"requests":0,"per":"second"}}`, "rateLimit.requests"},
			{`{"rateLimit":{"requests":5,"per":"week"}}`, "rateLimit.per"},
			{`{"rateLimit":{"requests":5}}`, "rateLimit.per"},
			{`{"rateLimit":{"requests":5,"per":"second","burst":9}}`, "burst"},
			{`{"rateLimit":"5/s"}`, "rateLimit"},
			{`{"maxConcurrent":0}`, "maxConcurrent"},
			{`{"costPerImage":1}`, "costPerImage"},
			{`{"refill":{"calls":-1,"every":"day"}}`, "refill.calls"},
			{`{"refill":{"calls":10,"every":"week"}}`, "refill.every"},
		} {
			r := f.do("PATCH", path, tc.body, admin()...)
			f.wantError(r, 400, "invalid_request")
			if msg, _ := r.json["error"].(string); !strings.Contains(msg, tc.mention) {
				t.Errorf("PATCH %s: error %q does not mention %s", tc.body, msg, tc.mention)
			}
		}
	})
}

// TestRateAndConcurrencyLimits: over its rate limit a key gets 429
// rate_limited with an honest Retry-After; with as many calls in flight as
// its cap, 429 concurrency_limited with Retry-After: 1. Neither is
// forwarded or counted.
func TestRateAndConcurrencyLimits(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		_, key := f.policyKey(map[string]any{"remainingCalls": 100, "rateLimit": map[string]any{"requests": 2, "per": "hour"}})
		for range 2 {
			f.wantStatus(f.generate(key), 200)
		}
		r := f.generate(key)
		f.wantError(r, 429, "rate_limited")
		if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1790 || ra > 1800 {
			t.Errorf("Retry-After %q, want about 1800 s (2 per hour: one every 30 minutes)", r.header.Get("Retry-After"))
		}
		f.wantCounts(key, counts{total: 2, successful: 2, remaining: 98})

		release := make(chan struct{})
		arrived := make(chan struct{}, 4)
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-release
			io.WriteString(w, `{"images":[]}`)
		})
		_, capped := f.policyKey(map[string]any{"remainingCalls": 100, "maxConcurrent": 2})
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() { f.wantStatus(f.generate(capped), 200) })
		}
		<-arrived
		<-arrived
		r = f.generate(capped)
		f.wantError(r, 429, "concurrency_limited")
		if r.header.Get("Retry-After") != "1" {
			t.Errorf("Retry-After %q, want 1", r.header.Get("Retry-After"))
		}
		close(release)
		wg.Wait()
		f.wantStatus(f.generate(capped), 200)
		f.wantCounts(capped, counts{total: 3, successful: 3, remaining: 97})
	})
}

// TestCostPerImageHTTP: a key that charges per image pays its batch_size
// for a success, admission needs that many, and usedUnits counts them.
func TestCostPerImageHTTP(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		id, key := f.policyKey(map[string]any{"remainingCalls": 10, "costPerImage": true})
		f.wantStatus(f.generateBody(key, `{"prompt":"a","batch_size":4}`), 200)
		f.wantStatus(f.generateBody(key, `{"prompt":"a","batch_size":4}`), 200)
		f.wantError(f.generateBody(key, `{"prompt":"a","batch_size":4}`), 429, "quota_exhausted")
		f.wantStatus(f.generateBody(key, `{"prompt":"a"}`), 200) // batch_size 1 by default
		var k keyJSON
		f.wantStatus(f.do("GET", fmt.Sprint("/api/keys/", id), nil, admin()...), 200).decode(t, &k)
		if k.SuccessfulCalls != 3 || k.UsedUnits != 9 || k.RemainingCalls != 1 || k.TotalCalls != 3 {
			t.Errorf("key %+v; want 3 successful, 9 units, 1 remaining", k)
		}
		if total, _ := f.siteTotals(); total != 3 {
			t.Errorf("site total %d, want 3 (calls, not units)", total)
		}
	})
}

// TestIdempotency is SPEC §4.3's Idempotency-Key: a repeat while the first
// is in flight is refused, a repeat of a success is its replay (not
// forwarded, not charged), a repeat of a failure is a new call, another
// body is 422, and keys are per API key.
func TestIdempotency(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		_, key := f.policyKey(map[string]any{"remainingCalls": 10})
		idem := func(v string) []string { return []string{"Idempotency-Key", v} }
		first := f.generateBody(key, `{"prompt":"a fox","width":64}`, idem("order-1")...)
		f.wantStatus(first, 200)
		calls := f.target.calls.Load()
		// The same request, the key sent another way and reformatted: a replay.
		again := f.do("POST", "/api/generate", "{ \"width\": 64, \"apiKey\": \""+key+"\",\n \"prompt\": \"a fox\" }", idem("order-1")...)
		f.wantStatus(again, 200)
		if again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(first.body) ||
			again.header.Get("Content-Type") != first.header.Get("Content-Type") {
			t.Errorf("replay: %q %s, want the first answer %s marked Idempotent-Replayed", again.header.Get("Idempotent-Replayed"), again.body, first.body)
		}
		if n := f.target.calls.Load(); n != calls {
			t.Errorf("a replay reached the target (%d calls)", n-calls)
		}
		f.wantCounts(key, counts{total: 1, successful: 1, remaining: 9})
		f.wantError(f.generateBody(key, `{"prompt":"a cat"}`, idem("order-1")...), 422, "idempotency_key_reused")

		// A failure: the repeat is a new call.
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
		f.wantStatus(f.generateBody(key, `{"prompt":"b"}`, idem("order-2")...), 500)
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"images":["b"]}`) })
		f.wantStatus(f.generateBody(key, `{"prompt":"b"}`, idem("order-2")...), 200)
		f.wantCounts(key, counts{total: 3, successful: 2, remaining: 8})

		// In flight: 409 request_in_progress.
		release, arrived := make(chan struct{}), make(chan struct{}, 1)
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-release
			io.WriteString(w, `{"images":["c"]}`)
		})
		var wg sync.WaitGroup
		wg.Go(func() { f.wantStatus(f.generateBody(key, `{"prompt":"c"}`, idem("order-3")...), 200) })
		<-arrived
		f.wantError(f.generateBody(key, `{"prompt":"c"}`, idem("order-3")...), 409, "request_in_progress")
		close(release)
		wg.Wait()

		// Scoped per API key: another key's same value is its own call.
		_, other := f.policyKey(map[string]any{"remainingCalls": 1})
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"images":["d"]}`) })
		f.wantStatus(f.generateBody(other, `{"prompt":"a fox","width":64}`, idem("order-1")...), 200)
		f.wantCounts(other, counts{total: 1, successful: 1, remaining: 0})

		// A replay needs a key that is still valid and enabled.
		var k keyJSON
		f.wantStatus(f.do("GET", "/api/apikey?apiKey="+key, nil), 200).decode(t, &k)
		f.do("PATCH", fmt.Sprint("/api/keys/", k.ID), `{"disabled":true}`, admin()...)
		f.wantError(f.generateBody(key, `{"prompt":"a fox","width":64}`, idem("order-1")...), 403, "key_disabled")
		f.do("PATCH", fmt.Sprint("/api/keys/", k.ID), `{"disabled":false}`, admin()...)

		for _, bad := range []string{"has space", strings.Repeat("k", 256), "é"} {
			f.wantError(f.generateBody(key, `{"prompt":"a"}`, idem(bad)...), 400, "invalid_request")
		}
	})
}

// TestIdempotencyLargeAnswer: an answer over IDEMPOTENCY_MAX_BYTES is not
// kept: its repeat gets 409 already_succeeded naming the first request.
func TestIdempotencyLargeAnswer(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelixQuota(t, db, newTarget(t), func(o *quota.Options) { o.IdempotencyMaxBytes = 1000 })
		_, key := f.policyKey(map[string]any{"remainingCalls": 10})
		f.target.setHandler(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("x", 5000)) })
		first := f.generateBody(key, `{"prompt":"big"}`, "Idempotency-Key", "big-1")
		f.wantStatus(first, 200)
		r := f.generateBody(key, `{"prompt":"big"}`, "Idempotency-Key", "big-1")
		f.wantError(r, 409, "already_succeeded")
		if r.json["requestId"] != first.header.Get("X-Request-ID") {
			t.Errorf("already_succeeded names request %v, want the first's %s", r.json["requestId"], first.header.Get("X-Request-ID"))
		}
		f.wantCounts(key, counts{total: 1, successful: 1, remaining: 9})
	})
}
