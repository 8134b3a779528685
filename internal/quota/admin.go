package quota

import (
	"context"
	"fmt"
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
	k, err := s.keys.CreateKey(ctx, NewKey{
		Hash: HashKey(key), Prefix: DisplayPrefix(key), Name: spec.Name, Note: spec.Note,
		Remaining: spec.Remaining, ExpiresAt: utc(spec.ExpiresAt), Now: s.nowUTC(),
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
	c.ExpiresAt = utc(c.ExpiresAt)
	c.Now = s.nowUTC()
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
