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
	Now          func() time.Time
	Logger       *slog.Logger
}

// Service applies the accounting rules on top of a store's roles.
type Service struct {
	ledger       Ledger
	keys         Keys
	usage        Usage
	storeTimeout time.Duration
	owner        string
	hold         time.Duration
	loc          *time.Location
	now          func() time.Time
	log          *slog.Logger
}

// NewService returns a Service. Zero options get defaults.
func NewService(o Options) *Service {
	s := &Service{
		ledger: o.Ledger, keys: o.Keys, usage: o.Usage,
		storeTimeout: o.StoreTimeout, owner: o.Owner, hold: o.Hold, loc: o.Location, now: o.Now, log: o.Logger,
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
	for _, known := range []error{ErrKeyNotFound, ErrKeyExists, ErrCallReleased} {
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
	k, err := s.keys.CreateKey(ctx, NewKey{Hash: HashKey(key), Prefix: DisplayPrefix(key), Name: name, Remaining: remaining, Now: s.nowUTC()})
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
	k, err := s.keys.KeyByHash(ctx, HashKey(key))
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
	k, err := s.keys.SetRemaining(ctx, HashKey(key), n, s.nowUTC())
	return k, unavailableOrNil(err)
}

// ListKeys lists keys, newest first.
func (s *Service) ListKeys(ctx context.Context, o ListOptions) ([]Key, error) {
	if o.Limit <= 0 || o.Limit > 1000 {
		o.Limit = 100
	}
	o.Offset = max(o.Offset, 0)
	keys, err := s.keys.ListKeys(ctx, o)
	return keys, unavailableOrNil(err)
}

func unavailableOrNil(err error) error {
	if err == nil {
		return nil
	}
	return unavailable(err)
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
	st, err := s.usage.SiteStats(ctx, since)
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
func (s *Service) Ping(ctx context.Context) error { return unavailableOrNil(s.ledger.Ping(ctx)) }
