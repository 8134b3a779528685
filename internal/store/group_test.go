package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tally is a fake transaction: it counts the operations run into it.
type tally struct{ ops int }

// blockingGroup returns a group whose first commit waits for release
// after signalling entered, so that later writes queue up behind it.
func blockingGroup(commit func(ops []*groupOp[*tally]) error) (g *group[*tally], entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	g = newGroup(func(_ context.Context, ops []*groupOp[*tally]) error {
		once.Do(func() {
			close(entered)
			<-release
		})
		return commit(ops)
	}, func(error) bool { return true })
	return g, entered, release
}

// TestGroupShares: writes that arrive while a commit is under way share
// a later one, and every write is committed exactly once.
func TestGroupShares(t *testing.T) {
	var commits, committed atomic.Int64
	g, entered, release := blockingGroup(func(ops []*groupOp[*tally]) error {
		tx := &tally{}
		for _, op := range ops {
			op.run(tx)
		}
		commits.Add(1)
		committed.Add(int64(tx.ops))
		return nil
	})
	defer g.close()
	write := func() error { return g.do(context.Background(), func(tx *tally) error { tx.ops++; return nil }) }

	var wg sync.WaitGroup
	wg.Go(func() { write() })
	<-entered
	const n = 50
	var arrived atomic.Int64
	for range n {
		wg.Go(func() {
			arrived.Add(1)
			if err := write(); err != nil {
				t.Error(err)
			}
		})
	}
	// Let the writers reach the queue before the first commit ends.
	for arrived.Load() < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if got := committed.Load(); got != n+1 {
		t.Errorf("committed %d writes, want %d", got, n+1)
	}
	if got := commits.Load(); got > n/2 {
		t.Errorf("%d commits for %d writes: want them grouped", got, n+1)
	}
}

// TestGroupIsolatesFailures: a failing write fails alone; the others in
// its batch are retried one by one and succeed.
func TestGroupIsolatesFailures(t *testing.T) {
	bad := errors.New("bad write")
	g, entered, release := blockingGroup(func(ops []*groupOp[*tally]) error {
		for _, op := range ops {
			if err := op.run(&tally{}); err != nil {
				return err
			}
		}
		return nil
	})
	defer g.close()
	var wg sync.WaitGroup
	wg.Go(func() { g.do(context.Background(), func(*tally) error { return nil }) })
	<-entered
	errs := make([]error, 10)
	for i := range errs {
		wg.Go(func() {
			errs[i] = g.do(context.Background(), func(*tally) error {
				if i == 3 {
					return bad
				}
				return nil
			})
		})
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		switch {
		case i == 3 && !errors.Is(err, bad):
			t.Errorf("write 3: got %v, want the bad write's error", err)
		case i != 3 && err != nil:
			t.Errorf("write %d: got %v, want nil", i, err)
		}
	}
}

func TestGroupClosed(t *testing.T) {
	g := newGroup(func(context.Context, []*groupOp[*tally]) error { return nil }, func(error) bool { return true })
	g.close()
	g.close()
	if err := g.do(context.Background(), func(*tally) error { return nil }); !errors.Is(err, errClosed) {
		t.Errorf("write after close: got %v, want errClosed", err)
	}
}

// TestGroupUnknownOutcome: when the commit's outcome is unknown (not a
// rollback), no write of the group is retried, so none can apply twice.
func TestGroupUnknownOutcome(t *testing.T) {
	lost := errors.New("connection lost")
	var runs atomic.Int64
	g := newGroup(func(_ context.Context, ops []*groupOp[*tally]) error {
		for _, op := range ops {
			op.run(&tally{})
		}
		return lost
	}, func(error) bool { return false })
	defer g.close()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := g.do(context.Background(), func(*tally) error { runs.Add(1); return nil }); !errors.Is(err, lost) {
				t.Errorf("got %v, want the commit's error", err)
			}
		})
	}
	wg.Wait()
	if got := runs.Load(); got != 20 {
		t.Errorf("writes ran %d times, want 20 (no retries)", got)
	}
}

// TestGroupGivesUpWaiting: a write whose context ends while the group is
// stuck is not run, and its caller is told at once.
func TestGroupGivesUpWaiting(t *testing.T) {
	g, entered, release := blockingGroup(func(ops []*groupOp[*tally]) error { return nil })
	defer g.close()
	go g.do(context.Background(), func(*tally) error { return nil })
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	if err := g.do(ctx, func(*tally) error { ran = true; return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	close(release)
	if ran {
		t.Error("a write whose caller gave up was run")
	}
}
