// Package quota owns Felix's accounting rules: API keys (generate, hash,
// mask), the reserve → settle/release life of a call, why a call is
// refused, orphan recovery and site statistics. It declares the store
// roles it needs (Ledger, Keys, Usage) and imports no driver.
package quota

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Sentinel errors. Stores return the first group; the HTTP layer maps all
// of them to the SPEC's error codes.
var (
	ErrKeyNotFound  = errors.New("api key not found")
	ErrKeyExists    = errors.New("api key already exists")
	ErrCallReleased = errors.New("call was already released")
	// ErrInsufficientCalls refuses a change that would leave a key fewer
	// remaining calls than it has in flight.
	ErrInsufficientCalls = errors.New("fewer remaining calls than calls in flight")

	// ErrExhausted matches a RefusedError whose reason is Exhausted.
	ErrExhausted = errors.New("quota exhausted")

	ErrInvalidKeyFormat = errors.New("invalid api key")
	ErrInvalidAmount    = errors.New("invalid amount")
	// ErrUnavailable wraps every store failure that is not one of the above.
	ErrUnavailable = errors.New("store unavailable")
	// ErrReadOnly is a store failure (wrapped in ErrUnavailable too) whose
	// cause is that the store refuses writes: a PostgreSQL standby, a
	// server with default_transaction_read_only on, a read-only SQLite file.
	ErrReadOnly = errors.New("store is read-only")
)

// Key is one API key's state. The plaintext key is never stored; Prefix is
// its display start.
type Key struct {
	ID              int64
	Prefix          string
	Name            string
	Note            string
	TotalCalls      int64 // calls admitted and sent towards the target
	SuccessfulCalls int64 // calls the target answered 2xx
	RemainingCalls  int64 // calls left, in flight ones included
	ReservedCalls   int64 // calls in flight, held apart from RemainingCalls
	UsedUnits       int64 // units charged by successful calls
	Disabled        bool
	ExpiresAt       *time.Time
	LastUsedAt      *time.Time // when its last call was admitted
	CreatedAt       time.Time
	UpdatedAt       time.Time

	// Policies (nil or false when unset).
	RateLimit     *RateLimit
	MaxConcurrent *int64
	CostPerImage  bool
	Refill        *Refill

	// State of the policies, for telling why a call was refused.
	RateTAT      int64      // GCRA theoretical arrival time of the next call, Unix µs
	InFlight     int64      // open calls (ReservedCalls is their cost)
	RefillNextAt *time.Time // when the next refill is due
}

// The statuses of a key.
const (
	StatusActive   = "active"
	StatusDisabled = "disabled"
	StatusExpired  = "expired"
	// StatusExhausted is not a key's status but a filter of ListKeys: the
	// active keys that cannot admit a call (no calls left beyond those in
	// flight).
	StatusExhausted = "exhausted"
)

// Status is the key's status at now: disabled, expired or active.
func (k Key) Status(now time.Time) string {
	switch {
	case k.Disabled:
		return StatusDisabled
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

// Stats is a key as clients and operators see it: the seed's fields (its
// api_key_stats table) first, then Felix's own. APIKey is masked.
type Stats struct {
	ID              int64      `json:"id"`
	APIKey          string     `json:"apiKey"`
	TotalCalls      int64      `json:"totalCalls"`
	SuccessfulCalls int64      `json:"successfulCalls"`
	RemainingCalls  int64      `json:"remainingCalls"`
	CreatedAt       time.Time  `json:"createdAt"`
	UpdatedAt       time.Time  `json:"updatedAt"`
	Name            string     `json:"name"`
	Note            string     `json:"note"`
	Status          string     `json:"status"`
	ExpiresAt       *time.Time `json:"expiresAt"`
	ReservedCalls   int64      `json:"reservedCalls"`
	UsedUnits       int64      `json:"usedUnits"`
	LastUsedAt      *time.Time `json:"lastUsedAt"`
	RateLimit       *RateLimit `json:"rateLimit"`
	MaxConcurrent   *int64     `json:"maxConcurrent"`
	CostPerImage    bool       `json:"costPerImage"`
	Refill          *Refill    `json:"refill"`
}

// RateLimit allows Requests calls per Per ("second", "minute", "hour" or
// "day") as a token bucket: a burst of up to Requests, then one call every
// Per/Requests.
type RateLimit struct {
	Requests int64  `json:"requests"`
	Per      string `json:"per"`
}

// RatePeriods are the periods a RateLimit may have.
var RatePeriods = map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}

// Interval is the rate's emission interval in microseconds: the time one
// call uses up (at least 1 µs).
func (r RateLimit) Interval() int64 {
	return max(RatePeriods[r.Per].Microseconds()/r.Requests, 1)
}

// Refill sets remaining calls to Calls at the start of Every ("day" or
// "month"), in the statistics time zone.
type Refill struct {
	Calls int64  `json:"calls"`
	Every string `json:"every"`
}

// RefillPeriods are the periods a Refill may have.
var RefillPeriods = []string{"day", "month"}

// Stats returns the key as clients see it at now, with its masked display
// prefix.
func (k Key) Stats(now time.Time) Stats {
	return Stats{
		ID: k.ID, APIKey: k.Prefix + "…",
		TotalCalls: k.TotalCalls, SuccessfulCalls: k.SuccessfulCalls, RemainingCalls: k.RemainingCalls,
		CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt,
		Name: k.Name, Note: k.Note, Status: k.Status(now), ExpiresAt: k.ExpiresAt,
		ReservedCalls: k.ReservedCalls, UsedUnits: k.UsedUnits, LastUsedAt: k.LastUsedAt,
		RateLimit: k.RateLimit, MaxConcurrent: k.MaxConcurrent, CostPerImage: k.CostPerImage, Refill: k.Refill,
	}
}

// NewKey is what a store needs to create a key.
type NewKey struct {
	Hash      string
	Prefix    string
	Name      string
	Note      string
	Remaining int64
	ExpiresAt *time.Time
	Policies  Policies
	Now       time.Time
}

// Policies are a key's limits and rules.
type Policies struct {
	RateLimit     *RateLimit
	MaxConcurrent *int64
	CostPerImage  bool
	Refill        *Refill
	RefillNextAt  *time.Time // the first refill; set when Refill is
}

// ReserveRequest asks a Ledger to admit one call for the key whose hash is
// KeyHash, owned by Owner, to be resolved before Deadline. The call costs 1,
// or BatchSize when the key charges per image.
type ReserveRequest struct {
	KeyHash   string
	BatchSize int64
	// IdempotencyKey, when set, is the claim the admitted call belongs to.
	IdempotencyKey string
	Owner          string
	RequestID      string
	Start          time.Time
	Deadline       time.Time
}

// IdemClaim asks to start a call with an Idempotency-Key: Key, scoped to
// the API key whose hash is KeyHash; BodyHash identifies the request.
type IdemClaim struct {
	KeyHash   string
	Key       string
	BodyHash  string
	RequestID string
	Now       time.Time
	Deadline  time.Time // a claim without a call is abandoned after it
	Expires   time.Time // the Idempotency-Key is forgotten after it
}

// IdemState is what a claim found.
type IdemState int

// The states of an idempotency claim.
const (
	IdemClaimed    IdemState = iota + 1 // the call may go on: it is the first (or the first failed)
	IdemInProgress                      // the first call is in flight
	IdemSucceeded                       // the first call succeeded
	IdemReused                          // the key was used with another request body
	IdemNoKey                           // no such API key: the call goes on, and is refused
)

// IdemResult is a claim's answer. For IdemSucceeded, Stored tells whether
// the first answer (Status, ContentType, Body) was kept for replay;
// RequestID is the first call's.
type IdemResult struct {
	State       IdemState
	Stored      bool
	Status      int
	ContentType string
	Body        []byte
	RequestID   string
}

// IdemFinish records how the call of a claim ended: succeeded (with its
// answer when Stored) or failed.
type IdemFinish struct {
	KeyHash     string
	Key         string
	Succeeded   bool
	Stored      bool
	Status      int
	ContentType string
	Body        []byte
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
	Cost   int64     // the call's cost, as its reservation returned it
	Status int       // HTTP status from the target, 0 when none arrived
	At     time.Time // when it ended
	Day    string    // At's calendar day (YYYY-MM-DD) in the statistics time zone
	Target string    // the target's base URL, "" when none was tried
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

// KeyRef addresses a key by its id or, when ID is 0, by its hash.
type KeyRef struct {
	ID   int64
	Hash string
}

// KeyChange is what an operator changes on a key. A store applies it and
// records its events in one transaction; nil fields stay as they are.
type KeyChange struct {
	Name        *string
	Note        *string
	Disabled    *bool
	ExpiresAt   *time.Time
	ClearExpiry bool   // expiresAt becomes null
	Remaining   *int64 // set remaining calls, raised to the calls in flight
	TopUp       int64  // add calls (remove, when negative); ErrInsufficientCalls below the calls in flight
	Delete      bool   // the key stops working; its rows stay for the books

	RateLimit          *RateLimit
	ClearRateLimit     bool
	MaxConcurrent      *int64
	ClearMaxConcurrent bool
	CostPerImage       *bool
	Refill             *Refill
	ClearRefill        bool
	// RefillNextAt is when the next refill is due: set with Refill, and
	// with RefillDue.
	RefillNextAt *time.Time
	// RefillDue applies the key's refill if it is due at Now (and does
	// nothing if another instance applied it already).
	RefillDue bool

	Now time.Time
}

// The actions of key events.
const (
	ActionCreated  = "created"
	ActionSet      = "set"
	ActionTopUp    = "topup"
	ActionUpdated  = "updated"
	ActionDisabled = "disabled"
	ActionEnabled  = "enabled"
	ActionDeleted  = "deleted"
	ActionRefilled = "refilled"
)

// Event is one change to a key by anyone but a call. Every change to
// remaining calls has Before and After, so that the books can be proved
// from the events alone.
type Event struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"`
	Calls  *int64    `json:"calls,omitempty"`
	Before *int64    `json:"before,omitempty"`
	After  *int64    `json:"after,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// KeyFilter selects and pages keys, newest first.
type KeyFilter struct {
	Query  string    // matches the name, the note or the display prefix; empty for all
	Status string    // StatusActive, StatusDisabled, StatusExpired, StatusExhausted or "" for all
	Now    time.Time // for Status
	Limit  int
	Before int64 // only keys with a smaller id (the cursor); 0 for the newest
}

// KeyDay is one day of a key's use.
type KeyDay struct {
	Date        string `json:"date"`
	Generations int64  `json:"generations"` // successful calls
	Units       int64  `json:"units"`       // units they were charged
}

// The outcomes of a call in the usage log.
const (
	OutcomeSuccess = "success"
	OutcomeFailed  = "failed"
	OutcomeOpen    = "open"
)

// Call is one admitted call: a row of the usage log.
type Call struct {
	ID         int64      `json:"id"`
	KeyID      int64      `json:"keyId"`
	KeyPrefix  string     `json:"keyPrefix"`
	RequestID  string     `json:"requestId"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt"`
	Outcome    string     `json:"outcome"`
	Status     *int       `json:"status"`
	LatencyMs  *int64     `json:"latencyMs"`
	BatchSize  int64      `json:"batchSize"`
	Cost       int64      `json:"cost"`
	Target     string     `json:"target"`
}

// CallColumns name the fields of a Call as CSV columns: its JSON names.
var CallColumns = []string{"id", "keyId", "keyPrefix", "requestId", "startedAt", "finishedAt", "outcome", "status", "latencyMs", "batchSize", "cost", "target"}

// Record returns the call as a CSV record in the order of CallColumns;
// absent values are empty.
func (c Call) Record() []string {
	optInt := func(p *int64) string {
		if p == nil {
			return ""
		}
		return strconv.FormatInt(*p, 10)
	}
	status, finished := "", ""
	if c.Status != nil {
		status = strconv.Itoa(*c.Status)
	}
	if c.FinishedAt != nil {
		finished = c.FinishedAt.Format(time.RFC3339Nano)
	}
	return []string{
		strconv.FormatInt(c.ID, 10), strconv.FormatInt(c.KeyID, 10), c.KeyPrefix, c.RequestID,
		c.StartedAt.Format(time.RFC3339Nano), finished, c.Outcome, status, optInt(c.LatencyMs),
		strconv.FormatInt(c.BatchSize, 10), strconv.FormatInt(c.Cost, 10), c.Target,
	}
}

// CallFilter selects and pages calls, newest first.
type CallFilter struct {
	KeyID   int64      // 0 for every key
	From    *time.Time // started at or after
	To      *time.Time // started before
	Outcome string     // OutcomeSuccess, OutcomeFailed, OutcomeOpen or "" for all
	Limit   int        // 0 for no limit
	Before  int64      // only calls with a smaller id (the cursor); 0 for the newest
}

// Audit is what the books are proved from: per key, and the site's total.
type Audit struct {
	Keys []KeyAudit
	// SiteGenerations is the sum of the site's daily history.
	SiteGenerations int64
}

// KeyAudit is one key's side of the books.
type KeyAudit struct {
	ID              int64
	Prefix          string
	Deleted         bool
	EventsChange    int64 // Σ over its events of (after − before)
	UsedUnits       int64
	RemainingCalls  int64
	SuccessfulCalls int64
	DailyCalls      int64 // Σ generations of its daily history
	DailyUnits      int64 // Σ units of its daily history
}

// Ledger records the life of calls. Every method that changes a counter
// does it in one atomic conditional write, durable before it returns.
type Ledger interface {
	// Reserve admits a call only while the key's conditions hold
	// (enabled, not expired, within its rate limit and concurrency cap,
	// remaining − reserved ≥ cost), counts it in totalCalls, takes its
	// rate-limit slot and records it as open, all in one conditional
	// write. A refusal is not an error: it is an Admission without a call.
	Reserve(ctx context.Context, r ReserveRequest) (Admission, error)
	// Settle charges an open call: successful +1, remaining −cost, the
	// day's generations +1. Settling a settled call is a no-op; settling a
	// released one returns ErrCallReleased.
	Settle(ctx context.Context, o Outcome) error
	// Release frees an open call without charging it. Releasing a call
	// that is no longer open is a no-op.
	Release(ctx context.Context, o Outcome) error
	// ClaimIdempotency records that a call with an Idempotency-Key starts,
	// or tells what the first call with that key did (SPEC §4.3).
	ClaimIdempotency(ctx context.Context, c IdemClaim) (IdemResult, error)
	// FinishIdempotency records how a claimed call ended.
	FinishIdempotency(ctx context.Context, f IdemFinish) error
	// PruneIdempotency forgets the keys that expired before now.
	PruneIdempotency(ctx context.Context, now time.Time) (int, error)
	// ReleaseExpired releases open calls whose deadline is before now, and
	// ReleaseOwner those of owner started before now. Both return how many.
	ReleaseExpired(ctx context.Context, now time.Time) (int, error)
	ReleaseOwner(ctx context.Context, owner string, now time.Time) (int, error)
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Writable reports whether the store accepts writes now: nil, an error
	// wrapping ErrReadOnly, or why it could not tell. It must be cheap
	// enough for a load balancer to poll.
	Writable(ctx context.Context) error
}

// Keys stores API keys and their events.
type Keys interface {
	// CreateKey inserts a key with its "created" event; a key with the same
	// hash is ErrKeyExists.
	CreateKey(ctx context.Context, k NewKey) (Key, error)
	// KeyByHash and KeyByID return a key that is not deleted, or
	// ErrKeyNotFound.
	KeyByHash(ctx context.Context, hash string) (Key, error)
	KeyByID(ctx context.Context, id int64) (Key, error)
	// ChangeKey applies a change and records its events atomically.
	ChangeKey(ctx context.Context, ref KeyRef, c KeyChange) (Key, error)
	ListKeys(ctx context.Context, f KeyFilter) ([]Key, error)
	// KeyEvents returns a key's events, oldest first (deleted keys too).
	KeyEvents(ctx context.Context, id int64) ([]Event, error)
	// DueRefills returns the ids of the keys whose refill is due at now.
	DueRefills(ctx context.Context, now time.Time) ([]int64, error)
}

// Usage reads what calls added up to, and keeps the usage log.
type Usage interface {
	// SiteStats returns the total and the days from since on.
	SiteStats(ctx context.Context, since string) (SiteStats, error)
	// KeyDaily returns a key's days with use from since on, oldest first.
	KeyDaily(ctx context.Context, keyID int64, since string) ([]KeyDay, error)
	// Calls calls each for the calls f selects, newest first, streaming
	// them (each may write them out); it stops at each's first error.
	Calls(ctx context.Context, f CallFilter, each func(Call) error) error
	// PruneCalls deletes at most limit finished calls started before
	// before, oldest first, and returns how many. Counters, the site's
	// totals and the daily histories are not touched.
	PruneCalls(ctx context.Context, before time.Time, limit int) (int, error)
	// Audit reads the sums the books are checked with.
	Audit(ctx context.Context) (Audit, error)
}
