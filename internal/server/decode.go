package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// object is a decoded JSON object whose values are kept as raw JSON, so
// that fields Felix does not know are forwarded byte for byte.
type object map[string]json.RawMessage

// decodeObject parses a request body that must be exactly one JSON object.
func decodeObject(body []byte) (object, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("request body is empty: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj object
	if err := dec.Decode(&obj); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, badRequest("request body must be one complete JSON object")
		}
		return nil, badRequest("request body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if obj == nil {
		return nil, badRequest("request body must be a JSON object, not null")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("request body has data after the JSON object")
	}
	// encoding/json reads invalid UTF-8 and unpaired surrogates as U+FFFD,
	// while unknown fields are forwarded as sent: refuse them, so that what
	// Felix checked is what the target gets.
	if !utf8.Valid(body) {
		return nil, badRequest("request body is not valid UTF-8: send JSON text in UTF-8")
	}
	if unpairedSurrogate(body) {
		return nil, badRequest(`request body has a \u escape of half a UTF-16 surrogate pair: escape characters outside the BMP as both halves, e.g. \ud83d\ude00`)
	}
	return obj, nil
}

// unpairedSurrogate reports whether valid JSON text has a \u escape of a
// UTF-16 surrogate that is not a high one directly followed by a low one.
// Backslashes occur only in strings, so every escape is found.
func unpairedSurrogate(js []byte) bool {
	for i := 0; i < len(js); i++ {
		if js[i] != '\\' {
			continue
		}
		i++ // the escaped character
		r := escapedRune(js, i)
		switch {
		case !utf16.IsSurrogate(r):
		case r >= 0xdc00: // a low half first
			return true
		case i+10 < len(js) && js[i+5] == '\\':
			if low := escapedRune(js, i+6); low < 0xdc00 || low > 0xdfff {
				return true
			}
			i += 10
		default:
			return true
		}
	}
	return false
}

// escapedRune returns the rune of a "uXXXX" escape at js[i:], or -1.
func escapedRune(js []byte, i int) rune {
	if i+4 >= len(js) || js[i] != 'u' {
		return -1
	}
	n, err := strconv.ParseUint(string(js[i+1:i+5]), 16, 32)
	if err != nil {
		return -1
	}
	return rune(n)
}

// has reports whether the field is present and not null.
func (o object) has(name string) bool {
	v, ok := o[name]
	return ok && string(v) != "null"
}

// str reads an optional string field of at most maxLen bytes.
func (o object) str(name string, maxLen int) (string, error) {
	if !o.has(name) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(o[name], &s); err != nil {
		return "", badRequest("%s must be a string", name)
	}
	if len(s) > maxLen {
		return "", badRequest("%s is longer than %d bytes", name, maxLen)
	}
	return s, nil
}

// requiredStr reads a string field that must be present and not blank.
func (o object) requiredStr(name string, maxLen int) (string, error) {
	if !o.has(name) {
		return "", badRequest("%s is required", name)
	}
	s, err := o.str(name, maxLen)
	if err == nil && strings.TrimSpace(s) == "" {
		err = badRequest("%s must not be empty", name)
	}
	return s, err
}

// integer reads an optional integer field in [lo, hi]; ok is false when
// the field is absent or null.
func (o object) integer(name string, lo, hi int64) (n int64, ok bool, err error) {
	if !o.has(name) {
		return 0, false, nil
	}
	raw := string(o[name])
	n, perr := strconv.ParseInt(raw, 10, 64)
	if perr != nil {
		var f float64
		if json.Unmarshal(o[name], &f) == nil {
			if f < float64(lo) || f > float64(hi) {
				return 0, true, badRequest("%s must be an integer from %d to %d", name, lo, hi)
			}
			return 0, true, badRequest("%s must be a whole number, not %s", name, raw)
		}
		return 0, true, badRequest("%s must be an integer, not %s", name, jsonKind(o[name]))
	}
	if n < lo || n > hi {
		return 0, true, badRequest("%s must be an integer from %d to %d, not %d", name, lo, hi, n)
	}
	return n, true, nil
}

// requiredInt reads an integer field that must be present.
func (o object) requiredInt(name string, lo, hi int64) (int64, error) {
	n, ok, err := o.integer(name, lo, hi)
	if err == nil && !ok {
		err = badRequest("%s is required: an integer from %d to %d", name, lo, hi)
	}
	return n, err
}

// only refuses fields other than the allowed ones.
func (o object) only(allowed ...string) error {
	for name := range o {
		if !contains(allowed, name) {
			return badRequest("unknown field %q: allowed fields are %s", truncate(name, 64), strings.Join(allowed, ", "))
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func jsonKind(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

// encode re-encodes the object with sorted keys and values untouched.
func (o object) encode() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(o); err != nil {
		panic("server: re-encoding a decoded object: " + err.Error()) // values came from the decoder
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// Limits bound the generate parameters Felix accepts.
type Limits struct {
	MaxBodyBytes int64
	MaxWidth     int
	MaxHeight    int
	MaxSteps     int
	MaxBatchSize int
}

// generateRequest is a decoded POST /api/generate body.
type generateRequest struct {
	apiKey  string // from the body; "" when absent
	batch   int64  // batch_size, 1 when absent
	forward []byte // the body to send to the target, apiKey removed
}

// decodeGenerate validates a generate body against the limits.
func decodeGenerate(body []byte, lim Limits) (generateRequest, error) {
	var req generateRequest
	obj, err := decodeObject(body)
	if err != nil {
		return req, err
	}
	if req.apiKey, err = obj.str("apiKey", 1<<10); err != nil {
		return req, err
	}
	if _, err := obj.requiredStr("prompt", int(lim.MaxBodyBytes)); err != nil {
		return req, err
	}
	if _, err := obj.str("model", 256); err != nil {
		return req, err
	}
	for _, f := range []struct {
		name string
		max  int
	}{{"width", lim.MaxWidth}, {"height", lim.MaxHeight}, {"steps", lim.MaxSteps}, {"batch_size", lim.MaxBatchSize}} {
		if _, _, err := obj.integer(f.name, 1, int64(f.max)); err != nil {
			return req, err
		}
	}
	req.batch = 1
	if n, ok, _ := obj.integer("batch_size", 1, int64(lim.MaxBatchSize)); ok {
		req.batch = n
	}
	delete(obj, "apiKey")
	req.forward = obj.encode()
	return req, nil
}
