// Package target owns Felix's backends (targets): which one serves a call,
// their health, and the queue in which calls wait for a free one.
//
// A Pool is a list of targets, each a value with state (in-flight count,
// health, counters) guarded by one mutex. A call acquires a Slot on the
// healthy target with the fewest calls in flight; when every healthy
// target is at its cap the call waits in a queue that is fair across keys,
// and a freed slot is handed to the next waiter directly, so that exactly
// one waiter wakes per freed slot.
package target

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Why a call got no target. They come wrapped in a *BusyError.
var (
	ErrQueueFull    = errors.New("target: the queue is full")
	ErrQueueTimeout = errors.New("target: the call waited in the queue past the timeout")
	ErrNoTarget     = errors.New("target: no target is up")
	ErrShutdown     = errors.New("target: felix is shutting down")
)

// BusyError is why a call got no target and when its client should retry.
type BusyError struct {
	Err        error // ErrQueueFull, ErrQueueTimeout, ErrNoTarget or ErrShutdown
	RetryAfter int   // whole seconds, at least 1
}

func (e *BusyError) Error() string { return e.Err.Error() }
func (e *BusyError) Unwrap() error { return e.Err }

// Clock is a Pool's time source: the real one in production, a fake one
// in tests (targettest.Clock).
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed; stop
	// cancels that and reports whether it did.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Options configure a Pool. Zero values get the defaults in brackets.
type Options struct {
	// URLs are the targets' base URLs, in configuration order (ties in
	// the selection go to the earlier one). At least one.
	URLs []*url.URL
	// Path is appended to each base URL to make the endpoint calls go to.
	Path string
	// MaxInFlight caps the calls one target runs at once; 0: no cap.
	MaxInFlight int
	// QueueMax bounds the calls waiting for a slot [1000].
	QueueMax int
	// QueueTimeout bounds one call's wait in the queue [60s].
	QueueTimeout time.Duration
	// Cooldown is how long a target that gave no answer is left out [10s].
	Cooldown time.Duration
	// HealthPath, when set, is probed with GET every HealthInterval [5s].
	HealthPath     string
	HealthInterval time.Duration
	// HealthHeader is sent with every probe (e.g. the target's key).
	HealthHeader http.Header
	// Client sends the probes; nil: one that follows no redirects.
	Client *http.Client
	Clock  Clock
	Logger *slog.Logger
}

// Target is one backend. Its state is guarded by its Pool's lock.
type Target struct {
	name     string   // the base URL as configured
	endpoint *url.URL // where calls go: base URL + Path
	health   *url.URL // base URL + HealthPath, nil without probes

	inFlight  int
	served    int64     // calls it answered, any status
	failed    int64     // calls that got no answer
	lastError string    // the latest failure, a sentence; "" for none
	downUntil time.Time // left out until then after a call got no answer
	probeDown bool      // the latest probe failed
}

// String returns the target's base URL as configured; the usage log and
// /api/targets name it so.
func (t *Target) String() string { return t.name }

// Endpoint returns the URL calls are sent to. It must not be modified.
func (t *Target) Endpoint() *url.URL { return t.endpoint }

// up reports whether the target may take calls: no failed probe and no
// cooldown running.
func (t *Target) up(now time.Time) bool { return !t.probeDown && !now.Before(t.downUntil) }

// Slot is a call's place on a target, from Acquire to Release.
type Slot struct {
	t     *Target
	start time.Time
}

// Target returns the target the slot is on.
func (s Slot) Target() *Target { return s.t }

// Outcome is how a call on a slot ended, as far as its target is concerned.
type Outcome int

const (
	// Answered: the target sent a status line (any status).
	Answered Outcome = iota
	// NoAnswer: the connection was refused, reset or timed out before an
	// answer. It counts as failed and, when the pool has other targets,
	// leaves the target out for the cooldown. A lone target is tried by
	// every call as before: leaving it out would only turn its 502s and
	// 504s into 503s; a failing health probe still takes it down.
	NoAnswer
	// Abandoned: the call ended before an answer for a reason that says
	// nothing about the target (the client left).
	Abandoned
)

// Pool is the set of targets and the queue in front of them.
type Pool struct {
	targets        []*Target
	maxInFlight    int
	queueMax       int
	queueTimeout   time.Duration
	cooldown       time.Duration
	healthInterval time.Duration
	healthHeader   http.Header
	client         *http.Client
	clock          Clock
	log            *slog.Logger

	mu       sync.Mutex
	queue    fairQueue
	meanHold time.Duration // running mean of how long a served call holds its slot
	closed   bool          // CloseQueue was called
}

// New returns a Pool of o.URLs, every target up.
func New(o Options) *Pool {
	if o.QueueMax <= 0 {
		o.QueueMax = 1000
	}
	if o.QueueTimeout <= 0 {
		o.QueueTimeout = 60 * time.Second
	}
	if o.Cooldown <= 0 {
		o.Cooldown = 10 * time.Second
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = 5 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		maxInFlight: max(o.MaxInFlight, 0), queueMax: o.QueueMax, queueTimeout: o.QueueTimeout,
		cooldown: o.Cooldown, healthInterval: o.HealthInterval, healthHeader: o.HealthHeader,
		client: o.Client, clock: o.Clock, log: o.Logger, queue: newFairQueue(),
	}
	for _, u := range o.URLs {
		t := &Target{name: u.String(), endpoint: joinPath(u, o.Path)}
		if o.HealthPath != "" {
			t.health = joinPath(u, o.HealthPath)
		}
		p.targets = append(p.targets, t)
	}
	return p
}

// joinPath appends path to base's path, always starting with "/".
func joinPath(base *url.URL, path string) *url.URL {
	u := base.JoinPath(path)
	if !strings.HasPrefix(u.Path, "/") {
		u.Path = "/" + u.Path
	}
	return u
}

// Targets returns the targets in configuration order.
func (p *Pool) Targets() []*Target { return p.targets }

// Acquire returns a slot for a call of key (any string naming the client,
// for fairness) on the up target with the fewest calls in flight (ties:
// configuration order). When every up target is full it waits in the
// queue until a slot is handed to it, the queue timeout passes
// (ErrQueueTimeout), no target is up any more (ErrNoTarget), the queue is
// closed (ErrShutdown) or ctx ends (ctx.Err(): it leaves the queue at
// once). A full queue (ErrQueueFull) or no target up (ErrNoTarget) is
// refused at once. Refusals are *BusyError. Every slot must be released.
func (p *Pool) Acquire(ctx context.Context, key string) (Slot, error) {
	p.mu.Lock()
	now := p.clock.Now()
	if p.queue.n == 0 { // nobody waits: take a free slot if there is one
		if t := p.pick(now); t != nil {
			t.inFlight++
			p.mu.Unlock()
			return Slot{t: t, start: now}, nil
		}
	}
	if err := p.refusal(now); err != nil {
		p.mu.Unlock()
		return Slot{}, err
	}
	w := &waiter{ready: make(chan struct{})}
	p.queue.push(key, w)
	w.stop = p.clock.AfterFunc(p.queueTimeout, func() { p.expire(w) })
	p.mu.Unlock()

	select {
	case <-w.ready:
		return w.slot, w.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if w.queued() {
		p.queue.remove(w)
		w.decide(Slot{}, ctx.Err())
		p.mu.Unlock()
		return Slot{}, ctx.Err()
	}
	p.mu.Unlock()
	<-w.ready // decided while ctx ended: pass a granted slot on
	if w.err == nil {
		p.Release(w.slot, Abandoned, nil)
	}
	return Slot{}, ctx.Err()
}

// refusal is why a call that found no free slot cannot wait, or nil.
func (p *Pool) refusal(now time.Time) error {
	switch {
	case p.closed:
		return &BusyError{Err: ErrShutdown, RetryAfter: 1}
	case !p.anyUp(now):
		return p.noTarget(now)
	case p.queue.n >= p.queueMax:
		return &BusyError{Err: ErrQueueFull, RetryAfter: p.drainSeconds()}
	}
	return nil
}

// expire answers a waiter whose queue timeout has passed.
func (p *Pool) expire(w *waiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.queued() {
		p.queue.remove(w)
		w.decide(Slot{}, &BusyError{Err: ErrQueueTimeout, RetryAfter: p.drainSeconds()})
	}
}

// Release gives the slot back, records how the call went, and hands the
// slot to the next waiter if there is one. Call it once the answer is
// done (streamed or failed). err describes a NoAnswer.
func (p *Pool) Release(s Slot, o Outcome, err error) {
	t := s.t
	p.mu.Lock()
	now := p.clock.Now()
	t.inFlight--
	switch o {
	case Answered:
		t.served++
		p.meanHold = holdEWMA(p.meanHold, now.Sub(s.start))
	case NoAnswer:
		t.failed++
		t.lastError = describe(err)
		if len(p.targets) > 1 {
			t.downUntil = now.Add(p.cooldown)
			// Its return may give waiters a slot: look then.
			p.clock.AfterFunc(p.cooldown, p.wake)
		}
	}
	p.dispatch(now)
	p.mu.Unlock()
	if o == NoAnswer && len(p.targets) > 1 {
		p.log.Warn("target got no answer: left out for the cooldown", "target", t.name, "cooldown", p.cooldown, "err", err)
	}
}

// wake hands free slots to waiters, after a target's cooldown.
func (p *Pool) wake() {
	p.mu.Lock()
	p.dispatch(p.clock.Now())
	p.mu.Unlock()
}

// dispatch hands free slots to waiters, one waiter per slot, in the
// queue's order; with no target up it answers every waiter ErrNoTarget.
// The caller holds the lock.
func (p *Pool) dispatch(now time.Time) {
	for p.queue.n > 0 {
		t := p.pick(now)
		if t == nil {
			if !p.anyUp(now) {
				err := p.noTarget(now)
				for p.queue.n > 0 {
					p.queue.pop().decide(Slot{}, err)
				}
			}
			return
		}
		t.inFlight++
		p.queue.pop().decide(Slot{t: t, start: now}, nil)
	}
}

// pick returns the up target with a free slot and the fewest calls in
// flight, the first in configuration order among equals, or nil.
func (p *Pool) pick(now time.Time) *Target {
	var best *Target
	for _, t := range p.targets {
		if !t.up(now) || (p.maxInFlight > 0 && t.inFlight >= p.maxInFlight) {
			continue
		}
		if best == nil || t.inFlight < best.inFlight {
			best = t
		}
	}
	return best
}

func (p *Pool) anyUp(now time.Time) bool {
	for _, t := range p.targets {
		if t.up(now) {
			return true
		}
	}
	return false
}

// noTarget is the refusal when no target is up; retry when the first
// cooldown ends, or after a probe interval when probes keep them down.
func (p *Pool) noTarget(now time.Time) error {
	wait := time.Duration(math.MaxInt64)
	for _, t := range p.targets {
		if t.probeDown {
			wait = min(wait, p.healthInterval)
		} else {
			wait = min(wait, t.downUntil.Sub(now))
		}
	}
	if len(p.targets) == 0 {
		wait = p.cooldown
	}
	return &BusyError{Err: ErrNoTarget, RetryAfter: ceilSeconds(wait)}
}

// drainSeconds estimates how long the calls waiting now take to get a
// slot: waiting calls (plus one) × the mean slot hold ÷ the slots of the
// up targets, within 1 s and the queue timeout.
func (p *Pool) drainSeconds() int {
	slots := 0
	now := p.clock.Now()
	for _, t := range p.targets {
		if t.up(now) {
			slots += p.maxInFlight
		}
	}
	if slots == 0 || p.meanHold == 0 {
		return 1
	}
	wait := time.Duration(p.queue.n+1) * p.meanHold / time.Duration(slots)
	return ceilSeconds(min(wait, p.queueTimeout))
}

// ceilSeconds rounds d up to whole seconds, at least 1.
func ceilSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// CloseQueue answers every waiting call ErrShutdown and refuses any later
// call that would have to wait; calls that find a free slot still get it.
// Felix calls it when a graceful shutdown runs out of time.
func (p *Pool) CloseQueue() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for p.queue.n > 0 {
		p.queue.pop().decide(Slot{}, &BusyError{Err: ErrShutdown, RetryAfter: 1})
	}
}

// Stats is the state of the pool as GET /api/targets shows it.
type Stats struct {
	Targets []TargetStats `json:"targets"`
	Queue   QueueStats    `json:"queue"`
}

// TargetStats is one target's state.
type TargetStats struct {
	URL         string  `json:"url"`
	Up          bool    `json:"up"`
	InFlight    int     `json:"inFlight"`
	MaxInFlight int     `json:"maxInFlight"` // 0: no cap
	Served      int64   `json:"served"`      // calls it answered, any status
	Failed      int64   `json:"failed"`      // calls that got no answer
	LastError   *string `json:"lastError"`   // the latest failure, a sentence, or null
}

// QueueStats is the queue's length (calls waiting) and bound.
type QueueStats struct {
	Length int `json:"length"`
	Max    int `json:"max"`
}

// Stats returns the targets in configuration order and the queue.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	s := Stats{Targets: make([]TargetStats, len(p.targets)), Queue: QueueStats{Length: p.queue.n, Max: p.queueMax}}
	for i, t := range p.targets {
		s.Targets[i] = TargetStats{
			URL: t.name, Up: t.up(now), InFlight: t.inFlight, MaxInFlight: p.maxInFlight,
			Served: t.served, Failed: t.failed,
		}
		if t.lastError != "" {
			e := t.lastError // a copy: the target's own changes under the lock
			s.Targets[i].LastError = &e
		}
	}
	return s
}
