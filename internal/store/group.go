package store

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// errClosed answers writes that arrive after Close.
var errClosed = errors.New("store: closed")

// maxGroup bounds how many writes share one transaction.
const maxGroup = 256

// commitTimeout bounds one group's transaction, so that a stalled
// database fails writes (503) instead of holding them forever. A group
// ends sooner when the earliest deadline of its writers' contexts passes.
const commitTimeout = 5 * time.Second

// maxGather bounds how long a group waits for the writes its gather asks
// for.
const maxGather = time.Millisecond

// group commits writes together. Callers hand it a write of type W and
// wait; one goroutine runs every write queued meanwhile in a single
// transaction, so one durable commit (one fsync) serves many calls, and
// each caller returns only once its write is durable. Batches form while
// the previous commit is flushing; a lone write commits at once unless
// the group has a gather that asks for more (under load, see gather).
//
// commit runs the writes in one transaction and fills in each one's
// result R (results[i] for writes[i]); it gets fresh, zero results on
// every attempt, so a retried write never reports a stale result.
type group[W, R any] struct {
	mu     sync.Mutex
	queue  []*groupOp[W, R] // writes waiting for a group, oldest first
	closed bool
	wake   chan struct{} // signals the loop that the queue is not empty
	quit   chan struct{}
	exited chan struct{}
	once   sync.Once
	commit func(ctx context.Context, writes []W, results []R) error
	// rolledBack reports whether a commit error means that nothing was
	// written because one write failed, so that each write of the failed
	// group may be retried alone. After any other error (a lost
	// connection: the commit may have happened; a lock that was never
	// granted: retrying alone would only wait again) every write of the
	// group fails.
	rolledBack func(error) bool
	// turn, when set, is called before a group's writes are chosen and
	// waits until this group may commit: several processes writing to one
	// database take turns, and the writes that arrive while a process
	// waits for its turn join its next group instead of making one more.
	// It returns end, which gives the turn up without committing; commit
	// gives it up itself.
	turn func(ctx context.Context) (end func(), err error)
	// gather, when set, says how many queued writes are worth waiting
	// for before a group is taken (0 or less: none): under load, every
	// write that joins a commit instead of starting the next one saves
	// that commit's fixed work. The group waits for them up to
	// gatherWait (maxGather unless a test sets it).
	gather     func() int
	gatherWait time.Duration
	observer   Observer // told of every commit; nil: nobody
}

type groupOp[W, R any] struct {
	w        W
	deadline time.Time // the caller's, zero for none
	taken    bool      // joined a group; guarded by the group's mu
	done     chan groupDone[R]
}

type groupDone[R any] struct {
	r   R
	err error
}

func newGroup[W, R any](commit func(context.Context, []W, []R) error, rolledBack func(error) bool, observer Observer) *group[W, R] {
	return newTurnGroup(commit, rolledBack, nil, observer)
}

// newTurnGroup is newGroup with a turn to take before each group (see
// group.turn).
func newTurnGroup[W, R any](commit func(context.Context, []W, []R) error, rolledBack func(error) bool, turn func(context.Context) (func(), error), observer Observer) *group[W, R] {
	g := &group[W, R]{
		wake: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{}),
		commit: commit, rolledBack: rolledBack, turn: turn, gatherWait: maxGather, observer: observer,
	}
	go g.loop()
	return g
}

// do runs one write in the next transaction and waits for its commit.
// If ctx ends while the write is still queued, the write is taken out of
// the queue, never runs, and do returns ctx's error. Once the write has
// joined a group, do waits for that group's outcome whatever ctx does (the
// group gives up at the earliest deadline of its writers), so that a
// caller always learns whether its write was applied.
func (g *group[W, R]) do(ctx context.Context, w W) (R, error) {
	op := &groupOp[W, R]{w: w, done: make(chan groupDone[R], 1)}
	op.deadline, _ = ctx.Deadline()
	var zero R
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return zero, errClosed
	}
	g.queue = append(g.queue, op)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default: // the loop has been told already
	}
	select {
	case d := <-op.done:
		return d.r, d.err
	case <-ctx.Done():
	}
	g.mu.Lock()
	if op.taken {
		g.mu.Unlock()
		d := <-op.done
		return d.r, d.err
	}
	g.queue = slices.DeleteFunc(g.queue, func(o *groupOp[W, R]) bool { return o == op })
	g.mu.Unlock()
	return zero, ctx.Err()
}

// take removes up to maxGroup writes from the queue for the next group.
func (g *group[W, R]) take(batch []*groupOp[W, R]) []*groupOp[W, R] {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := min(len(g.queue), maxGroup)
	batch = append(batch[:0], g.queue[:n]...)
	for _, op := range batch {
		op.taken = true
	}
	g.queue = append(g.queue[:0], g.queue[n:]...)
	if len(g.queue) > 0 {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	return batch
}

// queued returns how many writes wait for a group.
func (g *group[W, R]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// gatherWrites waits until as many writes as gather asks for are queued,
// at most gatherWait, and not past close.
func (g *group[W, R]) gatherWrites() {
	if g.gather == nil {
		return
	}
	want := min(g.gather(), maxGroup)
	if want <= 0 || g.queued() >= want {
		return
	}
	t := time.NewTimer(g.gatherWait)
	defer t.Stop()
	for {
		select {
		case <-g.wake:
			if g.queued() >= want {
				return
			}
		case <-t.C:
			return
		case <-g.quit:
			return
		}
	}
}

// groupDeadline is when a group of ops must end: after commitTimeout, or
// at the earliest deadline among them.
func groupDeadline[W, R any](ops []*groupOp[W, R]) time.Time {
	deadline := time.Now().Add(commitTimeout)
	for _, op := range ops {
		if !op.deadline.IsZero() && op.deadline.Before(deadline) {
			deadline = op.deadline
		}
	}
	return deadline
}

// commitNow runs ops as one transaction, bounded by commitTimeout and by
// the earliest deadline among them.
func (g *group[W, R]) commitNow(ops []*groupOp[W, R]) ([]R, error) {
	writes := make([]W, len(ops))
	for i, op := range ops {
		writes[i] = op.w
	}
	ctx, cancel := context.WithDeadline(context.Background(), groupDeadline(ops))
	defer cancel()
	results := make([]R, len(ops))
	start := time.Now()
	err := g.commit(ctx, writes, results)
	if g.observer != nil {
		g.observer.GroupCommitted(len(ops), time.Since(start), err)
	}
	return results, err
}

// waitTurn takes the group's turn, if it has one, by deadline; end gives
// it up without committing.
func (g *group[W, R]) waitTurn(deadline time.Time) (end func(), err error) {
	if g.turn == nil {
		return func() {}, nil
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return g.turn(ctx)
}

// run commits one group: it takes its turn, then the writes queued by
// then (up to maxGroup, in batch's memory), or ops alone when given, and
// commits them. committed is false when no commit was tried: the turn
// failed (err), or no write was left.
func (g *group[W, R]) run(batch, ops []*groupOp[W, R]) (taken []*groupOp[W, R], results []R, committed bool, err error) {
	deadline := groupDeadline(ops)
	if ops == nil {
		g.mu.Lock()
		deadline = groupDeadline(g.queue)
		g.mu.Unlock()
	}
	end, err := g.waitTurn(deadline)
	if taken = ops; ops == nil {
		taken = g.take(batch)
	}
	switch {
	case err != nil:
		return taken, nil, false, err
	case len(taken) == 0:
		end()
		return taken, nil, false, nil
	}
	results, err = g.commitNow(taken)
	return taken, results, true, err
}

func (g *group[W, R]) loop() {
	defer close(g.exited)
	batch := make([]*groupOp[W, R], 0, maxGroup)
	for {
		select {
		case <-g.wake:
		case <-g.quit:
			g.mu.Lock()
			for _, op := range g.queue {
				op.taken = true
				op.done <- groupDone[R]{err: errClosed}
			}
			g.queue = nil
			g.mu.Unlock()
			return
		}
		if g.queued() == 0 {
			continue // every queued write left
		}
		g.gatherWrites()
		var (
			results   []R
			err       error
			committed bool
		)
		if batch, results, committed, err = g.run(batch, nil); len(batch) == 0 {
			continue // every queued write left before its group
		}
		if err != nil && committed && len(batch) > 1 && g.rolledBack(err) {
			// One failing write must not fail the others.
			for _, op := range batch {
				_, results, _, err := g.run(nil, []*groupOp[W, R]{op})
				op.done <- outcome(results, 0, err)
			}
			continue
		}
		for i, op := range batch {
			op.done <- outcome(results, i, err)
		}
	}
}

// outcome is what the caller of write i learns: its result if the group
// committed, else only the error.
func outcome[R any](results []R, i int, err error) groupDone[R] {
	if err != nil {
		return groupDone[R]{err: err}
	}
	return groupDone[R]{r: results[i]}
}

// close stops the loop after the batch in progress; queued and later
// writes get errClosed. Closing twice is harmless.
func (g *group[W, R]) close() {
	g.once.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		close(g.quit)
	})
	<-g.exited
}
