package target_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/target"
)

// prober is a fake HTTP client for health checks: each host answers what
// its entry says, and every probe is recorded.
type prober struct {
	mu      sync.Mutex
	answers map[string]func() (int, error) // host → status or error
	probes  []*http.Request
}

func (f *prober) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.probes = append(f.probes, r)
	answer := f.answers[r.URL.Host]
	f.mu.Unlock()
	status, err := answer()
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
}

func (f *prober) set(host string, status int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[host] = func() (int, error) { return status, err }
}

func (f *prober) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.probes)
}

func newProbedPool(t *testing.T, n int, configure ...func(*target.Options)) (*target.Pool, *prober, func(time.Duration)) {
	f := &prober{answers: map[string]func() (int, error){}}
	for i := range n {
		f.set(fmt.Sprintf("gpu%d.test", i), http.StatusOK, nil)
	}
	p, clock := newPool(t, n, append([]func(*target.Options){func(o *target.Options) {
		o.HealthPath = "/internal/ping"
		o.HealthHeader = http.Header{"Authorization": {"Bearer target-secret"}}
		o.Client = &http.Client{Transport: f}
		o.Cooldown = 10 * time.Second
	}}, configure...)...)
	return p, f, clock.Advance
}

// TestProbe: GET the health path; a 2xx marks the target up at once,
// anything else (another status, an error, no answer in time) down.
func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		err       error
		up        bool
		lastError string // its start
	}{
		{"200", 200, nil, true, ""},
		{"204", 204, nil, true, ""},
		{"301", 301, nil, false, "the health check /internal/ping answered 301, not 2xx"},
		{"500", 500, nil, false, "the health check /internal/ping answered 500, not 2xx"},
		{"refused", 0, errRefused, false, "the health check /internal/ping got no answer within 5s: the connection was refused"},
		{"no answer in time", 0, context.DeadlineExceeded, false, "the health check /internal/ping got no answer within 5s: no answer before the timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, f, _ := newProbedPool(t, 2)
			f.set("gpu1.test", tc.status, tc.err)
			p.Probe(context.Background())
			st := p.Stats().Targets
			if !st[0].Up {
				t.Errorf("the healthy target is down: %+v", st[0])
			}
			if st[1].Up != tc.up || (tc.lastError == "") != (st[1].LastError == nil) ||
				st[1].LastError != nil && !strings.HasPrefix(*st[1].LastError, tc.lastError) {
				t.Errorf("got %+v (lastError %v), want up %v and lastError starting %q", st[1], deref(st[1].LastError), tc.up, tc.lastError)
			}
			if st[1].Failed != 0 {
				t.Errorf("failed: got %d, want 0 (probes are not calls)", st[1].Failed)
			}
			for _, r := range f.probes {
				if r.Method != http.MethodGet || r.URL.Path != "/internal/ping" || r.Header.Get("Authorization") != "Bearer target-secret" {
					t.Errorf("probe %s %s with Authorization %q, want GET /internal/ping with the target's key", r.Method, r.URL, r.Header.Get("Authorization"))
				}
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestProbeAndCooldown: a successful probe ends a cooldown at once; a
// failed one keeps the target down after its cooldown has passed.
func TestProbeAndCooldown(t *testing.T) {
	p, f, advance := newProbedPool(t, 2)
	p.Release(acquire(t, p, "k"), target.NoAnswer, errRefused)
	p.Probe(context.Background())
	if !p.Stats().Targets[0].Up {
		t.Errorf("a 2xx probe did not end the cooldown")
	}

	f.set("gpu0.test", 503, nil)
	p.Probe(context.Background())
	p.Release(acquire(t, p, "k"), target.NoAnswer, errRefused) // gpu1 down for 10 s too
	advance(11 * time.Second)
	st := p.Stats().Targets
	if st[0].Up || !st[1].Up {
		t.Errorf("after the cooldown: got up %v and %v, want gpu0 down (failed probe) and gpu1 up", st[0].Up, st[1].Up)
	}
	_, err := p.Acquire(context.Background(), "k")
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
}

// TestProbeWakesWaiters: a target coming back up (by probe or at the end
// of its cooldown) takes waiting calls at once.
func TestProbeWakesWaiters(t *testing.T) {
	t.Run("probe", func(t *testing.T) {
		p, f, _ := newProbedPool(t, 2, withCap(1))
		f.set("gpu0.test", 500, nil)
		p.Probe(context.Background())
		acquire(t, p, "k") // gpu1 full
		w := acquireAsync(p, "k")
		waitQueued(t, p, 1)
		f.set("gpu0.test", 200, nil)
		p.Probe(context.Background())
		if r := receive(t, w); r.err != nil || index(p, r.slot) != 0 {
			t.Errorf("waiter: got target %d, %v; want gpu0", index(p, r.slot), r.err)
		}
	})
	t.Run("cooldown", func(t *testing.T) {
		p, clock := newPool(t, 2, withCap(1), func(o *target.Options) { o.Cooldown = 10 * time.Second })
		p.Release(acquire(t, p, "k"), target.NoAnswer, errRefused)
		acquire(t, p, "k") // gpu1 full
		w := acquireAsync(p, "k")
		waitQueued(t, p, 1)
		clock.Advance(10 * time.Second)
		if r := receive(t, w); r.err != nil || index(p, r.slot) != 0 {
			t.Errorf("waiter: got target %d, %v; want gpu0", index(p, r.slot), r.err)
		}
	})
}

// TestRunHealth probes at once, then once per interval, until stopped;
// without a health path it probes nothing.
func TestRunHealth(t *testing.T) {
	f := &prober{answers: map[string]func() (int, error){}}
	f.set("gpu0.test", 200, nil)
	p, clock := newPool(t, 1, func(o *target.Options) {
		o.HealthPath, o.HealthInterval, o.Client = "/health", 5*time.Second, &http.Client{Transport: f}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.RunHealth(ctx); close(done) }()
	for want := 1; want <= 3; want++ {
		waitFor(t, fmt.Sprintf("probe %d", want), func() bool { return f.count() == want && clock.Pending() == 1 })
		clock.Advance(5 * time.Second)
	}
	waitFor(t, "probe 4", func() bool { return f.count() == 4 })
	cancel()
	<-done

	p, _ = newPool(t, 1)
	p.RunHealth(context.Background()) // returns at once
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errRefused, "the connection was refused (dial tcp 127.0.0.1:9: connect: connection refused)"},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), "the connection was closed before an answer (read: unexpected EOF)"},
		{context.DeadlineExceeded, "no answer before the timeout (context deadline exceeded)"},
		{errors.New("tls: handshake failure"), "no answer (tls: handshake failure)"},
	} {
		p, _ := newPool(t, 1)
		p.Release(acquire(t, p, "k"), target.NoAnswer, tc.err)
		if got := deref(p.Stats().Targets[0].LastError); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}
