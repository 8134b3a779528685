//go:build !fuzzing

package server_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// keyJSON is the Key of SPEC §4.1 as a client decodes it.
type keyJSON struct {
	ID              int64      `json:"id"`
	APIKey          string     `json:"apiKey"`
	TotalCalls      int64      `json:"totalCalls"`
	SuccessfulCalls int64      `json:"successfulCalls"`
	RemainingCalls  int64      `json:"remainingCalls"`
	ReservedCalls   int64      `json:"reservedCalls"`
	UsedUnits       int64      `json:"usedUnits"`
	Name            string     `json:"name"`
	Note            string     `json:"note"`
	Status          string     `json:"status"`
	ExpiresAt       *time.Time `json:"expiresAt"`
	LastUsedAt      *time.Time `json:"lastUsedAt"`
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (f *felix) wantStatus(r response, status int) response {
	f.t.Helper()
	if r.status != status {
		f.t.Fatalf("got %d %s, want %d", r.status, r.body, status)
	}
	return r
}

// TestOperatorSession is what an operator does with a key whose holder
// lost its plaintext: find it by name, disable it and see the refusals,
// enable it again, top it up, read its events, daily history and usage,
// export the usage as CSV, and delete it.
func TestOperatorSession(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
		var created keyJSON
		f.wantStatus(f.do("POST", "/api/keys", map[string]any{"remainingCalls": 3, "name": "Acme Corp", "note": "invoice monthly", "expiresAt": expires}, admin()...), 201).decode(t, &created)
		if !strings.HasPrefix(created.APIKey, "fx_") || created.Status != "active" || created.ExpiresAt == nil || !created.ExpiresAt.Equal(expires) ||
			created.RemainingCalls != 3 || created.LastUsedAt != nil || created.Note != "invoice monthly" {
			t.Fatalf("created: %+v", created)
		}
		key := created.APIKey
		if r := f.generate(key); r.status != 200 {
			t.Fatalf("generate: %d %s", r.status, r.body)
		}

		// The holder lost the key: find it by name.
		var page struct {
			Keys       []keyJSON `json:"keys"`
			NextCursor *string   `json:"nextCursor"`
		}
		f.wantStatus(f.do("GET", "/api/keys?q=acme", nil, admin()...), 200).decode(t, &page)
		if len(page.Keys) != 1 || page.Keys[0].ID != created.ID || page.NextCursor != nil || strings.Contains(page.Keys[0].APIKey, key[8:]) {
			t.Fatalf("search by name: %+v", page)
		}
		path := fmt.Sprint("/api/keys/", created.ID)

		// Disabled: refused with 403, nothing moves, the target is not called.
		var k keyJSON
		f.wantStatus(f.do("PATCH", path, map[string]any{"disabled": true}, admin()...), 200).decode(t, &k)
		if k.Status != "disabled" {
			t.Errorf("after disabling: status %q", k.Status)
		}
		calls := f.target.calls.Load()
		f.wantError(f.generate(key), 403, "key_disabled")
		f.wantCounts(key, counts{total: 1, successful: 1, remaining: 2})
		f.do("PATCH", path, map[string]any{"disabled": false, "expiresAt": time.Now().Add(-time.Minute)}, admin()...)
		f.wantError(f.generate(key), 403, "key_expired")
		if n := f.target.calls.Load(); n != calls {
			t.Errorf("the target was called %d times for refused calls", n-calls)
		}
		f.wantStatus(f.do("PATCH", path, map[string]any{"expiresAt": nil}, admin()...), 200).decode(t, &k)
		if k.Status != "active" || k.ExpiresAt != nil {
			t.Errorf("after clearing the expiry: %+v", k)
		}

		// Top up, concurrently: exact.
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() { f.wantStatus(f.do("POST", path+"/topup", map[string]any{"calls": 1}, admin()...), 200) })
		}
		wg.Wait()
		f.wantError(f.do("POST", path+"/topup", map[string]any{"calls": -13}, admin()...), 409, "insufficient_calls")
		f.wantStatus(f.do("GET", path, nil, admin()...), 200).decode(t, &k)
		if k.RemainingCalls != 12 || k.UsedUnits != 1 || k.LastUsedAt == nil {
			t.Errorf("after 10 top-ups of 1: %+v; want 12 remaining", k)
		}
		for range 2 {
			if r := f.generate(key); r.status != 200 {
				t.Fatalf("generate: %d %s", r.status, r.body)
			}
		}

		// Events prove the books.
		var ev struct{ Events []quota.Event }
		f.wantStatus(f.do("GET", path+"/events", nil, admin()...), 200).decode(t, &ev)
		var actions []string
		var sum int64
		for _, e := range ev.Events {
			actions = append(actions, e.Action)
			if e.After != nil {
				sum += *e.After - *e.Before
			}
		}
		if got := strings.Join(actions, " "); got != "created disabled updated enabled updated"+strings.Repeat(" topup", 10) {
			t.Errorf("events: %s", got)
		}
		f.wantStatus(f.do("GET", path, nil, admin()...), 200).decode(t, &k)
		if sum-k.UsedUnits != k.RemainingCalls {
			t.Errorf("events add up to %d, used %d, remaining %d: the books do not balance", sum, k.UsedUnits, k.RemainingCalls)
		}

		// Daily history, and the holder's own view of it.
		var daily struct{ Days []quota.KeyDay }
		f.wantStatus(f.do("GET", path+"/daily?days=7", nil, admin()...), 200).decode(t, &daily)
		today := daily.Days[len(daily.Days)-1]
		if len(daily.Days) != 7 || today.Generations != 3 || today.Units != 3 || daily.Days[0].Generations != 0 {
			t.Errorf("daily: %+v; want 7 days ending today with 3", daily.Days)
		}
		var holder struct {
			keyJSON
			Daily []quota.KeyDay `json:"daily"`
		}
		f.wantStatus(f.do("GET", "/api/apikey?apiKey="+key, nil), 200).decode(t, &holder)
		if len(holder.Daily) != 30 || holder.Daily[29].Generations != 3 || holder.ID != created.ID || holder.APIKey == key {
			t.Errorf("the holder's view: %+v", holder)
		}

		// The usage log: 3 calls, the refused ones are not rows.
		var usage struct {
			Calls      []quota.Call
			NextCursor *string
		}
		f.wantStatus(f.do("GET", fmt.Sprintf("/api/usage?keyId=%d&limit=2", created.ID), nil, admin()...), 200).decode(t, &usage)
		if len(usage.Calls) != 2 || usage.NextCursor == nil || usage.Calls[0].Outcome != "success" || usage.Calls[0].KeyID != created.ID {
			t.Fatalf("usage page 1: %+v", usage)
		}
		first := usage.Calls
		f.wantStatus(f.do("GET", fmt.Sprintf("/api/usage?keyId=%d&limit=2&cursor=%s", created.ID, *usage.NextCursor), nil, admin()...), 200).decode(t, &usage)
		if len(usage.Calls) != 1 || usage.NextCursor != nil || usage.Calls[0].ID >= first[1].ID {
			t.Fatalf("usage page 2: %+v", usage)
		}
		r := f.wantStatus(f.do("GET", "/api/usage.csv?outcome=success&from="+time.Now().UTC().Format(time.DateOnly), nil, admin()...), 200)
		if ct, cd := r.header.Get("Content-Type"), r.header.Get("Content-Disposition"); ct != "text/csv; charset=utf-8" || !strings.HasPrefix(cd, `attachment; filename="felix-usage-`) {
			t.Errorf("CSV headers: %q, %q", ct, cd)
		}
		rows, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
		if err != nil || len(rows) != 4 || strings.Join(rows[0], ",") != strings.Join(quota.CallColumns, ",") || rows[1][6] != "success" || rows[1][1] != fmt.Sprint(created.ID) {
			t.Errorf("CSV: %v, %v; want a header and 3 successful calls", rows, err)
		}

		// Deleted: stops working at once; its usage stays.
		if r := f.do("DELETE", path, nil, admin()...); r.status != 204 || len(r.body) != 0 {
			t.Errorf("delete: %d %s, want 204 and no body", r.status, r.body)
		}
		f.wantError(f.generate(key), 401, "invalid_api_key")
		f.wantError(f.do("GET", path, nil, admin()...), 404, "key_not_found")
		f.wantError(f.do("DELETE", path, nil, admin()...), 404, "key_not_found")
		f.wantStatus(f.do("GET", "/api/keys", nil, admin()...), 200).decode(t, &page)
		if len(page.Keys) != 0 {
			t.Errorf("a deleted key is listed: %+v", page.Keys)
		}
		f.wantStatus(f.do("GET", fmt.Sprintf("/api/usage?keyId=%d", created.ID), nil, admin()...), 200).decode(t, &usage)
		if len(usage.Calls) != 3 {
			t.Errorf("usage of the deleted key: %d calls, want its 3 kept", len(usage.Calls))
		}
		if total, daily := f.siteTotals(); total != 3 || daily != 3 {
			t.Errorf("site totals after delete: %d, %d; want 3 kept", total, daily)
		}
		if bad, err := f.quota.Books(t.Context()); err != nil || len(bad) != 0 {
			t.Errorf("books: %v, %v", bad, err)
		}
	})
}

// TestKeysPaging: a cursor walks every key once, newest first.
func TestKeysPaging(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		for range 5 {
			f.createKey(1)
		}
		var seen []int64
		cursor := ""
		for page := 0; ; page++ {
			var p struct {
				Keys       []keyJSON
				NextCursor *string
			}
			f.wantStatus(f.do("GET", "/api/keys?limit=2"+cursor, nil, admin()...), 200).decode(t, &p)
			for _, k := range p.Keys {
				seen = append(seen, k.ID)
			}
			if p.NextCursor == nil {
				break
			}
			if page > 5 {
				t.Fatal("paging does not end")
			}
			cursor = "&cursor=" + *p.NextCursor
		}
		if fmt.Sprint(seen) != "[5 4 3 2 1]" {
			t.Errorf("keys seen while paging: %v, want [5 4 3 2 1]", seen)
		}
	})
}

// TestKeysBadInput: the admin API of keys and usage refuses malformed
// input with a 400 naming the field, unknown ids with 404, and everything
// without the admin token with 401; no key changes.
func TestKeysBadInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		f := newFelix(t, db)
		var k keyJSON
		f.wantStatus(f.do("POST", "/api/keys", map[string]any{"remainingCalls": 5}, admin()...), 201).decode(t, &k)
		path := fmt.Sprint("/api/keys/", k.ID)
		for _, tc := range []struct {
			name, method, path, body string
			status                   int
			code, mention            string
		}{
			{"create: no amount", "POST", "/api/keys", `{"name":"x"}`, 400, "invalid_request", "remainingCalls"},
			{"create: unknown field", "POST", "/api/keys", `{"remainingCalls":1,"colour":"red"}`, 400, "invalid_request", "colour"},
			{"create: bad expiry", "POST", "/api/keys", `{"remainingCalls":1,"expiresAt":"tomorrow"}`, 400, "invalid_request", "expiresAt"},
			{"create: long name", "POST", "/api/keys", `{"remainingCalls":1,"name":"` + strings.Repeat("n", 201) + `"}`, 400, "invalid_request", "name"},
			{"patch: unknown field", "PATCH", path, `{"remaining":1}`, 400, "invalid_request", "remaining"},
			{"patch: disabled string", "PATCH", path, `{"disabled":"yes"}`, 400, "invalid_request", "disabled"},
			{"patch: negative", "PATCH", path, `{"remainingCalls":-1}`, 400, "invalid_request", "remainingCalls"},
			{"patch: null name", "PATCH", path, `{"name":null}`, 400, "invalid_request", "name"},
			{"patch: not an id", "PATCH", "/api/keys/abc", `{}`, 400, "invalid_request", "id"},
			{"patch: id zero", "GET", "/api/keys/0", "", 400, "invalid_request", "id"},
			{"patch: id leading zero", "GET", "/api/keys/01", "", 400, "invalid_request", "id"},
			{"get: unknown id", "GET", "/api/keys/999999", "", 404, "key_not_found", "no such"},
			{"topup: zero", "POST", path + "/topup", `{"calls":0}`, 400, "invalid_request", "calls"},
			{"topup: fraction", "POST", path + "/topup", `{"calls":1.5}`, 400, "invalid_request", "calls"},
			{"topup: unknown id", "POST", "/api/keys/999999/topup", `{"calls":1}`, 404, "key_not_found", "no such"},
			{"events: unknown id", "GET", "/api/keys/999999/events", "", 404, "key_not_found", "no such"},
			{"daily: too many days", "GET", path + "/daily?days=367", "", 400, "invalid_request", "days"},
			{"list: limit 0", "GET", "/api/keys?limit=0", "", 400, "invalid_request", "limit"},
			{"list: limit 501", "GET", "/api/keys?limit=501", "", 400, "invalid_request", "limit"},
			{"list: bad status", "GET", "/api/keys?status=sleeping", "", 400, "invalid_request", "status"},
			{"list: foreign cursor", "GET", "/api/keys?cursor=abc", "", 400, "invalid_request", "cursor"},
			{"list: usage cursor", "GET", "/api/keys?cursor=Y2FsbHM6NQ", "", 400, "invalid_request", "cursor"},
			{"list: own cursor with a line break", "GET", "/api/keys?cursor=a2V5c%0Azo1", "", 400, "invalid_request", "cursor"},
			{"list: unknown parameter", "GET", "/api/keys?sort=name", "", 400, "invalid_request", "sort"},
			{"list: repeated parameter", "GET", "/api/keys?q=a&q=b", "", 400, "invalid_request", "q"},
			{"usage: from after to", "GET", "/api/usage?from=2026-12-02&to=2026-12-01", "", 400, "invalid_request", "from"},
			{"usage: bad from", "GET", "/api/usage?from=yesterday", "", 400, "invalid_request", "from"},
			{"usage: bad outcome", "GET", "/api/usage?outcome=maybe", "", 400, "invalid_request", "outcome"},
			{"usage: bad key id", "GET", "/api/usage?keyId=-1", "", 400, "invalid_request", "keyId"},
			{"usage.csv: paging", "GET", "/api/usage.csv?limit=5", "", 400, "invalid_request", "limit"},
			{"wrong method on an id", "PUT", path, `{}`, 405, "method_not_allowed", "GET or PATCH or DELETE"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := f.do(tc.method, tc.path, tc.body, admin()...)
				f.wantError(r, tc.status, tc.code)
				if msg, _ := r.json["error"].(string); !strings.Contains(msg, tc.mention) {
					t.Errorf("error %q does not mention %q", msg, tc.mention)
				}
			})
		}
		for _, route := range []string{"GET /api/keys", "POST /api/keys", "GET " + path, "PATCH " + path, "DELETE " + path,
			"POST " + path + "/topup", "GET " + path + "/events", "GET " + path + "/daily", "GET /api/usage", "GET /api/usage.csv"} {
			method, p, _ := strings.Cut(route, " ")
			r := f.do(method, p, `{}`, "Authorization", "Bearer wrong-token-0123456789")
			f.wantError(r, http.StatusUnauthorized, "admin_required")
		}
		// Read from the store: those 10 wrong tokens lock this address out
		// of the admin API for a minute (too_many_attempts).
		got, err := f.quota.KeyByID(context.Background(), k.ID)
		if err != nil || got.RemainingCalls != 5 || got.Status(time.Now()) != "active" || got.Name != "" {
			t.Errorf("the key changed under bad input: %+v, %v", got, err)
		}
	})
}
