package quota

import (
	"fmt"
	"time"
)

// Refusal names why a call was not admitted. When several reasons apply,
// the first in this order answers (SPEC §4.3).
type Refusal int

// The reasons, in the order they are checked.
const (
	UnknownKey         Refusal = iota + 1 // no such key, or deleted
	Disabled                              // switched off by an operator
	Expired                               // past its expiresAt
	RateLimited                           // over its rate limit
	ConcurrencyLimited                    // as many calls in flight as its cap
	Exhausted                             // remaining − reserved below the call's cost
)

func (r Refusal) String() string {
	switch r {
	case UnknownKey:
		return "unknown_key"
	case Disabled:
		return "disabled"
	case Expired:
		return "expired"
	case RateLimited:
		return "rate_limited"
	case ConcurrencyLimited:
		return "concurrency_limited"
	case Exhausted:
		return "exhausted"
	}
	return fmt.Sprintf("refusal(%d)", int(r))
}

// RefusedError is the error of a call that was not admitted. It matches
// the sentinel of its reason with errors.Is (ErrKeyNotFound, ErrExhausted;
// the other reasons have none).
type RefusedError struct {
	Reason Refusal
	// RetryAfter is how long until a call could be admitted, when known.
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string { return "call refused: " + e.Reason.String() }

// Is lets errors.Is match a refusal against its reason's sentinel.
func (e *RefusedError) Is(target error) bool {
	switch e.Reason {
	case UnknownKey:
		return target == ErrKeyNotFound
	case Exhausted:
		return target == ErrExhausted
	}
	return false
}

// refusal tells why a call of batch images starting at now was not
// admitted, from the key's state as the store read it after refusing,
// checking the reasons in their order (SPEC §4.3), and how long until a
// call could be admitted when that is known. It returns 0 when that state
// would admit the call: the state changed in between (a call ended), and
// the reservation may be tried again.
func refusal(k *Key, batch int64, now time.Time) (Refusal, time.Duration) {
	switch {
	case k == nil:
		return UnknownKey, 0
	case k.Disabled:
		return Disabled, 0
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return Expired, 0
	}
	if wait := rateWait(k, now); wait > 0 {
		return RateLimited, wait
	}
	switch {
	case k.MaxConcurrent != nil && k.InFlight >= *k.MaxConcurrent:
		return ConcurrencyLimited, time.Second
	case k.RemainingCalls-k.ReservedCalls < k.Cost(batch):
		return Exhausted, 0
	}
	return 0, 0
}

// Cost is what a call of batch images costs with this key: its batch size
// when it charges per image, else 1.
func (k Key) Cost(batch int64) int64 {
	if k.CostPerImage {
		return max(batch, 1)
	}
	return 1
}

// rateWait is how long until the key's rate limit admits a call at now,
// by the GCRA the store applies: a call is admitted while
// max(tat, now) + interval − now ≤ interval × requests; 0 when it would be
// admitted now (or the key has no limit).
func rateWait(k *Key, now time.Time) time.Duration {
	if k.RateLimit == nil {
		return 0
	}
	t := k.RateLimit.Interval()
	at := now.UnixMicro()
	wait := max(k.RateTAT, at) + t - at - t*k.RateLimit.Requests
	return time.Duration(max(wait, 0)) * time.Microsecond
}
