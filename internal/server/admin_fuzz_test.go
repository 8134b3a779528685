package server

import (
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzKeyPatch: the PATCH decoder never panics, returns only its own
// errors, and what it accepts is within the field limits.
func FuzzKeyPatch(f *testing.F) {
	for _, s := range []string{
		`{"name":"acme","note":"n","disabled":true,"expiresAt":"2026-12-31T23:59:59Z","remainingCalls":5}`,
		`{"expiresAt":null}`, `{"disabled":"yes"}`, `{"remainingCalls":-1}`, `{"name":null}`,
		`{"expiresAt":"2026-02-30T00:00:00Z"}`, `{"remainingCalls":1e3}`, `{}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, err := decodeObject(body)
		if err != nil {
			return
		}
		c, err := decodeKeyChange(obj)
		if err != nil {
			if _, ok := err.(*apiError); !ok {
				t.Fatalf("error %v is not an apiError", err)
			}
			return
		}
		if c.Name != nil && len(*c.Name) > maxNameLen || c.Note != nil && len(*c.Note) > maxNoteLen {
			t.Fatalf("accepted a name or note over its limit: %+v", c)
		}
		if c.Remaining != nil && (*c.Remaining < 0 || *c.Remaining > maxCalls) {
			t.Fatalf("accepted remainingCalls %d", *c.Remaining)
		}
		if c.ClearExpiry && c.ExpiresAt != nil {
			t.Fatalf("both clears and sets the expiry: %+v", c)
		}
	})
}

// FuzzUsageQuery: the usage log's query decoder never panics, returns only
// its own errors, and what it accepts is in range.
func FuzzUsageQuery(f *testing.F) {
	for _, s := range []string{
		"keyId=1&from=2026-11-01&to=2026-11-30&outcome=success&limit=50&cursor=Y2FsbHM6NQ",
		"from=2026-11-30T10:00:00Z&to=2026-11-30T09:00:00Z", "limit=0", "keyId=-1", "a=1", "q=%zz", "limit=1&limit=2",
	} {
		f.Add(s)
	}
	s := &Server{quota: nil}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/api/usage", nil)
		r.URL.RawQuery = raw
		f, err := s.callFilterIn(r, true, time.UTC)
		if err != nil {
			if _, ok := err.(*apiError); !ok {
				t.Fatalf("error %v is not an apiError", err)
			}
			return
		}
		if f.Limit < 1 || f.Limit > 500 || f.KeyID < 0 || f.Before < 0 {
			t.Fatalf("accepted %+v", f)
		}
		if f.From != nil && f.To != nil && !f.From.Before(*f.To) {
			t.Fatalf("accepted from %v not before to %v", f.From, f.To)
		}
	})
}

// FuzzCursor: a cursor decodes only when it is one Felix made for the same
// list, and then to the id it was made from.
func FuzzCursor(f *testing.F) {
	f.Add("keys", "calls", int64(5), "a2V5czo1")
	f.Add("calls", "calls", int64(1), "Y2FsbHM6MDE")
	f.Fuzz(func(t *testing.T, kind, other string, id int64, raw string) {
		if id > 0 {
			c := encodeCursor(kind, id)
			if got, ok := decodeCursor(*c, kind); !ok || got != id {
				t.Fatalf("cursor %q of %s:%d decodes to %d, %v", *c, kind, id, got, ok)
			}
			if _, ok := decodeCursor(*c, other); ok && other != kind {
				t.Fatalf("a %s cursor is accepted as a %s cursor", kind, other)
			}
		}
		if got, ok := decodeCursor(raw, kind); ok {
			if got <= 0 || *encodeCursor(kind, got) != raw {
				t.Fatalf("decoded %q to %d, which is not what Felix makes (%q)", raw, got, *encodeCursor(kind, got))
			}
		}
	})
}
