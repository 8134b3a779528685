package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/felix-gateway/felix/internal/quota"
)

var fuzzLimits = Limits{MaxBodyBytes: 1 << 20, MaxWidth: 2048, MaxHeight: 2048, MaxSteps: 150, MaxBatchSize: 8}

// FuzzDecodeGenerate: the generate decoder never panics, and what it
// accepts is forwarded as one JSON object with a non-empty prompt, sizes
// within the limits, no apiKey, and every other field unchanged.
func FuzzDecodeGenerate(f *testing.F) {
	for _, s := range []string{
		`{"apiKey":"k","prompt":"a cat","width":512,"height":512,"steps":20,"batch_size":1,"model":"default"}`,
		`{"prompt":"x","extra":{"nested":[1,2,{"a":null}]},"cfg_scale":7.5}`,
		`{"prompt":"<b>&</b>","width":null}`,
		`{"prompt":"a","prompt":""}`,
		`{"prompt":"\u00e9\ud83d\ude00","seed":-1}`,
		`[]`, `null`, `{"prompt":1e999}`, `{"prompt":"a"} x`, ``,
		`{"prompt":"\ud800"}`, `{"prompt":"a","\udc00x":1}`, "{\"prompt\":\"a\xff\"}", `{"prompt":"\\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeGenerate(body, fuzzLimits)
		if err != nil {
			if _, ok := err.(*apiError); !ok {
				t.Fatalf("error %v is not an apiError", err)
			}
			return
		}
		var in, out map[string]json.RawMessage
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		// What Felix checked is what it forwards: decoding the body made no
		// U+FFFD that the client did not send (of invalid UTF-8 or of an
		// unpaired surrogate escape).
		var decoded any
		json.Unmarshal(body, &decoded)
		sent := bytes.Count(body, []byte("\uFFFD")) + len(replacementEscape.FindAll(body, -1))
		if got := replacements(decoded); got > sent {
			t.Fatalf("accepted %q, whose decoding has %d U+FFFD where the client sent %d", body, got, sent)
		}
		if err := json.Unmarshal(req.forward, &out); err != nil {
			t.Fatalf("forwarded body is not a JSON object: %v (%q)", err, req.forward)
		}
		if _, ok := out["apiKey"]; ok {
			t.Fatal("apiKey forwarded")
		}
		var prompt string
		if json.Unmarshal(out["prompt"], &prompt) != nil || strings.TrimSpace(prompt) == "" {
			t.Fatalf("forwarded prompt %s", out["prompt"])
		}
		if req.batch < 1 || req.batch > int64(fuzzLimits.MaxBatchSize) {
			t.Fatalf("batch %d out of limits", req.batch)
		}
		delete(in, "apiKey")
		if len(in) != len(out) {
			t.Fatalf("forwarded %d fields, want %d", len(out), len(in))
		}
		for k, v := range in {
			var a, b bytes.Buffer
			json.Compact(&a, v)
			json.Compact(&b, out[k])
			if a.String() != b.String() {
				t.Fatalf("field %q changed: %s → %s", k, a.String(), b.String())
			}
		}
	})
}

var replacementEscape = regexp.MustCompile(`\\u[fF]{3}[dD]`)

// replacements counts U+FFFD in the names and strings of a decoded value.
func replacements(v any) int {
	switch v := v.(type) {
	case string:
		return strings.Count(v, "\uFFFD")
	case []any:
		n := 0
		for _, e := range v {
			n += replacements(e)
		}
		return n
	case map[string]any:
		n := 0
		for k, e := range v {
			n += strings.Count(k, "\uFFFD") + replacements(e)
		}
		return n
	}
	return 0
}

// FuzzAdminBody: the admin decoders never panic and accept only what
// they promise.
func FuzzAdminBody(f *testing.F) {
	for _, s := range []string{
		`{"apiKey":"k","initialRemainingCalls":100}`, `{"initialRemainingCalls":0,"name":"ops"}`,
		`{"apiKey":"k","remainingCalls":-1}`, `{"remainingCalls":9007199254740993}`, `{"x":1}`, `{}`, `1`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, err := decodeObject(body)
		if err != nil {
			return
		}
		if obj.only("apiKey", "initialRemainingCalls", "name") != nil {
			return
		}
		n, err := obj.requiredInt("initialRemainingCalls", 0, maxCalls)
		if err == nil && (n < 0 || n > maxCalls) {
			t.Fatalf("accepted %d", n)
		}
		if name, err := obj.str("name", 200); err == nil && len(name) > 200 {
			t.Fatalf("accepted a name of %d bytes", len(name))
		}
	})
}

// FuzzClientKey: key extraction never panics, and a key it returns is one
// the client sent and that quota accepts.
func FuzzClientKey(f *testing.F) {
	f.Add("Bearer fx_abc", "", "")
	f.Add("", "key-1", "key-1")
	f.Add("bearer  spaced ", "x", "")
	f.Add("Basic abc", "", "bad\x01")
	f.Fuzz(func(t *testing.T, authorization, header, body string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", authorization)
		r.Header.Set("X-API-Key", header)
		key, err := clientKey(r, body)
		if err != nil {
			return
		}
		if quota.ValidateKey(key) != nil || !utf8.ValidString(key) {
			t.Fatalf("returned invalid key %q", key)
		}
		if key != body && key != r.Header.Get("X-API-Key") && !strings.Contains(r.Header.Get("Authorization"), key) {
			t.Fatalf("returned key %q the client did not send", key)
		}
	})
}

// FuzzSplitObject: splitObject and encode agree with encoding/json, which
// they replace on the request path: the same bodies are one JSON object,
// with the same fields and values, re-encoded byte for byte the same.
func FuzzSplitObject(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, "\t{\"a\" :\n1 }\r\n", `{"prompt":"a cat","width":512}`,
		`{"a":"}\"]","b":[{"c":"{"},[]],"d":{"e":[1,{"f":null}]}}`,
		`{"n":-1.5e+3,"t":true,"f":false,"z":null,"s":""}`,
		`{"\u0070rompt":"x","a\"b":1,"a\\b":2,"\n":3,"é":4,"<&>":5,"\u2028":6,"\u00e9":7}`,
		`{"a":1,"a":2}`, `{"a":1} {}`, `[1]`, `null`, `"x"`, `{"a":1,}`, `{"a"}`, ``, `{"a":[1 2]}`,
		"{\"a\xff\":1}", `{"a":"\ud800"}`, `{"b":1,"a":{"y":1, "x":2}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want map[string]json.RawMessage
		dec := json.NewDecoder(bytes.NewReader(body))
		isObject := dec.Decode(&want) == nil && want != nil
		if isObject {
			_, err := dec.Token()
			isObject = err == io.EOF
		}
		got, ok := splitObject(body)
		if ok != isObject {
			t.Fatalf("splitObject(%q): one object %v, encoding/json says %v", body, ok, isObject)
		}
		if !ok {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("splitObject(%q): %d fields, encoding/json %d", body, len(got), len(want))
		}
		for name, v := range want {
			if !bytes.Equal(got[name], v) {
				t.Fatalf("splitObject(%q): field %q is %q, encoding/json %q", body, name, got[name], v)
			}
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(want); err != nil {
			t.Fatal(err)
		}
		if enc := got.encode(); !bytes.Equal(enc, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))) {
			t.Fatalf("encode(%q) = %q, encoding/json %q", body, enc, buf.Bytes())
		}
	})
}

// BenchmarkDecodeGenerate decodes the benchmark's generate body.
func BenchmarkDecodeGenerate(b *testing.B) {
	body := []byte(`{"prompt":"bench","width":512,"height":512}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeGenerate(body, fuzzLimits); err != nil {
			b.Fatal(err)
		}
	}
}
