package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/testwait"
)

// targetImage is the body the fake target answers 200 with.
const targetImage = `{"images":["ZTJlLWltYWdl"]}`

// plan decides how the fake target answers one request: after delay,
// with status.
type plan func(rng *rand.Rand) (delay time.Duration, status int)

func always200(delay time.Duration) plan {
	return func(*rand.Rand) (time.Duration, int) { return delay, http.StatusOK }
}

// fakeTarget is the image API behind felix: an httptest server on
// 127.0.0.1 that counts what reaches it.
type fakeTarget struct {
	srv  *httptest.Server
	hits atomic.Int64 // requests received
	held atomic.Int64 // requests whose answer is held back (see hold)
	mu   sync.Mutex
	rng  *rand.Rand
	plan plan
	gate chan struct{}   // non-nil while held: answers wait until it is closed
	ids  map[string]bool // X-Request-ID of every request received
}

func newTarget(t *testing.T, seed uint64, p plan) *fakeTarget {
	ft := &fakeTarget{rng: rand.New(rand.NewPCG(seed, 0x7a46e7)), plan: p, ids: map[string]bool{}}
	ft.srv = httptest.NewServer(http.HandlerFunc(ft.serve))
	t.Cleanup(ft.srv.Close)
	return ft
}

func (ft *fakeTarget) URL() string { return ft.srv.URL }

// received reports whether a request with felix's request ID id reached
// the target.
func (ft *fakeTarget) received(id string) bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return ft.ids[id]
}

// hold makes the target keep every answer back, once its planned delay
// is over, until release: the calls it holds are surely open in felix.
func (ft *fakeTarget) hold() {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.gate == nil {
		ft.gate = make(chan struct{})
	}
}

func (ft *fakeTarget) release() {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if ft.gate != nil {
		close(ft.gate)
		ft.gate = nil
	}
}

// waitHeld waits until the target holds at least one answer back.
func (ft *fakeTarget) waitHeld(timeout time.Duration) error {
	if !testwait.For(timeout, func() bool { return ft.held.Load() > 0 }) {
		return fmt.Errorf("the target held no request within %s", timeout)
	}
	return nil
}

func (ft *fakeTarget) setPlan(p plan) {
	ft.mu.Lock()
	ft.plan = p
	ft.mu.Unlock()
}

func (ft *fakeTarget) serve(w http.ResponseWriter, r *http.Request) {
	ft.hits.Add(1)
	ft.mu.Lock()
	ft.ids[r.Header.Get("X-Request-ID")] = true
	delay, status := ft.plan(ft.rng)
	ft.mu.Unlock()
	io.Copy(io.Discard, r.Body)
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done(): // felix died or gave up
			return
		}
	}
	ft.mu.Lock()
	gate := ft.gate
	ft.mu.Unlock()
	if gate != nil {
		ft.held.Add(1)
		select {
		case <-gate:
			ft.held.Add(-1)
		case <-r.Context().Done():
			ft.held.Add(-1)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Fake-Target", "1")
	w.WriteHeader(status)
	if status == http.StatusOK {
		io.WriteString(w, targetImage)
	} else {
		io.WriteString(w, `{"error":"fake target failure"}`)
	}
}

// newClient returns an HTTP client for load: keep-alive, bounded waits.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// answer is what a client got for one generate request.
type answer struct {
	status     int    // 0 when no response arrived
	code       string // the code of a felix error answer
	msg        string
	target     bool   // the answer is the fake target's
	err        error  // transport error, including a body cut short
	reqID      string // X-Request-ID: felix records it in calls.request_id
	retryAfter string
	took       time.Duration
	// replayed: felix answered from an Idempotency-Key's first answer.
	replayed bool
}

// refused reports that the connection was refused: the request never
// reached a felix process.
func (a answer) refused() bool { return a.err != nil && errors.Is(a.err, syscall.ECONNREFUSED) }

// settleFailed reports felix's 503 for a call the target answered 2xx
// but that could not be recorded: it may or may not have been charged.
func (a answer) settleFailed() bool {
	return a.status == http.StatusServiceUnavailable && a.code == "store_unavailable" && strings.Contains(a.msg, "target answered")
}

func (a answer) String() string {
	switch {
	case a.err != nil:
		return fmt.Sprintf("transport error after %s: %v", a.took.Round(time.Millisecond), a.err)
	case a.code != "":
		return fmt.Sprintf("%d %s (%s)", a.status, a.code, a.msg)
	}
	return fmt.Sprintf("%d (from target: %v)", a.status, a.target)
}

// generate sends one POST /api/generate with key to the felix at base and
// reads the whole answer.
func generate(ctx context.Context, hc *http.Client, base, key string) answer {
	return generateWith(ctx, hc, base, key)
}

// generateWith is generate with extra headers, in name, value pairs.
func generateWith(ctx context.Context, hc *http.Client, base, key string, headers ...string) answer {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/generate",
		strings.NewReader(`{"prompt":"a lighthouse at dusk","width":64,"height":64,"steps":2,"model":"e2e"}`))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, target: resp.Header.Get("X-Fake-Target") == "1", reqID: resp.Header.Get("X-Request-ID"),
		retryAfter: resp.Header.Get("Retry-After"), took: time.Since(start), replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	if err != nil {
		a.err = fmt.Errorf("status %d, body cut short: %w", resp.StatusCode, err)
		return a
	}
	if a.target {
		if resp.StatusCode == http.StatusOK && string(body) != targetImage {
			a.err = fmt.Errorf("status 200 with a body other than the target's: %q", body)
		}
		return a
	}
	var e struct{ Error, Code string }
	if json.Unmarshal(body, &e) == nil {
		a.code, a.msg = e.Code, e.Error
	}
	return a
}

// getJSON sends an admin or public GET and decodes the JSON answer.
func getJSON(hc *http.Client, url, bearer string, v any) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}
