package target_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/target"
	"github.com/felix-gateway/felix/internal/testwait"
)

type acquired struct {
	slot target.Slot
	err  error
}

// acquireAsync starts an Acquire in its own goroutine.
func acquireAsync(p *target.Pool, key string) <-chan acquired {
	return acquireCtx(context.Background(), p, key)
}

func acquireCtx(ctx context.Context, p *target.Pool, key string) <-chan acquired {
	c := make(chan acquired, 1)
	go func() {
		s, err := p.Acquire(ctx, key)
		c <- acquired{s, err}
	}()
	return c
}

// receive waits for an Acquire's result, failing the test after 10 s.
func receive(t *testing.T, c <-chan acquired) acquired {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Acquire has not returned after 10s")
		return acquired{}
	}
}

// waitQueued waits until n calls wait in the queue.
func waitQueued(t *testing.T, p *target.Pool, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d calls queued", n), func() bool { return p.Stats().Queue.Length == n })
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 10*time.Second, what, cond)
}

// TestFairQueue: waiting calls are served round-robin between keys and in
// arrival order within a key, whatever the number each key sends.
func TestFairQueue(t *testing.T) {
	for _, tc := range []struct {
		name   string
		arrive string // one letter per call (its key), in arrival order
		want   string // the order in which they get the slot
	}{
		{"one key: FIFO", "aaaa", "aaaa"},
		{"two keys alternate", "aaaaabb", "ababaaa"},
		{"keys take turns in the order they arrived", "cbaabc", "cbacba"},
		{"a key sending 50 cannot hold back one sending 2", strings.Repeat("a", 50) + "bb", "abab" + strings.Repeat("a", 48)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := newPool(t, 1, withCap(1))
			held := acquire(t, p, "x")
			type grant struct {
				label string
				slot  target.Slot
			}
			grants := make(chan grant, len(tc.arrive))
			counts := map[byte]int{}
			for i := range len(tc.arrive) {
				key := tc.arrive[i]
				counts[key]++
				label := fmt.Sprintf("%c%d", key, counts[key])
				go func() {
					s, err := p.Acquire(context.Background(), string(key))
					if err != nil {
						t.Errorf("%s: %v", label, err)
					}
					grants <- grant{label, s}
				}()
				waitQueued(t, p, i+1) // so that arrival order is known
			}
			var got, want []string
			seen := map[byte]int{}
			for i := range len(tc.want) {
				key := tc.want[i]
				seen[key]++
				want = append(want, fmt.Sprintf("%c%d", key, seen[key]))
			}
			for range tc.arrive {
				p.Release(held, target.Answered, nil) // one slot: one grant at a time
				var g grant
				select {
				case g = <-grants:
				case <-time.After(10 * time.Second):
					t.Fatalf("no grant after 10s; so far %v", got)
				}
				got = append(got, g.label)
				held = g.slot
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

// TestQueueFull: QueueMax counts waiting calls only; one more is refused
// at once with ErrQueueFull and a Retry-After of the queue's estimated
// drain time: (waiting + 1) × the mean slot hold ÷ the slots.
func TestQueueFull(t *testing.T) {
	p, clock := newPool(t, 2, withCap(1), func(o *target.Options) { o.QueueMax = 3 })
	a := acquire(t, p, "k")
	clock.Advance(8 * time.Second) // a served call held its slot 8 s
	p.Release(a, target.Answered, nil)
	acquire(t, p, "k")
	acquire(t, p, "k") // both targets full: 2 in flight, not counted in the queue
	for i := range 3 {
		acquireAsync(p, "k")
		waitQueued(t, p, i+1)
	}
	_, err := p.Acquire(context.Background(), "k")
	wantBusy(t, err, target.ErrQueueFull, 16) // (3+1) × 8 s ÷ 2 slots
	if n := p.Stats().Queue.Length; n != 3 {
		t.Errorf("queue length after a refusal: got %d, want 3", n)
	}
}

// TestQueueTimeout: a call waits at most QueueTimeout, then gets
// ErrQueueTimeout and leaves the queue.
func TestQueueTimeout(t *testing.T) {
	const timeout = 60 * time.Second
	p, clock := newPool(t, 1, withCap(1), func(o *target.Options) { o.QueueTimeout = timeout })
	held := acquire(t, p, "k")
	w := acquireAsync(p, "k")
	waitQueued(t, p, 1)
	clock.Advance(timeout - time.Nanosecond)
	if n := p.Stats().Queue.Length; n != 1 {
		t.Fatalf("queue length before the timeout: got %d, want 1", n)
	}
	clock.Advance(time.Nanosecond)
	wantBusy(t, receive(t, w).err, target.ErrQueueTimeout, 1) // no call served yet: 1 s
	if n := p.Stats().Queue.Length; n != 0 {
		t.Errorf("queue length after the timeout: got %d, want 0", n)
	}
	p.Release(held, target.Answered, nil)
	if st := p.Stats().Targets[0]; st.InFlight != 0 {
		t.Errorf("in flight after the release: got %d, want 0 (the expired call got nothing)", st.InFlight)
	}
}

// TestLeaveQueue: a waiting call whose context ends leaves the queue at
// once, and the next free slot goes to the call behind it.
func TestLeaveQueue(t *testing.T) {
	p, clock := newPool(t, 1, withCap(1))
	held := acquire(t, p, "k")
	ctx, cancel := context.WithCancel(context.Background())
	gone := acquireCtx(ctx, p, "k")
	waitQueued(t, p, 1)
	next := acquireAsync(p, "k")
	waitQueued(t, p, 2)

	cancel()
	if r := receive(t, gone); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled waiter: got %v, want context.Canceled", r.err)
	}
	if n := p.Stats().Queue.Length; n != 1 {
		t.Errorf("queue length once the cancelled call returned: got %d, want 1", n)
	}
	if n := clock.Pending(); n != 1 {
		t.Errorf("queue timers: got %d, want 1 (the cancelled call's is stopped)", n)
	}
	p.Release(held, target.Answered, nil)
	if r := receive(t, next); r.err != nil {
		t.Fatalf("call behind it: %v", r.err)
	}
	if st := p.Stats(); st.Targets[0].InFlight != 1 || st.Queue.Length != 0 {
		t.Errorf("got %+v, want 1 in flight and nobody waiting", st)
	}
}

// TestHandoff: a freed slot is given to exactly one waiter before Release
// returns: no waiter races for it and none is woken for nothing.
func TestHandoff(t *testing.T) {
	p, _ := newPool(t, 1, withCap(1))
	held := acquire(t, p, "k")
	results := make([]<-chan acquired, 10)
	for i := range results {
		results[i] = acquireAsync(p, "k")
		waitQueued(t, p, i+1)
	}
	p.Release(held, target.Answered, nil)
	// Synchronously, before any waiter has run: the slot is taken already.
	if st := p.Stats(); st.Targets[0].InFlight != 1 || st.Queue.Length != 9 {
		t.Fatalf("right after the release: got %d in flight and %d waiting, want 1 and 9", st.Targets[0].InFlight, st.Queue.Length)
	}
	if r := receive(t, results[0]); r.err != nil {
		t.Fatalf("first waiter: %v", r.err)
	}
}

// TestCloseQueue: closing the queue answers every waiting call ErrShutdown
// and refuses calls that would wait; a free slot is still given.
func TestCloseQueue(t *testing.T) {
	p, _ := newPool(t, 2, withCap(1))
	a := acquire(t, p, "k")
	acquire(t, p, "k")
	w := acquireAsync(p, "k")
	waitQueued(t, p, 1)
	p.CloseQueue()
	wantBusy(t, receive(t, w).err, target.ErrShutdown, 1)
	_, err := p.Acquire(context.Background(), "k")
	wantBusy(t, err, target.ErrShutdown, 1)
	p.Release(a, target.Answered, nil)
	acquire(t, p, "k")
}

// TestConcurrentCalls hammers a small pool from many goroutines under
// -race: no target ever runs more than its cap, every call gets a slot
// (no lost wake-up: the test would time out), and the counters add up.
func TestConcurrentCalls(t *testing.T) {
	const targets, limit, workers, keys, callsEach = 3, 2, 200, 12, 10
	p := target.New(target.Options{URLs: newPoolURLs(targets), MaxInFlight: limit, QueueMax: workers, QueueTimeout: time.Minute})
	index := map[*target.Target]int{}
	for i, tg := range p.Targets() {
		index[tg] = i
	}
	var running [targets]atomic.Int64
	var highest [targets]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key := fmt.Sprint("key", w%keys)
			for range callsEach {
				s, err := p.Acquire(context.Background(), key)
				if err != nil {
					t.Errorf("%s: %v", key, err)
					return
				}
				i := index[s.Target()]
				n := running[i].Add(1)
				for h := highest[i].Load(); n > h && !highest[i].CompareAndSwap(h, n); h = highest[i].Load() {
				}
				runtime.Gosched() // a job: others try for the slot meanwhile
				running[i].Add(-1)
				p.Release(s, target.Answered, nil)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("calls still waiting after 2 minutes (a lost wake-up?): %+v", p.Stats())
	}
	var served int64
	for i, st := range p.Stats().Targets {
		served += st.Served
		if h := highest[i].Load(); h > limit {
			t.Errorf("target %d ran %d calls at once, cap %d", i, h, limit)
		}
		if st.InFlight != 0 {
			t.Errorf("target %d: %d in flight at the end, want 0", i, st.InFlight)
		}
	}
	if served != workers*callsEach {
		t.Errorf("served: got %d, want %d", served, workers*callsEach)
	}
}
