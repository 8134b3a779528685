// Package quota owns Felix's accounting rules: API keys (generate, hash,
// mask), the reserve → settle/release life of a call, orphan recovery and
// site statistics. It declares the Store it needs and imports no driver.
package quota

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Stores return the first group; the HTTP layer maps all
// of them to the SPEC's error codes.
var (
	ErrKeyNotFound  = errors.New("api key not found")
	ErrKeyExists    = errors.New("api key already exists")
	ErrExhausted    = errors.New("quota exhausted")
	ErrCallReleased = errors.New("call was already released")

	ErrInvalidKeyFormat = errors.New("invalid api key")
	ErrInvalidAmount    = errors.New("invalid amount")
	// ErrUnavailable wraps every store failure that is not one of the above.
	ErrUnavailable = errors.New("store unavailable")
)

// Key is the statistics of one API key. The plaintext key is never stored;
// Prefix is its display start.
type Key struct {
	ID              int64
	Prefix          string
	Name            string
	TotalCalls      int64 // calls admitted and sent towards the target
	SuccessfulCalls int64 // calls the target answered 2xx
	RemainingCalls  int64 // calls left, in flight ones included
	ReservedCalls   int64 // calls in flight, held apart from RemainingCalls
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Stats is a key's statistics as clients see them, under the seed's field
// names (its api_key_stats table) plus Felix's own. APIKey is masked.
type Stats struct {
	ID              int64     `json:"id"`
	APIKey          string    `json:"apiKey"`
	Name            string    `json:"name"`
	TotalCalls      int64     `json:"totalCalls"`
	SuccessfulCalls int64     `json:"successfulCalls"`
	RemainingCalls  int64     `json:"remainingCalls"`
	ReservedCalls   int64     `json:"reservedCalls"`
	CreatedAt       time.Time `json:"createdAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
}

// Stats returns the key's statistics with its masked display prefix.
func (k Key) Stats() Stats {
	return Stats{
		ID: k.ID, APIKey: k.Prefix + "…", Name: k.Name,
		TotalCalls: k.TotalCalls, SuccessfulCalls: k.SuccessfulCalls, RemainingCalls: k.RemainingCalls, ReservedCalls: k.ReservedCalls,
		CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt,
	}
}

// NewKey is what a store needs to create a key.
type NewKey struct {
	Hash      string
	Prefix    string
	Name      string
	Remaining int64
	Now       time.Time
}

// Call is a reservation request: admit one call of Cost for the key whose
// hash is KeyHash, owned by Owner, to be resolved before Deadline.
type Call struct {
	KeyHash   string
	Cost      int64
	Owner     string
	RequestID string
	Start     time.Time
	Deadline  time.Time
}

// Outcome is how a call ended.
type Outcome struct {
	Status int       // HTTP status from the target, 0 when none arrived
	At     time.Time // when it ended
	Day    string    // At's calendar day (YYYY-MM-DD) in the statistics time zone
}

// Day is one row of the daily history.
type Day struct {
	Date        string `json:"date"`
	Generations int64  `json:"generations"`
}

// SiteStats are the site-wide counters.
type SiteStats struct {
	TotalGenerations int64
	Days             []Day // oldest first
}

// ListOptions select and page keys.
type ListOptions struct {
	Search string // matches the display prefix or the name; empty for all
	Limit  int
	Offset int
}

// Store keeps keys, calls and daily counts durably. Every method that
// changes a counter does it in one atomic conditional write.
type Store interface {
	CreateKey(ctx context.Context, k NewKey) (Key, error)
	KeyByHash(ctx context.Context, hash string) (Key, error)
	// SetRemaining sets remaining calls to max(n, reserved calls).
	SetRemaining(ctx context.Context, hash string, n int64, now time.Time) (Key, error)
	ListKeys(ctx context.Context, o ListOptions) ([]Key, error)

	// Reserve admits a call only while remaining − reserved ≥ cost, counts
	// it in totalCalls and records it as open. It returns the call's id,
	// ErrKeyNotFound or ErrExhausted.
	Reserve(ctx context.Context, c Call) (int64, error)
	// Settle charges an open call: successful +1, remaining −cost, the
	// day's generations +1. Settling a settled call is a no-op; settling a
	// released one returns ErrCallReleased.
	Settle(ctx context.Context, callID int64, o Outcome) error
	// Release frees an open call without charging it. Releasing a call
	// that is no longer open is a no-op.
	Release(ctx context.Context, callID int64, o Outcome) error
	// ReleaseExpired releases open calls whose deadline is before now, and
	// ReleaseOwner those of owner started before now. Both return how many.
	ReleaseExpired(ctx context.Context, now time.Time) (int, error)
	ReleaseOwner(ctx context.Context, owner string, now time.Time) (int, error)

	// SiteStats returns the total and the days from since on.
	SiteStats(ctx context.Context, since string) (SiteStats, error)
	Ping(ctx context.Context) error
	Close() error
}
