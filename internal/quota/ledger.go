package quota

import (
	"context"
	"errors"
	"time"
)

// Reservation is an admitted call. Exactly one of Settle or Release
// should follow; if neither does (the process died), recovery releases it.
type Reservation struct {
	ID       int64
	KeyID    int64
	Cost     int64
	deadline time.Time // after it any instance may release the call
	s        *Service
	// Target is the base URL of the target that served the call, for
	// the usage log; set it before Settle or Release.
	Target string
}

// CallRequest is a client's call as Reserve needs it.
type CallRequest struct {
	Key       string // the client's API key, in plaintext
	BatchSize int64  // images asked for, 1 or more
	RequestID string
	// Idempotent is the call's claim of an Idempotency-Key, or nil.
	Idempotent *Idempotent
}

// Reserve admits one call, durably, or returns a *RefusedError,
// ErrUnavailable, or ctx's error when the caller left. A call admitted after its caller
// left is released at once, never left to recovery.
func (s *Service) Reserve(ctx context.Context, c CallRequest) (*Reservation, error) {
	if err := ValidateKey(c.Key); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, s.storeTimeout)
	defer cancel()
	now := s.nowUTC()
	req := ReserveRequest{
		KeyHash: HashKey(c.Key), BatchSize: max(c.BatchSize, 1), Owner: s.owner, RequestID: c.RequestID,
		Start: now, Deadline: now.Add(s.hold),
	}
	if c.Idempotent != nil {
		req.IdempotencyKey = c.Idempotent.key
	}
	for attempt := 0; ; attempt++ {
		a, err := s.ledger.Reserve(sctx, req)
		if err != nil {
			return nil, unavailable(err)
		}
		if a.Admitted() {
			r := &Reservation{ID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, deadline: req.Deadline, s: s}
			s.obs.CallOpened()
			if ctx.Err() != nil {
				// The caller left while the write committed.
				r.Release(ctx, 0)
				return nil, ctx.Err()
			}
			return r, nil
		}
		reason, wait := refusal(a.Key, req.BatchSize, now)
		if reason == 0 && attempt == 0 {
			continue // the key changed between the write and the read
		}
		if reason == 0 {
			reason = Exhausted
		}
		return nil, &RefusedError{Reason: reason, RetryAfter: wait}
	}
}

// Settle charges the call the target answered with a 2xx status. A store
// that fails is retried with backoff for as long as the call's hold lasts
// (a database failover takes seconds), unless ctx ends first (the client
// left: nobody is waiting for the answer). If Settle fails, the call stays
// open until recovery releases it, so the caller must not deliver the
// answer. ErrCallReleased means recovery released it already.
func (r *Reservation) Settle(ctx context.Context, status int) (err error) {
	defer func() {
		r.s.obs.CallClosed()
		if err != nil {
			r.s.obs.SettleFailed()
		}
	}()
	o := r.outcome(status)
	wait := settleBackoff
	for attempt := 1; ; attempt++ {
		// Each attempt runs to its end even if the client leaves meanwhile:
		// whether the call is charged must not depend on that race.
		err := r.s.withTimeout(context.WithoutCancel(ctx), func(ctx context.Context) error { return r.s.ledger.Settle(ctx, o) })
		if err == nil || errors.Is(err, ErrCallReleased) {
			return err
		}
		if !r.s.now().Add(wait + r.s.storeTimeout).Before(r.deadline) {
			return unavailable(err)
		}
		r.s.log.Warn("settle failed; retrying", "call", r.ID, "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, maxSettleBackoff)
	}
}

// The backoff between settle attempts doubles from settleBackoff up to
// maxSettleBackoff.
const (
	settleBackoff    = 50 * time.Millisecond
	maxSettleBackoff = time.Second
)

// Release frees the call without charging it (non-2xx, timeout, no
// connection, client gone). If the store cannot be reached the call stays
// open until recovery releases it, which has the same effect later.
func (r *Reservation) Release(ctx context.Context, status int) error {
	o := r.outcome(status)
	err := r.s.withTimeout(context.WithoutCancel(ctx), func(ctx context.Context) error { return r.s.ledger.Release(ctx, o) })
	r.s.obs.CallClosed()
	if err != nil {
		r.s.obs.ReleaseFailed()
	}
	return unavailableOrNil(err)
}

// withTimeout runs f with the store timeout.
func (s *Service) withTimeout(ctx context.Context, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.storeTimeout)
	defer cancel()
	return f(ctx)
}

func (r *Reservation) outcome(status int) Outcome {
	now := r.s.nowUTC()
	return Outcome{CallID: r.ID, KeyID: r.KeyID, Cost: r.Cost, Status: status, At: now, Day: r.s.Day(now), Target: r.Target}
}

// ReleaseOwned releases every open call reserved under this Service's
// owner name before now: those of a previous process with the same name,
// which is gone. Call it once at start, before serving.
func (s *Service) ReleaseOwned(ctx context.Context) (int, error) {
	n, err := s.ledger.ReleaseOwner(ctx, s.owner, s.nowUTC())
	s.obs.Recovered(n)
	return n, unavailableOrNil(err)
}

// ReleaseExpired releases every open call past its deadline, whoever
// owned it.
func (s *Service) ReleaseExpired(ctx context.Context) (int, error) {
	n, err := s.ledger.ReleaseExpired(ctx, s.nowUTC())
	s.obs.Recovered(n)
	return n, unavailableOrNil(err)
}

// RunRecovery releases expired calls every interval until ctx ends.
func (s *Service) RunRecovery(ctx context.Context, interval time.Duration) {
	s.every(ctx, interval, s.ReleaseExpired, "recovery failed", "released orphaned calls", "calls")
}

// every runs job every interval until ctx ends, logging a failure as
// failed and, when it did something, done with its count as what.
func (s *Service) every(ctx context.Context, interval time.Duration, job func(context.Context) (int, error), failed, done, what string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := job(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn(failed, "err", err)
			} else if n > 0 {
				s.log.Info(done, what, n)
			}
		}
	}
}
