package target

import (
	"container/list"
	"time"
)

// waiter is one call waiting in the queue for a slot.
type waiter struct {
	kq    *keyQueue
	elem  *list.Element // its place in its key's FIFO; nil once out of the queue
	ready chan struct{} // closed once slot or err is decided
	slot  Slot
	err   error
	stop  func() bool // stops the queue timeout
}

// queued reports whether w is still in the queue.
func (w *waiter) queued() bool { return w.elem != nil }

// keyQueue is the FIFO of one key's waiters, and that key's place in the
// round of keys.
type keyQueue struct {
	key     string
	waiters list.List     // of *waiter, oldest first
	place   *list.Element // in the round
}

// fairQueue holds waiting calls, fair across keys: each turn serves the
// first waiter of the next key in the round (round-robin between keys,
// FIFO within a key). A key joins the round at its end when its first
// call starts waiting and leaves it when it has no more waiting; the key
// just served moves to the end. Every operation is O(1).
type fairQueue struct {
	keys  map[string]*keyQueue
	round list.List // of *keyQueue; the front is served next
	n     int       // waiters, all keys together
}

func newFairQueue() fairQueue { return fairQueue{keys: map[string]*keyQueue{}} }

// push appends w to its key's FIFO.
func (q *fairQueue) push(key string, w *waiter) {
	kq := q.keys[key]
	if kq == nil {
		kq = &keyQueue{key: key}
		kq.place = q.round.PushBack(kq)
		q.keys[key] = kq
	}
	w.kq, w.elem = kq, kq.waiters.PushBack(w)
	q.n++
}

// pop removes and returns the waiter whose turn it is, or nil.
func (q *fairQueue) pop() *waiter {
	front := q.round.Front()
	if front == nil {
		return nil
	}
	kq := front.Value.(*keyQueue)
	w := kq.waiters.Front().Value.(*waiter)
	q.remove(w)
	if kq.waiters.Len() > 0 { // still waiting: to the end of the round
		q.round.MoveToBack(kq.place)
	}
	return w
}

// remove takes w out of the queue, wherever it is.
func (q *fairQueue) remove(w *waiter) {
	kq := w.kq
	kq.waiters.Remove(w.elem)
	w.elem = nil
	q.n--
	if kq.waiters.Len() == 0 {
		q.round.Remove(kq.place)
		delete(q.keys, kq.key)
	}
}

// decide settles a waiter that has left the queue: it gets slot or err.
// The caller holds the pool's lock.
func (w *waiter) decide(slot Slot, err error) {
	w.slot, w.err = slot, err
	if w.stop != nil {
		w.stop()
	}
	close(w.ready)
}

// holdEWMA folds one slot's hold time into the running mean (weight 1/8),
// which estimates how fast the queue drains.
func holdEWMA(mean, d time.Duration) time.Duration {
	if mean == 0 {
		return d
	}
	return mean + (d-mean)/8
}
