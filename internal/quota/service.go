package quota

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options configure a Service. Ledger, Keys and Usage are usually one
// store playing its three roles.
type Options struct {
	Ledger Ledger
	Keys   Keys
	Usage  Usage
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
	// IdempotencyTTL is how long an Idempotency-Key is remembered, and
	// IdempotencyMaxBytes the largest answer kept for replay (defaults
	// DefaultIdempotencyTTL and DefaultIdempotencyMaxBytes).
	IdempotencyTTL      time.Duration
	IdempotencyMaxBytes int64
	Now                 func() time.Time
	Logger              *slog.Logger
	// Observer is told what the ledger does, for metrics; nil tells nobody.
	Observer Observer
}

// Observer is told what the ledger does: calls opened and closed, charges
// and releases that failed, calls recovery released. Its methods are
// called on the request path, so they must be cheap, and concurrently.
type Observer interface {
	CallOpened()     // a call was reserved
	CallClosed()     // a reserved call was settled or released, or that failed
	SettleFailed()   // a 2xx could not be charged: the answer is withheld
	ReleaseFailed()  // a release failed: the call stays open until recovery
	Recovered(n int) // recovery released n open calls
}

type nopObserver struct{}

func (nopObserver) CallOpened()    {}
func (nopObserver) CallClosed()    {}
func (nopObserver) SettleFailed()  {}
func (nopObserver) ReleaseFailed() {}
func (nopObserver) Recovered(int)  {}

// Service applies the accounting rules on top of a store's roles.
type Service struct {
	ledger       Ledger
	keys         Keys
	usage        Usage
	storeTimeout time.Duration
	owner        string
	hold         time.Duration
	loc          *time.Location
	idemTTL      time.Duration
	idemMaxBytes int64
	now          func() time.Time
	log          *slog.Logger
	obs          Observer
}

// NewService returns a Service. Zero options get defaults.
func NewService(o Options) *Service {
	s := &Service{
		ledger: o.Ledger, keys: o.Keys, usage: o.Usage,
		storeTimeout: o.StoreTimeout, owner: o.Owner, hold: o.Hold, loc: o.Location, now: o.Now, log: o.Logger,
		idemTTL: o.IdempotencyTTL, idemMaxBytes: o.IdempotencyMaxBytes,
		obs: o.Observer,
	}
	if s.idemTTL <= 0 {
		s.idemTTL = DefaultIdempotencyTTL
	}
	if s.idemMaxBytes <= 0 {
		s.idemMaxBytes = DefaultIdempotencyMaxBytes
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
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
	for _, known := range []error{ErrKeyNotFound, ErrKeyExists, ErrCallReleased, ErrInsufficientCalls} {
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

func unavailableOrNil(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
}

// Ping reports whether the store answers.
func (s *Service) Ping(ctx context.Context) error { return unavailableOrNil(s.ledger.Ping(ctx)) }

// Writable reports whether the store accepts writes (readiness).
func (s *Service) Writable(ctx context.Context) error {
	return unavailableOrNil(s.ledger.Writable(ctx))
}
