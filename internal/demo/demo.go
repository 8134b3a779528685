// Package demo is the built-in image generator that `felix demo` uses as its
// target.
//
// It speaks the small part of the AUTOMATIC1111 (A1111) txt2img API that
// Felix forwards: a JSON request in, `{"images": ["<base64 PNG>", …],
// "parameters": {…}, "info": "…"}` out. The pictures are soft gradients with
// a few glowing circles and a band, coloured from a hash of the prompt and
// seed, so different prompts look different and the same request always
// gives the same bytes.
package demo

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Default limits, used when the matching Options field is zero.
const (
	DefaultMaxWidth  = 2048
	DefaultMaxHeight = 2048
	DefaultMaxBatch  = 8
)

// Request defaults and fixed bounds.
const (
	defaultSize  = 512
	defaultSteps = 20
	defaultModel = "felix-demo"
	maxSteps     = 1000
	maxBodyBytes = 1 << 20
)

// Options configures the demo target. Zero values mean the defaults above.
type Options struct {
	MaxWidth  int           // largest accepted width in pixels
	MaxHeight int           // largest accepted height in pixels
	MaxBatch  int           // largest accepted batch_size
	Delay     time.Duration // pause before answering, to imitate a GPU
	// Token, when non-empty, must be sent as `Authorization: Bearer <Token>`
	// (what Felix does with TARGET_API_KEY); other requests get 401.
	Token string
}

// NewTarget returns the demo target's handler. It serves
//
//	POST /api/generate       generate images (A1111-style JSON)
//	POST /sdapi/v1/txt2img   the same, under A1111's own path
//	GET  /healthz            {"status": "ok"}, without a token
//
// and answers everything else with the error JSON
// `{"error": "<sentence>", "code": "<snake_case>"}`.
func NewTarget(o Options) http.Handler {
	t := &target{opts: o}
	if t.opts.MaxWidth <= 0 {
		t.opts.MaxWidth = DefaultMaxWidth
	}
	if t.opts.MaxHeight <= 0 {
		t.opts.MaxHeight = DefaultMaxHeight
	}
	if t.opts.MaxBatch <= 0 {
		t.opts.MaxBatch = DefaultMaxBatch
	}
	t.enc = png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: &t.pngBuffers}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/generate", t.generate)
	mux.HandleFunc("POST /sdapi/v1/txt2img", t.generate)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/generate", "/sdapi/v1/txt2img":
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
				fmt.Sprintf("%s %s is not supported; use POST", r.Method, r.URL.Path))
		default:
			writeError(w, http.StatusNotFound, "not_found",
				fmt.Sprintf("the demo target has no %s; use POST /api/generate", r.URL.Path))
		}
	})
	return mux
}

type target struct {
	opts       Options
	enc        png.Encoder
	pngBuffers pngBufferPool
}

// pngBufferPool lets png.Encoder reuse its compression buffers across
// requests.
type pngBufferPool struct{ p sync.Pool }

func (p *pngBufferPool) Get() *png.EncoderBuffer {
	b, _ := p.p.Get().(*png.EncoderBuffer)
	return b
}

func (p *pngBufferPool) Put(b *png.EncoderBuffer) { p.p.Put(b) }

// request is the validated part of a generate request. params holds every
// field of the body, for the echo in the response.
type request struct {
	prompt string
	model  string
	width  int
	height int
	steps  int
	batch  int
	seed   int64
	params map[string]any
}

func (t *target) generate(w http.ResponseWriter, r *http.Request) {
	if !t.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="felix-demo"`)
		writeError(w, http.StatusUnauthorized, "invalid_token",
			"the demo target needs the header Authorization: Bearer <token> with its configured token")
		return
	}
	req, status, err := t.decode(w, r)
	if err != nil {
		code := "invalid_request"
		if status == http.StatusRequestEntityTooLarge {
			code = "body_too_large"
		}
		writeError(w, status, code, err.Error())
		return
	}
	if t.opts.Delay > 0 {
		timer := time.NewTimer(t.opts.Delay)
		select {
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			return
		}
	}

	params, err := json.Marshal(req.params)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "the demo target could not encode the parameters")
		return
	}
	info, err := json.Marshal(req.info())
	if err == nil {
		info, err = json.Marshal(string(info)) // A1111 sends info as a JSON string
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_error", "the demo target could not encode the info")
		return
	}

	// Stream the answer: each PNG goes straight through a base64 encoder to
	// the client, so a batch of large images is never held whole in memory.
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	img := newCanvas(req.width, req.height)
	bw.WriteString(`{"images":[`)
	for i := range req.batch {
		if i > 0 {
			bw.WriteByte(',')
		}
		render(img, scene(req.prompt, req.seed+int64(i)))
		bw.WriteByte('"')
		b64 := base64.NewEncoder(base64.StdEncoding, bw)
		if err := t.enc.Encode(b64, img.RGBA); err != nil {
			return // the client went away; nothing sensible is left to send
		}
		b64.Close()
		bw.WriteByte('"')
	}
	bw.WriteString(`],"parameters":`)
	bw.Write(params)
	bw.WriteString(`,"info":`)
	bw.Write(info)
	bw.WriteString("}\n")
	bw.Flush()
}

func (t *target) authorized(r *http.Request) bool {
	if t.opts.Token == "" {
		return true
	}
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(h[len(prefix):])), []byte(t.opts.Token)) == 1
}

// decode reads and validates the body. On failure it returns the HTTP
// status to answer and an error whose text is the sentence for the client.
func (t *target) decode(w http.ResponseWriter, r *http.Request) (request, int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return request{}, http.StatusRequestEntityTooLarge,
				fmt.Errorf("the request body is larger than %d bytes", maxBodyBytes)
		}
		if errors.Is(err, io.EOF) {
			return request{}, http.StatusBadRequest, errors.New("the request body is empty; send a JSON object")
		}
		return request{}, http.StatusBadRequest, fmt.Errorf("the request body is not a valid JSON object: %v", err)
	}
	if body == nil {
		return request{}, http.StatusBadRequest, errors.New("the request body must be a JSON object, not null")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return request{}, http.StatusBadRequest, errors.New("the request body must hold exactly one JSON object")
	}
	delete(body, "apiKey") // a key sent to the target by mistake is not echoed

	req := request{params: body}
	var err error
	if req.prompt, err = stringField(body, "prompt", ""); err != nil {
		return request{}, http.StatusBadRequest, err
	}
	if req.model, err = stringField(body, "model", defaultModel); err != nil {
		return request{}, http.StatusBadRequest, err
	}
	if req.width, err = intField(body, "width", defaultSize, 1, t.opts.MaxWidth); err != nil {
		return request{}, http.StatusBadRequest, err
	}
	if req.height, err = intField(body, "height", defaultSize, 1, t.opts.MaxHeight); err != nil {
		return request{}, http.StatusBadRequest, err
	}
	if req.steps, err = intField(body, "steps", defaultSteps, 1, maxSteps); err != nil {
		return request{}, http.StatusBadRequest, err
	}
	if req.batch, err = intField(body, "batch_size", 1, 1, t.opts.MaxBatch); err != nil {
		return request{}, http.StatusBadRequest, err
	}
	seed, err := intField(body, "seed", -1, -1, math.MaxInt32)
	if err != nil {
		return request{}, http.StatusBadRequest, err
	}
	if seed == -1 { // A1111's "random": here derived from the prompt, to stay deterministic
		seed = int(promptSeed(req.prompt))
	}
	req.seed = int64(seed)
	body["prompt"], body["model"] = req.prompt, req.model
	body["width"], body["height"], body["steps"], body["batch_size"], body["seed"] =
		req.width, req.height, req.steps, req.batch, req.seed
	return req, 0, nil
}

// info is the A1111-style description of what was generated.
func (req request) info() map[string]any {
	seeds := make([]int64, req.batch)
	for i := range seeds {
		seeds[i] = req.seed + int64(i)
	}
	return map[string]any{
		"prompt":        req.prompt,
		"seed":          req.seed,
		"all_seeds":     seeds,
		"width":         req.width,
		"height":        req.height,
		"steps":         req.steps,
		"batch_size":    req.batch,
		"sd_model_name": req.model,
		"generator":     "felix demo target: gradients coloured by a hash of the prompt and seed",
	}
}

func stringField(body map[string]any, name, def string) (string, error) {
	v, ok := body[name]
	if !ok || v == nil {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s must be a string, got %s", name, jsonType(v))
	}
	return s, nil
}

func intField(body map[string]any, name string, def, lo, hi int) (int, error) {
	v, ok := body[name]
	if !ok || v == nil {
		return def, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s must be an integer, got %s", name, jsonType(v))
	}
	i, err := n.Int64()
	if err != nil {
		// Accept 512.0, refuse 512.5 and numbers beyond int64.
		f, ferr := n.Float64()
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, fmt.Errorf("%s must be an integer between %d and %d, got %s", name, lo, hi, n)
		}
		i = int64(f)
	}
	if i < int64(lo) || i > int64(hi) {
		return 0, fmt.Errorf("%s must be between %d and %d, got %d", name, lo, hi, i)
	}
	return int(i), nil
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "null"
}

func writeError(w http.ResponseWriter, status int, code, sentence string) {
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{sentence, code})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
