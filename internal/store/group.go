package store

import (
	"errors"
	"sync"
)

// errClosed answers writes that arrive after Close.
var errClosed = errors.New("store: closed")

// maxGroup bounds how many writes share one transaction.
const maxGroup = 256

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
	// error that rolled all of them back.
	commit func(ops []*groupOp[Tx]) error
}

type groupOp[Tx any] struct {
	// run adds the operation to the transaction. It may run more than
	// once (a batch that failed is retried one operation at a time), so
	// it must reset whatever it reports.
	run  func(tx Tx) error
	done chan error
}

func newGroup[Tx any](commit func([]*groupOp[Tx]) error) *group[Tx] {
	g := &group[Tx]{ops: make(chan *groupOp[Tx]), quit: make(chan struct{}), exited: make(chan struct{}), commit: commit}
	go g.loop()
	return g
}

// do runs one operation in the next transaction and waits for its commit.
func (g *group[Tx]) do(run func(tx Tx) error) error {
	op := &groupOp[Tx]{run: run, done: make(chan error, 1)}
	select {
	case g.ops <- op:
		return <-op.done
	case <-g.quit:
		return errClosed
	}
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
		err := g.commit(batch)
		if err != nil && len(batch) > 1 {
			// One failing operation must not fail the others.
			for _, op := range batch {
				op.done <- g.commit([]*groupOp[Tx]{op})
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
