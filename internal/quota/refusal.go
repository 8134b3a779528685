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
	UnknownKey Refusal = iota + 1 // no such key, or deleted
	Disabled                      // switched off by an operator
	Expired                       // past its expiresAt
	Exhausted                     // remaining − reserved below the call's cost
)

func (r Refusal) String() string {
	switch r {
	case UnknownKey:
		return "unknown_key"
	case Disabled:
		return "disabled"
	case Expired:
		return "expired"
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

// refusal tells why a call of cost starting at now was not admitted, from
// the key's state as the store read it after refusing, checking the
// reasons in their order. It returns 0 when that state would admit the
// call: the state changed in between (a call ended), and the reservation
// may be tried again.
func refusal(k *Key, cost int64, now time.Time) Refusal {
	switch {
	case k == nil:
		return UnknownKey
	case k.Disabled:
		return Disabled
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return Expired
	case k.RemainingCalls-k.ReservedCalls < cost:
		return Exhausted
	}
	return 0
}
