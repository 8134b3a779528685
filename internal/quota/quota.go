// Package quota owns Felix's accounting rules: API keys (generate, hash,
// mask), the reserve → settle/release life of a call, why a call is
// refused, orphan recovery and site statistics. It declares the store
// roles it needs (Ledger, Keys, Usage) and imports no driver.
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
	ErrCallReleased = errors.New("call was already released")

	// ErrExhausted matches a RefusedError whose reason is Exhausted.
	ErrExhausted = errors.New("quota exhausted")

	ErrInvalidKeyFormat = errors.New("invalid api key")
	ErrInvalidAmount    = errors.New("invalid amount")
	// ErrUnavailable wraps every store failure that is not one of the above.
	ErrUnavailable = errors.New("store unavailable")
)

// Key is one API key's state. The plaintext key is never stored; Prefix is
// its display start.
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

// ReserveRequest asks a Ledger to admit one call of Cost for the key whose
// hash is KeyHash, owned by Owner, to be resolved before Deadline.
type ReserveRequest struct {
	KeyHash   string
	Cost      int64
	Owner     string
	RequestID string
	Start     time.Time
	Deadline  time.Time
}

// Admission is a Ledger's answer to a ReserveRequest. CallID is 0 when the
// call was not admitted; then Key is the key's state as read after the
// refusal (nil when no such key exists), from which the Service tells why.
type Admission struct {
	CallID int64
	KeyID  int64
	Cost   int64
	Key    *Key
}

// Admitted reports whether the call was admitted.
func (a Admission) Admitted() bool { return a.CallID != 0 }

// Outcome is how a call ended.
type Outcome struct {
	CallID int64
	KeyID  int64     // the call's key, so that stores can lock keys in order
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

// Ledger records the life of calls. Every method that changes a counter
// does it in one atomic conditional write, durable before it returns.
type Ledger interface {
	// Reserve admits a call only while the key's conditions hold
	// (remaining − reserved ≥ cost), counts it in totalCalls and records
	// it as open, all in one conditional write. A refusal is not an
	// error: it is an Admission without a call.
	Reserve(ctx context.Context, r ReserveRequest) (Admission, error)
	// Settle charges an open call: successful +1, remaining −cost, the
	// day's generations +1. Settling a settled call is a no-op; settling a
	// released one returns ErrCallReleased.
	Settle(ctx context.Context, o Outcome) error
	// Release frees an open call without charging it. Releasing a call
	// that is no longer open is a no-op.
	Release(ctx context.Context, o Outcome) error
	// ReleaseExpired releases open calls whose deadline is before now, and
	// ReleaseOwner those of owner started before now. Both return how many.
	ReleaseExpired(ctx context.Context, now time.Time) (int, error)
	ReleaseOwner(ctx context.Context, owner string, now time.Time) (int, error)
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
}

// Keys stores API keys.
type Keys interface {
	CreateKey(ctx context.Context, k NewKey) (Key, error)
	KeyByHash(ctx context.Context, hash string) (Key, error)
	// SetRemaining sets remaining calls to max(n, reserved calls).
	SetRemaining(ctx context.Context, hash string, n int64, now time.Time) (Key, error)
	ListKeys(ctx context.Context, o ListOptions) ([]Key, error)
}

// Usage reads what calls added up to.
type Usage interface {
	// SiteStats returns the total and the days from since on.
	SiteStats(ctx context.Context, since string) (SiteStats, error)
}
