package target_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/target"
	"github.com/felix-gateway/felix/internal/target/targettest"
)

var epoch = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// newPool returns a pool of n targets http://gpu0.test … on a fake clock.
func newPool(t *testing.T, n int, configure ...func(*target.Options)) (*target.Pool, *targettest.Clock) {
	t.Helper()
	clock := targettest.NewClock(epoch)
	o := target.Options{URLs: newPoolURLs(n), Path: "/api/generate", Clock: clock}
	for _, c := range configure {
		c(&o)
	}
	return target.New(o), clock
}

// newPoolURLs returns http://gpu0.test, http://gpu1.test, …
func newPoolURLs(n int) []*url.URL {
	var urls []*url.URL
	for i := range n {
		u, _ := url.Parse(fmt.Sprintf("http://gpu%d.test", i))
		urls = append(urls, u)
	}
	return urls
}

func withCap(n int) func(*target.Options) { return func(o *target.Options) { o.MaxInFlight = n } }

// acquire takes a slot that must be free now.
func acquire(t *testing.T, p *target.Pool, key string) target.Slot {
	t.Helper()
	s, err := p.Acquire(context.Background(), key)
	if err != nil {
		t.Fatalf("acquire for %s: %v", key, err)
	}
	return s
}

// index returns the position of the slot's target in the pool.
func index(p *target.Pool, s target.Slot) int {
	for i, tg := range p.Targets() {
		if tg == s.Target() {
			return i
		}
	}
	return -1
}

var errRefused = fmt.Errorf("dial tcp 127.0.0.1:9: connect: %w", syscall.ECONNREFUSED)

// TestSelection: a call goes to the up target with a free slot and the
// fewest calls in flight, the earlier one in configuration order among
// equals.
func TestSelection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets int
		cap     int
		// before: slots to take (target index they must land on), then
		// targets whose call got no answer (released NoAnswer), then
		// slots to give back (by their order in before)
		before  []int
		down    []int
		release []int
		want    int // where the next call goes; -1: it would wait
	}{
		{"first of equals", 3, 0, nil, nil, nil, 0},
		{"fewest in flight", 3, 0, []int{0, 1, 2, 0, 1}, nil, nil, 2},
		{"a freed slot makes a target the least busy", 3, 0, []int{0, 1, 2, 0, 1, 2}, nil, []int{4}, 1},
		{"ties go to configuration order", 3, 0, []int{0, 1, 2}, nil, []int{2, 1}, 1},
		{"a down target is left out", 3, 0, nil, []int{0}, nil, 1},
		{"a full target is left out", 2, 1, []int{0}, nil, nil, 1},
		{"every target full: wait", 2, 1, []int{0, 1}, nil, nil, -1},
		{"the cap is per target", 2, 2, []int{0, 1, 0}, nil, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPool(t, tc.targets, withCap(tc.cap))
			for _, i := range tc.down {
				s := acquire(t, p, "k")
				for index(p, s) != i { // take slots until one lands on i
					s = acquire(t, p, "k")
				}
				p.Release(s, target.NoAnswer, errRefused)
			}
			var held []target.Slot
			for n, want := range tc.before {
				s := acquire(t, p, "k")
				if got := index(p, s); got != want {
					t.Fatalf("slot %d: got target %d, want %d", n, got, want)
				}
				held = append(held, s)
			}
			for _, n := range tc.release {
				p.Release(held[n], target.Answered, nil)
			}
			if tc.want < 0 {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				if _, err := p.Acquire(ctx, "k"); !errors.Is(err, context.Canceled) {
					t.Errorf("got %v, want the call to wait (context.Canceled here)", err)
				}
				return
			}
			if got := index(p, acquire(t, p, "k")); got != tc.want {
				t.Errorf("next call: got target %d, want %d", got, tc.want)
			}
		})
	}
}

// TestPassiveHealth: a call that got no answer leaves its target out for
// the cooldown, then the next call tries it again; an answer of any
// status (Answered) leaves it up.
func TestPassiveHealth(t *testing.T) {
	const cooldown = 10 * time.Second
	p, clock := newPool(t, 2, func(o *target.Options) { o.Cooldown = cooldown })

	p.Release(acquire(t, p, "k"), target.Answered, nil) // e.g. a 500: still up
	if st := p.Stats().Targets[0]; !st.Up || st.Served != 1 || st.Failed != 0 {
		t.Fatalf("after an answer: got %+v, want up, served 1, failed 0", st)
	}
	p.Release(acquire(t, p, "k"), target.NoAnswer, errRefused)
	st := p.Stats().Targets[0]
	if st.Up || st.Failed != 1 || st.LastError == nil || !strings.HasPrefix(*st.LastError, "the connection was refused") {
		t.Fatalf("after no answer: got %+v, want down, failed 1, lastError about the refusal", st)
	}
	s := acquire(t, p, "k")
	if got := index(p, s); got != 1 {
		t.Errorf("during the cooldown: got target %d, want 1", got)
	}
	p.Release(s, target.Answered, nil)

	clock.Advance(cooldown - time.Nanosecond)
	if p.Stats().Targets[0].Up {
		t.Errorf("target up before its cooldown ended")
	}
	clock.Advance(time.Nanosecond)
	if st := p.Stats().Targets[0]; !st.Up || st.LastError == nil {
		t.Errorf("after the cooldown: got %+v, want up with its last error kept", st)
	}
	if got := index(p, acquire(t, p, "k")); got != 0 {
		t.Errorf("after the cooldown: got target %d, want 0 tried again", got)
	}
}

// TestLoneTarget: a pool of one target does not leave it out after a call
// got no answer (there is no other to turn to): the next call tries it.
func TestLoneTarget(t *testing.T) {
	p, _ := newPool(t, 1)
	p.Release(acquire(t, p, "k"), target.NoAnswer, errRefused)
	if st := p.Stats().Targets[0]; !st.Up || st.Failed != 1 || st.LastError == nil {
		t.Errorf("got %+v, want up, failed 1 and the error kept", st)
	}
	acquire(t, p, "k")
}

// TestNoTarget: with no target up a call is refused at once with
// ErrNoTarget and a Retry-After of the time left until the first cooldown
// ends; calls waiting when the last target goes down get the same.
func TestNoTarget(t *testing.T) {
	p, clock := newPool(t, 2, withCap(1), func(o *target.Options) { o.Cooldown = 10 * time.Second })
	a, b := acquire(t, p, "k"), acquire(t, p, "k")
	w := acquireAsync(p, "k")
	waitQueued(t, p, 1)

	p.Release(a, target.NoAnswer, errRefused) // 10 s cooldown from now
	clock.Advance(3500 * time.Millisecond)
	p.Release(b, target.NoAnswer, errRefused) // 10 s from now: the first ends in 6.5 s
	wantBusy(t, receive(t, w).err, target.ErrNoTarget, 7)
	if n := p.Stats().Queue.Length; n != 0 {
		t.Errorf("queue length: got %d, want 0", n)
	}
	_, err := p.Acquire(context.Background(), "k")
	wantBusy(t, err, target.ErrNoTarget, 7)
}

func wantBusy(t *testing.T, err, want error, retryAfter int) {
	t.Helper()
	var be *target.BusyError
	if !errors.As(err, &be) || !errors.Is(err, want) || be.RetryAfter != retryAfter {
		t.Errorf("got %v (%+v), want %v with Retry-After %d", err, be, want, retryAfter)
	}
}

// TestStats is the JSON of GET /api/targets.
func TestStats(t *testing.T) {
	p, _ := newPool(t, 2, withCap(2), func(o *target.Options) { o.QueueMax = 7 })
	p.Release(acquire(t, p, "k"), target.Answered, nil)
	acquire(t, p, "k")
	p.Release(acquire(t, p, "k"), target.NoAnswer, fmt.Errorf("read tcp: %w", syscall.ECONNRESET))
	got, _ := json.Marshal(p.Stats())
	want := `{"targets":[` +
		`{"url":"http://gpu0.test","up":true,"inFlight":1,"maxInFlight":2,"served":1,"failed":0,"lastError":null},` +
		`{"url":"http://gpu1.test","up":false,"inFlight":0,"maxInFlight":2,"served":0,"failed":1,"lastError":"the connection was closed before an answer (read tcp: connection reset by peer)"}],` +
		`"queue":{"length":0,"max":7}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestEndpoint: calls go to the base URL (its path prefix kept) + Path.
func TestEndpoint(t *testing.T) {
	for _, tc := range []struct{ base, path, want string }{
		{"http://gpu.test", "/api/generate", "http://gpu.test/api/generate"},
		{"http://gpu.test/", "/api/generate", "http://gpu.test/api/generate"},
		{"https://gpu.test/sd/", "/sdapi/v1/txt2img", "https://gpu.test/sd/sdapi/v1/txt2img"},
	} {
		u, _ := url.Parse(tc.base)
		p := target.New(target.Options{URLs: []*url.URL{u}, Path: tc.path})
		if got := p.Targets()[0].Endpoint().String(); got != tc.want {
			t.Errorf("%s + %s: got %s, want %s", tc.base, tc.path, got, tc.want)
		}
		if got := p.Targets()[0].String(); got != tc.base {
			t.Errorf("name: got %s, want %s as configured", got, tc.base)
		}
	}
}
