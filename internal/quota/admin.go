package quota

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// MaxCalls bounds the remaining calls an operator may give a key (2^53,
// so that every amount is exact in JSON numbers).
const MaxCalls = 1 << 53

// KeySpec is a key an operator asks for.
type KeySpec struct {
	Key       string // the plaintext key; empty asks for a generated one
	Name      string
	Note      string
	Remaining int64
	ExpiresAt *time.Time
	Policies  Policies
}

// CreateKey creates a key and its "created" event. It returns the key and
// the full plaintext key, which is never available again.
func (s *Service) CreateKey(ctx context.Context, spec KeySpec) (Key, string, error) {
	if spec.Remaining < 0 || spec.Remaining > MaxCalls {
		return Key{}, "", fmt.Errorf("%w: remaining calls must be from 0 to %d", ErrInvalidAmount, int64(MaxCalls))
	}
	key := spec.Key
	if key == "" {
		var err error
		if key, err = GenerateKey(); err != nil {
			return Key{}, "", err
		}
	} else if err := ValidateKey(key); err != nil {
		return Key{}, "", err
	}
	p := spec.Policies
	if err := validatePolicies(p.RateLimit, p.MaxConcurrent, p.Refill); err != nil {
		return Key{}, "", err
	}
	now := s.nowUTC()
	if p.Refill != nil {
		next := s.nextRefill(p.Refill.Every, now)
		p.RefillNextAt = &next
	}
	k, err := s.keys.CreateKey(ctx, NewKey{
		Hash: HashKey(key), Prefix: DisplayPrefix(key), Name: spec.Name, Note: spec.Note,
		Remaining: spec.Remaining, ExpiresAt: utc(spec.ExpiresAt), Policies: p, Now: now,
	})
	if err != nil {
		return Key{}, "", unavailable(err)
	}
	return k, key, nil
}

// Key returns a key by its plaintext.
func (s *Service) Key(ctx context.Context, key string) (Key, error) {
	if err := ValidateKey(key); err != nil {
		return Key{}, err
	}
	k, err := s.keys.KeyByHash(ctx, HashKey(key))
	return k, unavailableOrNil(err)
}

// KeyByID returns a key by its id.
func (s *Service) KeyByID(ctx context.Context, id int64) (Key, error) {
	k, err := s.keys.KeyByID(ctx, id)
	return k, unavailableOrNil(err)
}

// SetRemaining sets the remaining calls of a key given by its plaintext
// (the seed's PUT). Calls in flight keep their hold: the value is raised
// to their number if it is lower, so remaining never goes below zero when
// they succeed.
func (s *Service) SetRemaining(ctx context.Context, key string, n int64) (Key, error) {
	if err := ValidateKey(key); err != nil {
		return Key{}, err
	}
	return s.change(ctx, KeyRef{Hash: HashKey(key)}, KeyChange{Remaining: &n})
}

// ChangeKey applies an operator's change to the key id, with its events.
func (s *Service) ChangeKey(ctx context.Context, id int64, c KeyChange) (Key, error) {
	return s.change(ctx, KeyRef{ID: id}, c)
}

// TopUp adds n calls to the key id (removes them, when n is negative),
// atomically; removing more than the calls not in flight is
// ErrInsufficientCalls.
func (s *Service) TopUp(ctx context.Context, id, n int64) (Key, error) {
	if n == 0 || n < -MaxCalls || n > MaxCalls {
		return Key{}, fmt.Errorf("%w: calls must be a non-zero integer from %d to %d", ErrInvalidAmount, -int64(MaxCalls), int64(MaxCalls))
	}
	return s.change(ctx, KeyRef{ID: id}, KeyChange{TopUp: n})
}

// DeleteKey makes the key id stop working at once. Calls in flight still
// settle; its usage rows, events and the site totals stay.
func (s *Service) DeleteKey(ctx context.Context, id int64) error {
	_, err := s.change(ctx, KeyRef{ID: id}, KeyChange{Delete: true})
	return err
}

func (s *Service) change(ctx context.Context, ref KeyRef, c KeyChange) (Key, error) {
	if c.Remaining != nil && (*c.Remaining < 0 || *c.Remaining > MaxCalls) {
		return Key{}, fmt.Errorf("%w: remainingCalls must be from 0 to %d", ErrInvalidAmount, int64(MaxCalls))
	}
	if err := validatePolicies(c.RateLimit, c.MaxConcurrent, c.Refill); err != nil {
		return Key{}, err
	}
	c.ExpiresAt = utc(c.ExpiresAt)
	c.Now = s.nowUTC()
	if c.Refill != nil {
		next := s.nextRefill(c.Refill.Every, c.Now)
		c.RefillNextAt = &next
	}
	k, err := s.keys.ChangeKey(ctx, ref, c)
	return k, unavailableOrNil(err)
}

// ListKeys returns a page of keys, newest first, and the cursor of the
// next page (0 when this is the last).
func (s *Service) ListKeys(ctx context.Context, f KeyFilter) ([]Key, int64, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Now = s.nowUTC()
	want := f.Limit
	f.Limit++ // one more tells whether there is a next page
	keys, err := s.keys.ListKeys(ctx, f)
	if err != nil {
		return nil, 0, unavailable(err)
	}
	if len(keys) > want {
		keys = keys[:want]
		return keys, keys[want-1].ID, nil
	}
	return keys, 0, nil
}

// KeyEvents returns the events of the key id, oldest first.
func (s *Service) KeyEvents(ctx context.Context, id int64) ([]Event, error) {
	if _, err := s.KeyByID(ctx, id); err != nil {
		return nil, err
	}
	ev, err := s.keys.KeyEvents(ctx, id)
	return ev, unavailableOrNil(err)
}

// Now returns the Service's clock, in UTC.
func (s *Service) Now() time.Time { return s.nowUTC() }

// Location is the time zone of the daily statistics.
func (s *Service) Location() *time.Location { return s.loc }

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Microsecond)
	return &u
}

// validatePolicies checks the policies an operator gives a key.
func validatePolicies(rate *RateLimit, maxConcurrent *int64, refill *Refill) error {
	if rate != nil {
		if _, ok := RatePeriods[rate.Per]; !ok || rate.Requests < 1 || rate.Requests > MaxCalls {
			return fmt.Errorf("%w: rateLimit must be {\"requests\": N ≥ 1, \"per\": \"second\", \"minute\", \"hour\" or \"day\"}", ErrInvalidAmount)
		}
	}
	if maxConcurrent != nil && (*maxConcurrent < 1 || *maxConcurrent > MaxCalls) {
		return fmt.Errorf("%w: maxConcurrent must be an integer ≥ 1, or null", ErrInvalidAmount)
	}
	if refill != nil && (refill.Calls < 0 || refill.Calls > MaxCalls || !slices.Contains(RefillPeriods, refill.Every)) {
		return fmt.Errorf("%w: refill must be {\"calls\": N ≥ 0, \"every\": \"day\" or \"month\"}", ErrInvalidAmount)
	}
	return nil
}

// nextRefill is the start of the next period (day or month) after now, in
// the statistics time zone.
func (s *Service) nextRefill(every string, now time.Time) time.Time {
	t := now.In(s.loc)
	start := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, s.loc)
	if every == "month" {
		return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, s.loc).UTC()
	}
	return start.AddDate(0, 0, 1).UTC()
}

// Refill applies every refill due now: each key whose period started gets
// its remaining calls set to its refill's calls, once, whatever the number
// of instances (the change is conditional on the refill still being due),
// recorded as a "refilled" event. It returns how many keys it refilled.
func (s *Service) Refill(ctx context.Context) (int, error) {
	now := s.nowUTC()
	ids, err := s.keys.DueRefills(ctx, now)
	if err != nil {
		return 0, unavailable(err)
	}
	n := 0
	for _, id := range ids {
		k, err := s.keys.KeyByID(ctx, id)
		if err != nil || k.Refill == nil {
			continue // deleted or changed meanwhile
		}
		next := s.nextRefill(k.Refill.Every, now)
		after, err := s.keys.ChangeKey(ctx, KeyRef{ID: id}, KeyChange{RefillDue: true, RefillNextAt: &next, Now: now})
		if err != nil {
			return n, unavailable(err)
		}
		if after.RefillNextAt != nil && after.RefillNextAt.Equal(next) {
			n++
		}
	}
	return n, nil
}

// RunRefills applies due refills every interval until ctx ends.
func (s *Service) RunRefills(ctx context.Context, interval time.Duration) {
	s.every(ctx, interval, s.Refill, "refills failed", "refilled keys", "keys")
}
