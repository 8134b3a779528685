package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/testwait"
)

// turnGroup returns a group whose turn counts its calls and, on the first
// one, closes entered and waits for release(); failTurn makes turns fail.
// The group records the size of each commit and is closed when the test
// ends.
type turnGroup struct {
	*group[fakeWrite, int]
	entered  chan struct{}
	release  func()
	turns    atomic.Int64
	ends     atomic.Int64
	failTurn atomic.Bool
	mu       sync.Mutex
	sizes    []int // of each commit
}

var errNoTurn = errors.New("no turn")

func newTurnTestGroup(t *testing.T) *turnGroup {
	tg := &turnGroup{entered: make(chan struct{})}
	released := make(chan struct{})
	var once, releaseOnce sync.Once
	tg.release = func() { releaseOnce.Do(func() { close(released) }) }
	tg.group = newTurnGroup(func(_ context.Context, writes []fakeWrite, results []int) error {
		tg.mu.Lock()
		tg.sizes = append(tg.sizes, len(writes))
		tg.mu.Unlock()
		return double(writes, results)
	}, func(error) bool { return true }, func(ctx context.Context) (func(), error) {
		tg.turns.Add(1)
		once.Do(func() {
			close(tg.entered)
			select {
			case <-released:
			case <-ctx.Done():
			}
		})
		if tg.failTurn.Load() {
			return nil, errNoTurn
		}
		return func() { tg.ends.Add(1) }, nil
	}, nil)
	t.Cleanup(func() {
		tg.release()
		tg.group.close()
	})
	return tg
}

func (tg *turnGroup) commits() []int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]int(nil), tg.sizes...)
}

// TestGroupTurnGathers: the writes that arrive while a group waits for
// its turn join that group.
func TestGroupTurnGathers(t *testing.T) {
	tg := newTurnTestGroup(t)
	const n = 50
	results := make([]int, n)
	var wg sync.WaitGroup
	wg.Go(func() { results[0], _ = tg.do(context.Background(), fakeWrite{v: 0}) })
	<-tg.entered
	for i := 1; i < n; i++ {
		wg.Go(func() { results[i], _ = tg.do(context.Background(), fakeWrite{v: i}) })
	}
	waitQueued(t, tg.group, n)
	tg.release()
	wg.Wait()
	if got := tg.commits(); len(got) != 1 || got[0] != n {
		t.Errorf("commits of %v writes, want one commit of all %d", got, n)
	}
	for i, r := range results {
		if r != 2*i {
			t.Errorf("write %d: got result %d, want %d", i, r, 2*i)
		}
	}
}

// TestGroupTurnFails: when the turn cannot be had, the writes queued fail
// with its error, nothing is committed and no write is retried alone.
func TestGroupTurnFails(t *testing.T) {
	tg := newTurnTestGroup(t)
	tg.failTurn.Store(true)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	wg.Go(func() { _, errs[0] = tg.do(context.Background(), fakeWrite{v: 0}) })
	<-tg.entered
	for i := 1; i < len(errs); i++ {
		wg.Go(func() { _, errs[i] = tg.do(context.Background(), fakeWrite{v: i}) })
	}
	waitQueued(t, tg.group, len(errs))
	tg.release()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, errNoTurn) {
			t.Errorf("write %d: got %v, want the turn's error", i, err)
		}
	}
	if got := tg.commits(); len(got) != 0 {
		t.Errorf("commits of %v writes, want none", got)
	}
	if got := tg.turns.Load(); got != 1 {
		t.Errorf("%d turns taken, want 1 (no write retried alone)", got)
	}
}

// TestGroupTurnGivenUp: when every writer left while the group waited for
// its turn, the turn is given up without a commit.
func TestGroupTurnGivenUp(t *testing.T) {
	tg := newTurnTestGroup(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := tg.do(ctx, fakeWrite{v: 1})
		done <- err
	}()
	<-tg.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	tg.release()
	testwait.Until(t, 10*time.Second, "the turn to be given up", func() bool { return tg.ends.Load() > 0 })
	if got := tg.commits(); len(got) != 0 {
		t.Errorf("commits of %v writes, want none", got)
	}
}

// TestGroupTurnEachAlone: after a group is rolled back, each write is
// retried alone in a turn of its own.
func TestGroupTurnEachAlone(t *testing.T) {
	tg := newTurnTestGroup(t)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	wg.Go(func() { _, errs[0] = tg.do(context.Background(), fakeWrite{v: 0}) })
	<-tg.entered
	for i := 1; i < n; i++ {
		wg.Go(func() { _, errs[i] = tg.do(context.Background(), fakeWrite{v: i, fail: i == 2}) })
	}
	waitQueued(t, tg.group, n)
	tg.release()
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 2) {
			t.Errorf("write %d: got %v, want an error only for the failing write 2", i, err)
		}
	}
	if got := tg.turns.Load(); got != 1+n {
		t.Errorf("%d turns taken, want %d: one for the group, one for each write retried alone", got, 1+n)
	}
}
