package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options configure a Service.
type Options struct {
	Store Store
	// Owner names this instance in the calls it reserves, so that its own
	// orphans can be released when it starts again.
	Owner string
	// Hold is how long a call may stay open before any instance may
	// release it: the target timeout plus a grace period.
	Hold time.Duration
	// Location sets the calendar day of the daily history (default UTC).
	Location *time.Location
	// StoreTimeout bounds each write of a call, so that a stalled store
	// fails requests (503) instead of holding them (default 3 s).
	StoreTimeout time.Duration
	Now          func() time.Time
	Logger       *slog.Logger
}

// Service applies the accounting rules on top of a Store.
type Service struct {
	store        Store
	storeTimeout time.Duration
	owner        string
	hold         time.Duration
	loc          *time.Location
	now          func() time.Time
	log          *slog.Logger
}

// NewService returns a Service. Zero options get defaults.
func NewService(o Options) *Service {
	s := &Service{store: o.Store, storeTimeout: o.StoreTimeout, owner: o.Owner, hold: o.Hold, loc: o.Location, now: o.Now, log: o.Logger}
	if s.storeTimeout <= 0 {
		s.storeTimeout = 3 * time.Second
	}
	if s.hold <= 0 {
		s.hold = 150 * time.Second
	}
	if s.loc == nil {
		s.loc = time.UTC
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// unavailable marks a store error that is not one of the rules' sentinels.
func unavailable(err error) error {
	for _, known := range []error{ErrKeyNotFound, ErrKeyExists, ErrExhausted, ErrCallReleased} {
		if errors.Is(err, known) {
			return err
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func (s *Service) nowUTC() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// Day returns t's calendar day in the statistics time zone.
func (s *Service) Day(t time.Time) string { return t.In(s.loc).Format(time.DateOnly) }

// CreateKey creates a key with remaining calls. An empty key asks for a
// generated one. It returns the key's statistics and the full key, which
// is never available again.
func (s *Service) CreateKey(ctx context.Context, key, name string, remaining int64) (Key, string, error) {
	if remaining < 0 {
		return Key{}, "", fmt.Errorf("%w: initialRemainingCalls must be 0 or more", ErrInvalidAmount)
	}
	if key == "" {
		var err error
		if key, err = GenerateKey(); err != nil {
			return Key{}, "", err
		}
	} else if err := ValidateKey(key); err != nil {
		return Key{}, "", err
	}
	k, err := s.store.CreateKey(ctx, NewKey{Hash: HashKey(key), Prefix: DisplayPrefix(key), Name: name, Remaining: remaining, Now: s.nowUTC()})
	if err != nil {
		return Key{}, "", unavailable(err)
	}
	return k, key, nil
}

// Key returns the statistics of a key.
func (s *Service) Key(ctx context.Context, key string) (Key, error) {
	if err := ValidateKey(key); err != nil {
		return Key{}, err
	}
	k, err := s.store.KeyByHash(ctx, HashKey(key))
	return k, unavailableOrNil(err)
}

// SetRemaining sets a key's remaining calls. Calls in flight keep their
// hold: the value is raised to their number if it is lower, so remaining
// never goes below zero when they succeed.
func (s *Service) SetRemaining(ctx context.Context, key string, n int64) (Key, error) {
	if err := ValidateKey(key); err != nil {
		return Key{}, err
	}
	if n < 0 {
		return Key{}, fmt.Errorf("%w: remainingCalls must be 0 or more", ErrInvalidAmount)
	}
	k, err := s.store.SetRemaining(ctx, HashKey(key), n, s.nowUTC())
	return k, unavailableOrNil(err)
}

// ListKeys lists keys, newest first.
func (s *Service) ListKeys(ctx context.Context, o ListOptions) ([]Key, error) {
	if o.Limit <= 0 || o.Limit > 1000 {
		o.Limit = 100
	}
	o.Offset = max(o.Offset, 0)
	keys, err := s.store.ListKeys(ctx, o)
	return keys, unavailableOrNil(err)
}

func unavailableOrNil(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
}

// Reservation is an admitted call. Exactly one of Settle or Release
// should follow; if neither does (the process died), recovery releases it.
type Reservation struct {
	ID int64
	s  *Service
}

// Reserve admits one call of cost for key, durably, or returns
// ErrKeyNotFound, ErrExhausted or ErrUnavailable.
func (s *Service) Reserve(ctx context.Context, key string, cost int64, requestID string) (*Reservation, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.storeTimeout)
	defer cancel()
	now := s.nowUTC()
	id, err := s.store.Reserve(ctx, Call{
		KeyHash: HashKey(key), Cost: cost, Owner: s.owner, RequestID: requestID,
		Start: now, Deadline: now.Add(s.hold),
	})
	if err != nil {
		return nil, unavailable(err)
	}
	return &Reservation{ID: id, s: s}, nil
}

// settleAttempts bounds how often a failed settle is retried before the
// call is left to recovery.
const settleAttempts = 4

// Settle charges the call the target answered with a 2xx status. It
// retries a failing store briefly; if the store stays unreachable the call
// stays open and recovery releases it, so the caller must not deliver the
// answer. ErrCallReleased means recovery released it already.
func (r *Reservation) Settle(ctx context.Context, status int) error {
	ctx = context.WithoutCancel(ctx) // a gone client must not stop the books
	o := r.outcome(status)
	var err error
	for attempt := range settleAttempts {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt*attempt) * 50 * time.Millisecond)
		}
		if err = r.s.withTimeout(ctx, func(ctx context.Context) error { return r.s.store.Settle(ctx, r.ID, o) }); err == nil || errors.Is(err, ErrCallReleased) {
			return err
		}
		r.s.log.Warn("settle failed", "call", r.ID, "attempt", attempt+1, "err", err)
	}
	return unavailable(err)
}

// Release frees the call without charging it (non-2xx, timeout, no
// connection, client gone). If the store cannot be reached the call stays
// open until recovery releases it, which has the same effect later.
func (r *Reservation) Release(ctx context.Context, status int) error {
	o := r.outcome(status)
	err := r.s.withTimeout(context.WithoutCancel(ctx), func(ctx context.Context) error { return r.s.store.Release(ctx, r.ID, o) })
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
	return Outcome{Status: status, At: now, Day: r.s.Day(now)}
}

// ReleaseOwned releases every open call reserved under this Service's
// owner name before now: those of a previous process with the same name,
// which is gone. Call it once at start, before serving.
func (s *Service) ReleaseOwned(ctx context.Context) (int, error) {
	n, err := s.store.ReleaseOwner(ctx, s.owner, s.nowUTC())
	return n, unavailableOrNil(err)
}

// ReleaseExpired releases every open call past its deadline, whoever
// owned it.
func (s *Service) ReleaseExpired(ctx context.Context) (int, error) {
	n, err := s.store.ReleaseExpired(ctx, s.nowUTC())
	return n, unavailableOrNil(err)
}

// RunRecovery releases expired calls every interval until ctx ends.
func (s *Service) RunRecovery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := s.ReleaseExpired(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("recovery failed", "err", err)
			} else if n > 0 {
				s.log.Info("released orphaned calls", "calls", n)
			}
		}
	}
}

// Site is the site-wide statistics with today's count.
type Site struct {
	TotalGenerations int64
	DailyGenerations int64
	Days             []Day
}

// SiteStats returns the total, today's count and the last days of history.
func (s *Service) SiteStats(ctx context.Context, days int) (Site, error) {
	if days <= 0 {
		days = 30
	}
	now := s.now()
	today := s.Day(now)
	since := s.Day(now.In(s.loc).AddDate(0, 0, -(days - 1)))
	st, err := s.store.SiteStats(ctx, since)
	if err != nil {
		return Site{}, unavailable(err)
	}
	out := Site{TotalGenerations: st.TotalGenerations, Days: st.Days}
	if out.Days == nil {
		out.Days = []Day{}
	}
	for _, d := range st.Days {
		if d.Date == today {
			out.DailyGenerations = d.Generations
		}
	}
	return out, nil
}

// Ping reports whether the store answers.
func (s *Service) Ping(ctx context.Context) error { return unavailableOrNil(s.store.Ping(ctx)) }
