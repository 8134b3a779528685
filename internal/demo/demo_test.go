package demo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// answer is the A1111-style success body.
type answer struct {
	Images     []string       `json:"images"`
	Parameters map[string]any `json:"parameters"`
	Info       string         `json:"info"`
}

// errorBody is the error JSON.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func post(t *testing.T, h http.Handler, path, body string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func generate(t *testing.T, h http.Handler, body string) answer {
	t.Helper()
	w := post(t, h, "/api/generate", body)
	if w.Code != http.StatusOK {
		t.Fatalf("POST /api/generate %s: got status %d, want 200; body %s", body, w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var a answer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("decode answer: %v; body %.200s", err, w.Body)
	}
	return a
}

func decodePNG(t *testing.T, b64 string) image.Image {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("base64: %v", err)
	}
	if !bytes.HasPrefix(raw, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("image does not start with the PNG signature: % x", raw[:min(8, len(raw))])
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("png.Decode: %v", err)
	}
	return img
}

func TestGenerateSizesAndBatch(t *testing.T) {
	h := NewTarget(Options{})
	tests := []struct {
		body          string
		width, height int
		count         int
	}{
		{`{"prompt":"a cat"}`, 512, 512, 1},
		{`{"prompt":"a cat","width":64,"height":32}`, 64, 32, 1},
		{`{"prompt":"a cat","width":48,"height":80,"batch_size":3}`, 48, 80, 3},
		{`{"prompt":"a cat","width":16.0,"height":16,"batch_size":2,"steps":5,"model":"x"}`, 16, 16, 2},
		{`{"prompt":"","width":8,"height":8,"seed":null}`, 8, 8, 1},
	}
	for _, tt := range tests {
		a := generate(t, h, tt.body)
		if len(a.Images) != tt.count {
			t.Errorf("%s: got %d images, want %d", tt.body, len(a.Images), tt.count)
		}
		for i, b64 := range a.Images {
			b := decodePNG(t, b64).Bounds()
			if b.Dx() != tt.width || b.Dy() != tt.height {
				t.Errorf("%s: image %d is %dx%d, want %dx%d", tt.body, i, b.Dx(), b.Dy(), tt.width, tt.height)
			}
		}
		if got := a.Parameters["width"]; got != float64(tt.width) {
			t.Errorf("%s: parameters.width = %v, want %d", tt.body, got, tt.width)
		}
		if got := a.Parameters["batch_size"]; got != float64(tt.count) {
			t.Errorf("%s: parameters.batch_size = %v, want %d", tt.body, got, tt.count)
		}
		var info map[string]any
		if err := json.Unmarshal([]byte(a.Info), &info); err != nil {
			t.Errorf("%s: info is not a JSON string: %v", tt.body, err)
		}
	}
}

func TestGenerateEchoesParameters(t *testing.T) {
	a := generate(t, NewTarget(Options{}),
		`{"prompt":"p","width":8,"height":8,"negative_prompt":"blur","sampler_name":"Euler a","apiKey":"secret"}`)
	for k, want := range map[string]any{
		"prompt": "p", "negative_prompt": "blur", "sampler_name": "Euler a",
		"steps": float64(defaultSteps), "model": defaultModel,
	} {
		if got := a.Parameters[k]; got != want {
			t.Errorf("parameters[%q] = %v, want %v", k, got, want)
		}
	}
	if _, ok := a.Parameters["apiKey"]; ok {
		t.Error("parameters echo the apiKey; want it dropped")
	}
}

func TestSamePathOnA1111Route(t *testing.T) {
	h := NewTarget(Options{})
	body := `{"prompt":"lighthouse","width":32,"height":32}`
	a := post(t, h, "/api/generate", body)
	b := post(t, h, "/sdapi/v1/txt2img", body)
	if a.Code != http.StatusOK || b.Code != http.StatusOK {
		t.Fatalf("got statuses %d and %d, want 200 and 200", a.Code, b.Code)
	}
	if !bytes.Equal(a.Body.Bytes(), b.Body.Bytes()) {
		t.Error("/sdapi/v1/txt2img answered differently from /api/generate")
	}
}

func TestDeterministic(t *testing.T) {
	h := NewTarget(Options{})
	body := `{"prompt":"a red fox in the snow","width":96,"height":64,"batch_size":2}`
	first, second := generate(t, h, body), generate(t, h, body)
	for i := range first.Images {
		if first.Images[i] != second.Images[i] {
			t.Errorf("image %d differs between two identical requests", i)
		}
	}
	if first.Images[0] == first.Images[1] {
		t.Error("the two images of one batch are identical; want them to differ")
	}

	// An explicit seed equal to the derived one gives the same picture.
	seeded := generate(t, h, `{"prompt":"a red fox in the snow","width":96,"height":64,"seed":`+
		jsonInt(promptSeed("a red fox in the snow")+1)+`}`)
	if seeded.Images[0] != first.Images[1] {
		t.Error("seed = derived seed + 1 does not reproduce the batch's second image")
	}
}

func jsonInt(i int64) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestDifferentPromptsDiffer(t *testing.T) {
	h := NewTarget(Options{})
	prompts := []string{"a cat", "a dog", "a cat ", "sunset over the sea", ""}
	imgs := make([]*image.RGBA, len(prompts))
	for i, p := range prompts {
		body, _ := json.Marshal(map[string]any{"prompt": p, "width": 64, "height": 64})
		img := decodePNG(t, generate(t, h, string(body)).Images[0])
		rgba := image.NewRGBA(img.Bounds())
		for y := range 64 {
			for x := range 64 {
				rgba.Set(x, y, img.At(x, y))
			}
		}
		imgs[i] = rgba
	}
	for i := range imgs {
		for j := i + 1; j < len(imgs); j++ {
			if d := meanAbsDiff(imgs[i], imgs[j]); d < 8 {
				t.Errorf("prompts %q and %q: mean pixel difference %.1f, want ≥ 8 (visibly different)", prompts[i], prompts[j], d)
			}
		}
	}
}

func meanAbsDiff(a, b *image.RGBA) float64 {
	var sum int
	for i := range a.Pix {
		d := int(a.Pix[i]) - int(b.Pix[i])
		sum += max(d, -d)
	}
	return float64(sum) / float64(len(a.Pix))
}

func TestImageIsNotFlat(t *testing.T) {
	c := newCanvas(128, 128)
	render(c, scene("flat?", 1))
	lo, hi := 255, 0
	for i := 0; i < len(c.Pix); i += 4 {
		l := int(c.Pix[i]) + int(c.Pix[i+1]) + int(c.Pix[i+2])
		lo, hi = min(lo, l), max(hi, l)
		if c.Pix[i+3] != 255 {
			t.Fatalf("pixel %d has alpha %d, want 255", i/4, c.Pix[i+3])
		}
	}
	if hi-lo < 60 {
		t.Errorf("brightness range %d..%d is too flat for a gradient", lo, hi)
	}
}

func TestBadRequests(t *testing.T) {
	h := NewTarget(Options{MaxWidth: 100, MaxHeight: 80, MaxBatch: 2})
	tests := []struct {
		name, body string
		status     int
		code       string
		mention    string // the sentence must name the problem
	}{
		{"not JSON", `prompt=cat`, 400, "invalid_request", "JSON"},
		{"truncated", `{"prompt":"cat"`, 400, "invalid_request", "JSON"},
		{"empty", ``, 400, "invalid_request", "empty"},
		{"array", `[1,2]`, 400, "invalid_request", "JSON"},
		{"null", `null`, 400, "invalid_request", "null"},
		{"two objects", `{"prompt":"a"}{"prompt":"b"}`, 400, "invalid_request", "one JSON object"},
		{"width over limit", `{"prompt":"a","width":101}`, 400, "invalid_request", "width"},
		{"height over limit", `{"prompt":"a","height":81,"width":8}`, 400, "invalid_request", "height"},
		{"batch over limit", `{"prompt":"a","width":8,"height":8,"batch_size":3}`, 400, "invalid_request", "batch_size"},
		{"zero width", `{"prompt":"a","width":0}`, 400, "invalid_request", "width"},
		{"negative height", `{"prompt":"a","height":-5}`, 400, "invalid_request", "height"},
		{"fractional width", `{"prompt":"a","width":10.5}`, 400, "invalid_request", "width"},
		{"huge width", `{"prompt":"a","width":1e300}`, 400, "invalid_request", "width"},
		{"string width", `{"prompt":"a","width":"64"}`, 400, "invalid_request", "width must be an integer"},
		{"zero steps", `{"prompt":"a","steps":0}`, 400, "invalid_request", "steps"},
		{"prompt not string", `{"prompt":42}`, 400, "invalid_request", "prompt must be a string"},
		{"bad seed", `{"prompt":"a","seed":-2}`, 400, "invalid_request", "seed"},
		{"too large", `{"prompt":"` + strings.Repeat("x", maxBodyBytes) + `"}`, 413, "body_too_large", "larger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := post(t, h, "/api/generate", tt.body)
			checkError(t, w, tt.status, tt.code, tt.mention)
		})
	}
}

func checkError(t *testing.T, w *httptest.ResponseRecorder, status int, code, mention string) {
	t.Helper()
	if w.Code != status {
		t.Errorf("got status %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	var e errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body is not JSON: %v; body %s", err, w.Body)
	}
	if e.Code != code {
		t.Errorf("code: got %q, want %q", e.Code, code)
	}
	if !strings.Contains(e.Error, mention) {
		t.Errorf("error %q does not mention %q", e.Error, mention)
	}
}

func TestToken(t *testing.T) {
	h := NewTarget(Options{Token: "s3cret"})
	body := `{"prompt":"a","width":8,"height":8}`
	tests := []struct {
		name, auth string
		status     int
	}{
		{"no header", "", 401},
		{"wrong token", "Bearer nope", 401},
		{"prefix of token", "Bearer s3c", 401},
		{"not bearer", "Basic s3cret", 401},
		{"right token", "Bearer s3cret", 200},
		{"lower-case scheme", "bearer s3cret", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w *httptest.ResponseRecorder
			if tt.auth == "" {
				w = post(t, h, "/api/generate", body)
			} else {
				w = post(t, h, "/api/generate", body, "Authorization", tt.auth)
			}
			if tt.status == 200 {
				if w.Code != 200 {
					t.Fatalf("got status %d, want 200; body %s", w.Code, w.Body)
				}
				return
			}
			checkError(t, w, tt.status, "invalid_token", "Bearer")
			if w.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	// Without a configured token any request passes.
	if w := post(t, NewTarget(Options{}), "/api/generate", body, "Authorization", "Bearer whatever"); w.Code != 200 {
		t.Errorf("no token configured: got status %d, want 200", w.Code)
	}
}

func TestRoutes(t *testing.T) {
	h := NewTarget(Options{Token: "t"})
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/api/generate", 405, "method_not_allowed"},
		{"PUT", "/sdapi/v1/txt2img", 405, "method_not_allowed"},
		{"GET", "/nope", 404, "not_found"},
		{"GET", "/healthz", 200, ""},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))
		if w.Code != tt.status {
			t.Errorf("%s %s: got status %d, want %d", tt.method, tt.path, w.Code, tt.status)
			continue
		}
		if tt.code == "" {
			continue
		}
		var e errorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code != tt.code {
			t.Errorf("%s %s: got body %s, want code %q", tt.method, tt.path, w.Body, tt.code)
		}
	}
}

// TestDelayHonoursCancel: a caller that gives up ends the delay at once:
// with a delay of an hour, the handler returns after the cancel (or the
// test times out) without writing an answer.
func TestDelayHonoursCancel(t *testing.T) {
	h := NewTarget(Options{Delay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/api/generate", strings.NewReader(`{"prompt":"a","width":8,"height":8}`))
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		h.ServeHTTP(w, r)
		close(done)
	}()
	cancel()
	<-done
	if w.Body.Len() != 0 || w.Flushed || len(w.Header()) != 0 {
		t.Errorf("the cancelled call wrote an answer: status %d, headers %v, %d bytes", w.Code, w.Header(), w.Body.Len())
	}
}

func BenchmarkRender512(b *testing.B) {
	c := newCanvas(512, 512)
	s := scene("benchmark", 42)
	b.ReportAllocs()
	for b.Loop() {
		render(c, s)
	}
}

func BenchmarkGenerate512(b *testing.B) {
	h := NewTarget(Options{})
	body := []byte(`{"prompt":"benchmark","width":512,"height":512}`)
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/api/generate", bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("got status %d", w.Code)
		}
	}
}
