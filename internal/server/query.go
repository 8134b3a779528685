package server

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// query is an endpoint's query string, read strictly: unknown or repeated
// parameters are refused, each value is checked, and every refusal names
// the parameter.
type query struct{ v url.Values }

// readQuery parses r's query string, allowing only the named parameters.
func readQuery(r *http.Request, allowed ...string) (query, error) {
	v, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return query{}, badRequest("the query string is malformed: %s", err)
	}
	for name, values := range v {
		if !contains(allowed, name) {
			return query{}, badRequest("unknown query parameter %q: allowed are %s", truncate(name, 64), strings.Join(allowed, ", "))
		}
		if len(values) > 1 {
			return query{}, badRequest("query parameter %s is given %d times: give it once", name, len(values))
		}
	}
	return query{v}, nil
}

func (q query) get(name string) string { return q.v.Get(name) }

// str reads an optional string of at most maxLen bytes.
func (q query) str(name string, maxLen int) (string, error) {
	s := q.get(name)
	if len(s) > maxLen {
		return "", badRequest("%s is longer than %d bytes", name, maxLen)
	}
	return s, nil
}

// integer reads an optional integer in [lo, hi], def when absent.
func (q query) integer(name string, lo, hi, def int64) (int64, error) {
	s := q.get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, badRequest("%s must be an integer from %d to %d, not %q", name, lo, hi, truncate(s, 32))
	}
	return n, nil
}

// oneOf reads an optional value among choices, "" when absent.
func (q query) oneOf(name string, choices ...string) (string, error) {
	s := q.get(name)
	if s != "" && !contains(choices, s) {
		return "", badRequest("%s must be one of %s, not %q", name, strings.Join(choices, ", "), truncate(s, 32))
	}
	return s, nil
}

// time reads an optional RFC 3339 time or a date (YYYY-MM-DD, in loc).
// A date means its start, or with endOfDay the start of the next day, so
// that from=D&to=D selects day D.
func (q query) time(name string, loc *time.Location, endOfDay bool) (*time.Time, error) {
	s := q.get(name)
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return &t, nil
	}
	d, err := time.ParseInLocation(time.DateOnly, s, loc)
	if err != nil {
		return nil, badRequest("%s must be an RFC 3339 time (2026-11-30T18:00:00Z) or a date (2026-11-30), not %q", name, truncate(s, 40))
	}
	if endOfDay {
		d = d.AddDate(0, 0, 1)
	}
	return &d, nil
}

// cursor reads a paging cursor of the given kind, 0 when absent.
func (q query) cursor(name, kind string) (int64, error) {
	s := q.get(name)
	if s == "" {
		return 0, nil
	}
	id, ok := decodeCursor(s, kind)
	if !ok {
		return 0, badRequest("%s is not a cursor Felix gave for this list: pass the nextCursor of the previous page unchanged", name)
	}
	return id, nil
}

// A cursor names the last item of a page (its id) and the list it belongs
// to, so that a cursor of one list is refused by another.
func encodeCursor(kind string, id int64) *string {
	if id == 0 {
		return nil // the last page
	}
	c := base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + strconv.FormatInt(id, 10)))
	return &c
}

func decodeCursor(s, kind string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, false
	}
	sep := strings.LastIndexByte(string(b), ':')
	if sep < 0 || string(b[:sep]) != kind {
		return 0, false
	}
	id, err := strconv.ParseInt(string(b[sep+1:]), 10, 64)
	// Only the exact text Felix makes: base64 alone also accepts other
	// spellings of the same bytes (CR and LF anywhere, even in strict
	// mode), and ParseInt other spellings of the same id ("+5", "05").
	if err != nil || id <= 0 || *encodeCursor(kind, id) != s {
		return 0, false
	}
	return id, true
}

// pathID reads the {id} of the request's path: a positive integer.
func pathID(r *http.Request) (int64, error) {
	s := r.PathValue("id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != s {
		return 0, badRequest("the key id in the path must be a positive integer, not %q", truncate(s, 32))
	}
	return id, nil
}

// boolean reads an optional boolean field; nil when absent or null.
func (o object) boolean(name string) (*bool, error) {
	if !o.has(name) {
		return nil, nil
	}
	var b bool
	if err := json.Unmarshal(o[name], &b); err != nil {
		return nil, badRequest("%s must be true or false, not %s", name, jsonKind(o[name]))
	}
	return &b, nil
}

// time reads an optional RFC 3339 time field. present tells whether the
// field was given at all (a null clears a value).
func (o object) time(name string) (t *time.Time, present bool, err error) {
	if _, present = o[name]; !present || !o.has(name) {
		return nil, present, nil
	}
	s, err := o.str(name, 64)
	if err != nil {
		return nil, true, badRequest("%s must be an RFC 3339 time (e.g. 2026-12-31T23:59:59Z) or null", name)
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, true, badRequest("%s must be an RFC 3339 time (e.g. 2026-12-31T23:59:59Z) or null, not %q", name, truncate(s, 40))
	}
	return &v, true, nil
}

// sub reads an object field holding a JSON object with only the allowed
// fields.
func (o object) sub(name string, allowed ...string) (object, error) {
	var sub object
	if err := json.Unmarshal(o[name], &sub); err != nil || sub == nil {
		return nil, badRequest("%s must be an object with %s, or null", name, strings.Join(allowed, " and "))
	}
	for field := range sub {
		if !contains(allowed, field) {
			return nil, badRequest("%s has the unknown field %q: allowed are %s", name, truncate(field, 64), strings.Join(allowed, ", "))
		}
	}
	return sub, nil
}
