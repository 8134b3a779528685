package target

import "time"

// waiter is one call waiting in the queue for a slot.
type waiter struct {
	kq         *keyQueue
	prev, next *waiter       // neighbours in its key's FIFO
	ready      chan struct{} // closed once slot or err is decided
	slot       Slot
	err        error
	stop       func() bool // stops the queue timeout
	queued     bool
}

// keyQueue is the FIFO of one key's waiters, and that key's place in the
// round of keys.
type keyQueue struct {
	key        string
	head, tail *waiter
	prev, next *keyQueue // neighbours in the round
}

// fairQueue holds waiting calls, fair across keys: each turn serves the
// first waiter of the next key in the round (round-robin between keys,
// FIFO within a key). A key joins the round at its end when its first
// call starts waiting and leaves it when it has no more waiting; the key
// just served moves to the end. Every operation is O(1).
type fairQueue struct {
	keys        map[string]*keyQueue
	first, last *keyQueue // the round: first is served next
	n           int       // waiters, all keys together
}

func newFairQueue() fairQueue { return fairQueue{keys: map[string]*keyQueue{}} }

// push appends w to its key's FIFO.
func (q *fairQueue) push(key string, w *waiter) {
	kq := q.keys[key]
	if kq == nil {
		kq = &keyQueue{key: key}
		q.keys[key] = kq
		q.appendKey(kq)
	}
	w.kq, w.prev, w.next = kq, kq.tail, nil
	if kq.tail != nil {
		kq.tail.next = w
	} else {
		kq.head = w
	}
	kq.tail = w
	w.queued = true
	q.n++
}

// pop removes and returns the waiter whose turn it is, or nil.
func (q *fairQueue) pop() *waiter {
	kq := q.first
	if kq == nil {
		return nil
	}
	w := kq.head
	q.remove(w)
	if kq.head != nil && q.last != kq { // still waiting: to the end of the round
		q.removeKey(kq)
		q.appendKey(kq)
	}
	return w
}

// remove takes w out of the queue, wherever it is.
func (q *fairQueue) remove(w *waiter) {
	kq := w.kq
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		kq.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		kq.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	q.n--
	if kq.head == nil {
		q.removeKey(kq)
		delete(q.keys, kq.key)
	}
}

func (q *fairQueue) appendKey(kq *keyQueue) {
	kq.prev, kq.next = q.last, nil
	if q.last != nil {
		q.last.next = kq
	} else {
		q.first = kq
	}
	q.last = kq
}

func (q *fairQueue) removeKey(kq *keyQueue) {
	if kq.prev != nil {
		kq.prev.next = kq.next
	} else {
		q.first = kq.next
	}
	if kq.next != nil {
		kq.next.prev = kq.prev
	} else {
		q.last = kq.prev
	}
	kq.prev, kq.next = nil, nil
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
