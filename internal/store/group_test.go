package store

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/testwait"
)

// A fake write: its value, and whether it fails. The fake commit's result
// for it is the value doubled.
type fakeWrite struct {
	v    int
	fail bool
}

// blockingGroup returns a group whose first commit waits for release()
// after closing entered, so that later writes queue up behind it; commit
// runs each commit. The group is closed when the test ends.
func blockingGroup(t *testing.T, commit func(writes []fakeWrite, results []int) error) (g *group[fakeWrite, int], entered chan struct{}, release func()) {
	entered, released := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	g = newGroup(func(_ context.Context, writes []fakeWrite, results []int) error {
		once.Do(func() {
			close(entered)
			<-released
		})
		return commit(writes, results)
	}, func(error) bool { return true }, nil)
	release = func() { releaseOnce.Do(func() { close(released) }) }
	t.Cleanup(func() {
		release() // also when the test failed before releasing
		g.close()
	})
	return g, entered, release
}

// double is a fake commit: each write's result is its value doubled; a
// failing write fails the whole group.
func double(writes []fakeWrite, results []int) error {
	for i, w := range writes {
		if w.fail {
			return errBadWrite
		}
		results[i] = 2 * w.v
	}
	return nil
}

var errBadWrite = errors.New("bad write")

// waitQueued waits until exactly n writes are queued.
func waitQueued[W, R any](t *testing.T, g *group[W, R], n int) {
	t.Helper()
	if !testwait.For(10*time.Second, func() bool { return g.queued() == n }) {
		t.Fatalf("%d writes queued, want %d", g.queued(), n)
	}
}

// TestGroupShares: writes that arrive while a commit is under way share
// the next one, and each gets its own result.
func TestGroupShares(t *testing.T) {
	var commits atomic.Int64
	g, entered, release := blockingGroup(t, func(writes []fakeWrite, results []int) error {
		commits.Add(1)
		return double(writes, results)
	})

	var wg sync.WaitGroup
	wg.Go(func() { g.do(context.Background(), fakeWrite{v: -1}) })
	<-entered
	const n = 50
	results := make([]int, n)
	for i := range n {
		wg.Go(func() {
			r, err := g.do(context.Background(), fakeWrite{v: i})
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	waitQueued(t, g, n)
	release()
	wg.Wait()
	if got := commits.Load(); got != 2 {
		t.Errorf("%d commits for 1 + %d writes queued behind it, want 2", got, n)
	}
	for i, r := range results {
		if r != 2*i {
			t.Errorf("write %d: result %d, want %d", i, r, 2*i)
		}
	}
}

// TestGroupIsolatesFailures: a failing write fails alone; the others in
// its batch are retried one by one and succeed with their own results.
func TestGroupIsolatesFailures(t *testing.T) {
	g, entered, release := blockingGroup(t, double)
	var wg sync.WaitGroup
	wg.Go(func() { g.do(context.Background(), fakeWrite{}) })
	<-entered
	errs := make([]error, 10)
	results := make([]int, 10)
	for i := range errs {
		wg.Go(func() { results[i], errs[i] = g.do(context.Background(), fakeWrite{v: i, fail: i == 3}) })
	}
	waitQueued(t, g, len(errs))
	release()
	wg.Wait()
	for i, err := range errs {
		switch {
		case i == 3 && !errors.Is(err, errBadWrite):
			t.Errorf("write 3: got %v, want the bad write's error", err)
		case i != 3 && (err != nil || results[i] != 2*i):
			t.Errorf("write %d: got %d, %v; want %d, nil", i, results[i], err, 2*i)
		}
	}
}

// TestGroupNoStaleResults: a write retried after its group failed reports
// only what its own successful attempt produced.
func TestGroupNoStaleResults(t *testing.T) {
	var attempt atomic.Int64
	g, entered, release := blockingGroup(t, func(writes []fakeWrite, results []int) error {
		for i := range results {
			if results[i] != 0 {
				t.Errorf("attempt %d got a result already filled in: %d", attempt.Load(), results[i])
			}
			results[i] = 99 // what a failing attempt may leave behind
		}
		attempt.Add(1)
		return double(writes, results)
	})
	var wg sync.WaitGroup
	wg.Go(func() { g.do(context.Background(), fakeWrite{}) })
	<-entered
	var bad, good error
	var r int
	wg.Go(func() { _, bad = g.do(context.Background(), fakeWrite{fail: true}) })
	wg.Go(func() { r, good = g.do(context.Background(), fakeWrite{v: 4}) })
	waitQueued(t, g, 2)
	release()
	wg.Wait()
	if !errors.Is(bad, errBadWrite) || good != nil || r != 8 {
		t.Errorf("got (%v) and (%d, %v); want the bad write's error and (8, nil)", bad, r, good)
	}
}

func TestGroupClosed(t *testing.T) {
	g := newGroup(func(context.Context, []fakeWrite, []int) error { return nil }, func(error) bool { return true }, nil)
	g.close()
	g.close()
	if _, err := g.do(context.Background(), fakeWrite{}); !errors.Is(err, errClosed) {
		t.Errorf("write after close: got %v, want errClosed", err)
	}
}

// TestGroupUnknownOutcome: when the commit's outcome is unknown (not a
// rollback), no write of the group is retried, so none can apply twice.
func TestGroupUnknownOutcome(t *testing.T) {
	lost := errors.New("connection lost")
	var runs atomic.Int64
	g, entered, release := blockingGroup(t, func(writes []fakeWrite, _ []int) error {
		runs.Add(int64(len(writes)))
		return lost
	})
	g.rolledBack = func(error) bool { return false }
	var wg sync.WaitGroup
	wg.Go(func() { g.do(context.Background(), fakeWrite{}) })
	<-entered
	for range 20 {
		wg.Go(func() {
			if _, err := g.do(context.Background(), fakeWrite{}); !errors.Is(err, lost) {
				t.Errorf("got %v, want the commit's error", err)
			}
		})
	}
	waitQueued(t, g, 20)
	release()
	wg.Wait()
	if got := runs.Load(); got != 21 {
		t.Errorf("writes ran %d times, want 21 (no retries)", got)
	}
}

// TestGroupCallerLeavesWhileQueued: a write whose context ends while it
// waits in the queue is taken out: it never runs, and its caller is told
// at once.
func TestGroupCallerLeavesWhileQueued(t *testing.T) {
	var ran []int
	var mu sync.Mutex
	g, entered, release := blockingGroup(t, func(writes []fakeWrite, results []int) error {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range writes {
			ran = append(ran, w.v)
		}
		return double(writes, results)
	})
	var wg sync.WaitGroup
	wg.Go(func() { g.do(context.Background(), fakeWrite{v: 1}) })
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	wg.Go(func() { _, err = g.do(ctx, fakeWrite{v: 2}) })
	waitQueued(t, g, 1)
	cancel()
	waitQueued(t, g, 0)
	wg.Go(func() { g.do(context.Background(), fakeWrite{v: 3}) })
	waitQueued(t, g, 1)
	release()
	wg.Wait()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled write: got %v, want context.Canceled", err)
	}
	if want := []int{1, 3}; len(ran) != 2 || ran[0] != 1 || ran[1] != 3 {
		t.Errorf("writes run: %v, want %v (the cancelled one never)", ran, want)
	}
}

// TestGroupCallerLeavesDuringCommit: a caller whose context ends after its
// write joined a group waits for that group and learns its result, so
// that it knows the write was applied.
func TestGroupCallerLeavesDuringCommit(t *testing.T) {
	g, entered, release := blockingGroup(t, double)
	ctx, cancel := context.WithCancel(context.Background())
	type answer struct {
		r   int
		err error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := g.do(ctx, fakeWrite{v: 21})
		got <- answer{r, err}
	}()
	<-entered // the write is in the group being committed
	cancel()
	release()
	if a := <-got; a.err != nil || a.r != 42 {
		t.Errorf("got %d, %v; want 42, nil (the group's outcome, not the context's error)", a.r, a.err)
	}
}

// TestGroupDeadline: a group ends at the earliest deadline of its
// writers (or commitTimeout, if sooner).
func TestGroupDeadline(t *testing.T) {
	deadlines := make(chan time.Time, 1)
	g := newGroup(func(ctx context.Context, _ []fakeWrite, _ []int) error {
		d, _ := ctx.Deadline()
		deadlines <- d
		return nil
	}, func(error) bool { return false }, nil)
	defer g.close()
	want := time.Now().Add(commitTimeout / 2)
	ctx, cancel := context.WithDeadline(context.Background(), want)
	defer cancel()
	if _, err := g.do(ctx, fakeWrite{}); err != nil {
		t.Fatal(err)
	}
	if got := <-deadlines; !got.Equal(want) {
		t.Errorf("the group's deadline is %v, want the writer's %v", got, want)
	}
	g.do(context.Background(), fakeWrite{})
	if got := <-deadlines; got.After(time.Now().Add(commitTimeout)) {
		t.Errorf("the group's deadline is %v, want at most commitTimeout away", got)
	}
}

// commitLog is an Observer that records every group commit.
type commitLog struct {
	mu      sync.Mutex
	commits []observedCommit
}

type observedCommit struct {
	size   int
	failed bool
}

func (l *commitLog) GroupCommitted(size int, elapsed time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.commits = append(l.commits, observedCommit{size, err != nil})
}

// TestGroupObserved: the observer hears of every transaction the group
// runs, with its size and whether it failed: one group of 1, one of 5
// that fails, then each of the 5 alone (one of them failing again).
func TestGroupObserved(t *testing.T) {
	log := &commitLog{}
	entered, released := make(chan struct{}), make(chan struct{})
	var once sync.Once
	g := newGroup(func(_ context.Context, writes []fakeWrite, results []int) error {
		once.Do(func() {
			close(entered)
			<-released
		})
		return double(writes, results)
	}, func(error) bool { return true }, log)
	defer g.close()

	var wg sync.WaitGroup
	wg.Go(func() { g.do(context.Background(), fakeWrite{}) })
	<-entered
	for i := range 5 {
		wg.Go(func() { g.do(context.Background(), fakeWrite{v: i, fail: i == 2}) })
	}
	waitQueued(t, g, 5)
	close(released)
	wg.Wait()

	// The writes queue in any order, so the singles are compared as a set.
	log.mu.Lock()
	defer log.mu.Unlock()
	got := log.commits
	singlesFailed := 0
	for _, c := range got[min(2, len(got)):] {
		if c.size == 1 && c.failed {
			singlesFailed++
		}
	}
	if len(got) != 7 || got[0] != (observedCommit{1, false}) || got[1] != (observedCommit{5, true}) || singlesFailed != 1 {
		t.Errorf("observed commits %+v, want {1 ok}, {5 failed}, then 5 of size 1 with one failed", got)
	}
}

// gatheringGroup returns a group whose gather asks for want writes and
// waits for them up to wait, and the sizes of the groups it committed.
func gatheringGroup(t *testing.T, want int, wait time.Duration) (g *group[fakeWrite, int], sizes func() []int) {
	var (
		mu  sync.Mutex
		got []int
	)
	g = newGroup(func(_ context.Context, writes []fakeWrite, results []int) error {
		mu.Lock()
		got = append(got, len(writes))
		mu.Unlock()
		return double(writes, results)
	}, func(error) bool { return true }, nil)
	// Set before the first write, whose hand-over to the loop orders them.
	g.gather, g.gatherWait = func() int { return want }, wait
	t.Cleanup(g.close)
	return g, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// doAsync runs one write in the background; its result arrives on the
// channel.
func doAsync(g *group[fakeWrite, int], v int) <-chan groupDone[int] {
	done := make(chan groupDone[int], 1)
	go func() {
		r, err := g.do(context.Background(), fakeWrite{v: v})
		done <- groupDone[int]{r, err}
	}()
	return done
}

// await returns a write's outcome, failing the test if it takes longer
// than a minute (the group kept it waiting).
func await(t *testing.T, done <-chan groupDone[int]) groupDone[int] {
	t.Helper()
	select {
	case d := <-done:
		return d
	case <-time.After(time.Minute):
		t.Fatal("a write was still waiting after a minute")
		return groupDone[int]{}
	}
}

// TestGroupGathers: with a gather asking for three writes, the first two
// wait in the queue (longer than any lone commit would take) until the
// third arrives, and the three share one commit.
func TestGroupGathers(t *testing.T) {
	g, sizes := gatheringGroup(t, 3, time.Hour)
	var done []<-chan groupDone[int]
	for i := range 3 {
		done = append(done, doAsync(g, i))
		if i < 2 {
			waitQueued(t, g, i+1)
		}
	}
	for i, d := range done {
		if got := await(t, d); got.err != nil || got.r != 2*i {
			t.Errorf("write %d: got %d, %v; want %d, nil", i, got.r, got.err, 2*i)
		}
	}
	if got := sizes(); !slices.Equal(got, []int{3}) {
		t.Errorf("groups of %v, want one group of 3", got)
	}
}

// TestGroupGatherBounded: a gather that asks for more writes than come
// keeps a lone write waiting no longer than its bound, and one asking for
// none (a quiet gateway) none at all.
func TestGroupGatherBounded(t *testing.T) {
	for _, c := range []struct {
		name string
		want int
		wait time.Duration
	}{
		{"more than come", 100, 50 * time.Millisecond},
		{"none", 0, time.Hour},
		{"below none", -1, time.Hour},
		{"as many as queued", 1, time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, sizes := gatheringGroup(t, c.want, c.wait)
			if got := await(t, doAsync(g, 4)); got.err != nil || got.r != 8 {
				t.Errorf("got %d, %v; want 8, nil", got.r, got.err)
			}
			if got := sizes(); !slices.Equal(got, []int{1}) {
				t.Errorf("groups of %v, want one group of 1", got)
			}
		})
	}
}

// TestGroupGatherClosed: closing a group that waits for more writes ends
// the wait; the queued write learns its outcome.
func TestGroupGatherClosed(t *testing.T) {
	g, _ := gatheringGroup(t, 100, time.Hour)
	done := doAsync(g, 1)
	waitQueued(t, g, 1)
	g.close()
	if got := await(t, done); got.err != nil && !errors.Is(got.err, errClosed) {
		t.Errorf("got %d, %v; want its result or errClosed", got.r, got.err)
	}
}
