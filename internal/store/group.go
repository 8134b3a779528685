package store

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errClosed answers writes that arrive after Close.
var errClosed = errors.New("store: closed")

// maxGroup bounds how many writes share one transaction.
const maxGroup = 256

// commitTimeout bounds one group's transaction, so that a stalled
// database fails writes (503) instead of holding them forever.
const commitTimeout = 5 * time.Second

// group commits writes together. Callers hand it an operation and wait;
// one goroutine runs every operation queued meanwhile in a single
// transaction, so one durable commit (one fsync) serves many calls, and
// each caller returns only once its write is durable. Nothing waits on
// purpose: a lone write commits at once, and batches form while the
// previous commit is flushing.
//
// Tx is what an operation writes into: a *sql.Tx for SQLite, a *pgx.Batch
// for PostgreSQL.
type group[Tx any] struct {
	ops    chan *groupOp[Tx]
	quit   chan struct{}
	exited chan struct{}
	once   sync.Once
	// commit runs ops in one transaction and commits it, or returns the
	// error that stopped it.
	commit func(ctx context.Context, ops []*groupOp[Tx]) error
	// rolledBack reports whether a commit error means that nothing was
	// written, so that each write of the failed group may be retried alone.
	// After any other error (a lost connection: the commit may have
	// happened) every write of the group fails.
	rolledBack func(error) bool
}

type groupOp[Tx any] struct {
	// run adds the operation to the transaction. It may run more than
	// once (a batch that failed is retried one operation at a time), so
	// it must reset whatever it reports.
	run  func(tx Tx) error
	done chan error
}

func newGroup[Tx any](commit func(context.Context, []*groupOp[Tx]) error, rolledBack func(error) bool) *group[Tx] {
	g := &group[Tx]{
		ops: make(chan *groupOp[Tx]), quit: make(chan struct{}), exited: make(chan struct{}),
		commit: commit, rolledBack: rolledBack,
	}
	go g.loop()
	return g
}

// do runs one operation in the next transaction and waits for its commit.
// If ctx ends first, do returns ctx's error: before the operation joined a
// transaction it is not run; after, its outcome is unknown to the caller
// (every write of a call is conditional, so retrying it is safe).
func (g *group[Tx]) do(ctx context.Context, run func(tx Tx) error) error {
	op := &groupOp[Tx]{run: run, done: make(chan error, 1)}
	select {
	case g.ops <- op:
		select {
		case err := <-op.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	case <-g.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *group[Tx]) commitNow(ops []*groupOp[Tx]) error {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	return g.commit(ctx, ops)
}

func (g *group[Tx]) loop() {
	defer close(g.exited)
	batch := make([]*groupOp[Tx], 0, maxGroup)
	for {
		select {
		case op := <-g.ops:
			batch = append(batch[:0], op)
		case <-g.quit:
			return
		}
	more:
		for len(batch) < maxGroup {
			select {
			case op := <-g.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		err := g.commitNow(batch)
		if err != nil && len(batch) > 1 && g.rolledBack(err) {
			// One failing operation must not fail the others.
			for _, op := range batch {
				op.done <- g.commitNow([]*groupOp[Tx]{op})
			}
			continue
		}
		for _, op := range batch {
			op.done <- err
		}
	}
}

// close stops the loop after the batch in progress; later writes get
// errClosed. Closing twice is harmless.
func (g *group[Tx]) close() {
	g.once.Do(func() { close(g.quit) })
	<-g.exited
}
