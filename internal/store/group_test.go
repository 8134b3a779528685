package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// tally is a fake transaction: it counts the operations run into it.
type tally struct{ ops int }

// blockingGroup returns a group whose first commit waits for release
// after signalling entered, so that later writes queue up behind it.
func blockingGroup(commit func(ops []*groupOp[*tally]) error) (g *group[*tally], entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	g = newGroup(func(ops []*groupOp[*tally]) error {
		once.Do(func() {
			close(entered)
			<-release
		})
		return commit(ops)
	})
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
	write := func() error { return g.do(func(tx *tally) error { tx.ops++; return nil }) }

	var wg sync.WaitGroup
	wg.Go(func() { write() })
	<-entered
	const n = 50
	for range n {
		wg.Go(func() {
			if err := write(); err != nil {
				t.Error(err)
			}
		})
	}
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
	wg.Go(func() { g.do(func(*tally) error { return nil }) })
	<-entered
	errs := make([]error, 10)
	for i := range errs {
		wg.Go(func() {
			errs[i] = g.do(func(*tally) error {
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
	g := newGroup(func(ops []*groupOp[*tally]) error { return nil })
	g.close()
	g.close()
	if err := g.do(func(*tally) error { return nil }); !errors.Is(err, errClosed) {
		t.Errorf("write after close: got %v, want errClosed", err)
	}
}
