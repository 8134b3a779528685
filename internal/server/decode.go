package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
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
	obj, ok := splitObject(body)
	if !ok {
		return nil, objectError(body)
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

// objectError says why body is not exactly one JSON object, in
// encoding/json's words.
func objectError(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("request body is empty: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) || errors.Is(err, io.ErrUnexpectedEOF) {
			return badRequest("request body must be one complete JSON object")
		}
		return badRequest("request body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if obj == nil {
		return badRequest("request body must be a JSON object, not null")
	}
	return badRequest("request body has data after the JSON object")
}

// splitObject splits body into its fields when it is exactly one valid
// JSON object, as encoding/json would decode it into an object (the last
// of two same names wins), with each value the raw text of body. It
// replaces encoding/json's reflection into a map, which made a generate
// body's decoding three times as slow (BenchmarkDecodeGenerate: 10.5
// against 3.5 µs); FuzzSplitObject holds the two equal.
func splitObject(body []byte) (object, bool) {
	if !json.Valid(body) { // from here on every string and value is well formed
		return nil, false
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return nil, false
	}
	obj := object{}
	if i = skipSpace(body, i+1); body[i] == '}' {
		return obj, true
	}
	for {
		end := stringEnd(body, i)
		name := unquote(body[i:end])
		i = skipSpace(body, skipSpace(body, end)+1) // past the colon
		end = valueEnd(body, i)
		obj[name] = body[i:end:end]
		if i = skipSpace(body, end); body[i] == '}' {
			return obj, true
		}
		i = skipSpace(body, i+1) // past the comma
	}
}

func skipSpace(js []byte, i int) int {
	for i < len(js) && (js[i] == ' ' || js[i] == '\t' || js[i] == '\n' || js[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at js[i].
func stringEnd(js []byte, i int) int {
	for i++; js[i] != '"'; i++ {
		if js[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd returns the index just past the value that starts at js[i].
func valueEnd(js []byte, i int) int {
	switch js[i] {
	case '"':
		return stringEnd(js, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch js[i] {
			case '"':
				i = stringEnd(js, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(js) && strings.IndexByte(",}] \t\n\r", js[i]) < 0 { // a number or a literal
		i++
	}
	return i
}

// unquote returns the string a valid quoted JSON string stands for.
func unquote(quoted []byte) string {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner)
	}
	var s string
	json.Unmarshal(quoted, &s) // cannot fail on a valid JSON string
	return s
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
	raw := o[name] // valid JSON: from splitObject or json.Unmarshal
	if raw[0] != '"' {
		return "", badRequest("%s must be a string", name)
	}
	s := unquote(raw)
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

// encode re-encodes the object as encoding/json encodes it (sorted
// names, values compacted), the values otherwise untouched.
func (o object) encode() []byte {
	names := make([]string, 0, len(o))
	size := 2
	for name, v := range o {
		names = append(names, name)
		size += len(name) + len(v) + 4
	}
	slices.Sort(names)
	buf := bytes.NewBuffer(make([]byte, 0, size))
	buf.WriteByte('{')
	for i, name := range names {
		if i > 0 {
			buf.WriteByte(',')
		}
		writeName(buf, name)
		buf.WriteByte(':')
		if err := json.Compact(buf, o[name]); err != nil {
			panic("server: re-encoding a decoded object: " + err.Error()) // values came from the decoder
		}
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// writeName writes a field name as encoding/json quotes it.
func writeName(buf *bytes.Buffer, name string) {
	plain := true
	for i := 0; i < len(name) && plain; i++ {
		plain = name[i] >= 0x20 && name[i] < utf8.RuneSelf && name[i] != '"' && name[i] != '\\'
	}
	if plain {
		buf.WriteByte('"')
		buf.WriteString(name)
		buf.WriteByte('"')
		return
	}
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	enc.Encode(name)            // a string always encodes
	buf.Truncate(buf.Len() - 1) // Encode's newline
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
