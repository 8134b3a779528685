package quota

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ErrInvalidIdempotencyKey refuses an Idempotency-Key that is empty, longer
// than 255 characters or has characters outside '!' … '~'.
var ErrInvalidIdempotencyKey = errors.New("invalid Idempotency-Key")

// Idempotency's defaults (IDEMPOTENCY_TTL, IDEMPOTENCY_MAX_BYTES).
const (
	DefaultIdempotencyTTL      = 24 * time.Hour
	DefaultIdempotencyMaxBytes = 16 << 20
)

// ValidateIdempotencyKey reports why an Idempotency-Key is unacceptable, or
// nil.
func ValidateIdempotencyKey(k string) error {
	if k == "" || len(k) > 255 {
		return fmt.Errorf("%w: it must be 1 to 255 characters long", ErrInvalidIdempotencyKey)
	}
	for i := range len(k) {
		if k[i] < '!' || k[i] > '~' {
			return fmt.Errorf("%w: it may hold only the printable ASCII characters ! to ~, no spaces", ErrInvalidIdempotencyKey)
		}
	}
	return nil
}

// Idempotent is a call with an Idempotency-Key that was claimed: the first
// call with that key (or the first after a failed one). Exactly one of
// its Succeeded or Failed should follow once the call ends; if neither
// does (the process died), the claim is judged by its call's state.
type Idempotent struct {
	s       *Service
	keyHash string
	key     string
	// MaxBytes is the largest answer kept for replay; larger ones are
	// recorded as succeeded without their answer.
	MaxBytes int64
}

// Key is the Idempotency-Key, for Reserve.
func (i *Idempotent) Key() string { return i.key }

// ClaimIdempotency starts a call with the Idempotency-Key idem for the API
// key, whose request is body (Felix's re-encoding, so that where the key
// was sent and whitespace do not matter). It returns what the first call
// with that key did and, when this call may go on, its claim. A call
// whose first succeeded needs a key that is still valid and enabled
// (*RefusedError otherwise), but no calls or rate-limit slot.
func (s *Service) ClaimIdempotency(ctx context.Context, key, idem string, body []byte, requestID string) (IdemResult, *Idempotent, error) {
	if err := ValidateIdempotencyKey(idem); err != nil {
		return IdemResult{}, nil, err
	}
	if err := ValidateKey(key); err != nil {
		return IdemResult{}, nil, err
	}
	sum := sha256.Sum256(body)
	now := s.nowUTC()
	c := IdemClaim{
		KeyHash: HashKey(key), Key: idem, BodyHash: hex.EncodeToString(sum[:]), RequestID: requestID,
		Now: now, Deadline: now.Add(s.hold), Expires: now.Add(s.idemTTL),
	}
	res, err := s.ledger.ClaimIdempotency(ctx, c)
	if err != nil {
		return IdemResult{}, nil, unavailable(err)
	}
	switch res.State {
	case IdemClaimed:
		return res, &Idempotent{s: s, keyHash: c.KeyHash, key: idem, MaxBytes: s.idemMaxBytes}, nil
	case IdemSucceeded:
		k, err := s.keys.KeyByHash(ctx, c.KeyHash)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return IdemResult{}, nil, unavailable(err)
		}
		var kp *Key
		if err == nil {
			kp = &k
		}
		if reason, _ := refusal(kp, 1, now); reason == UnknownKey || reason == Disabled || reason == Expired {
			return IdemResult{}, nil, &RefusedError{Reason: reason}
		}
	}
	return res, nil, nil
}

// Succeeded records that the call succeeded, with its answer for replay
// when stored (it was read whole and fits MaxBytes).
func (i *Idempotent) Succeeded(ctx context.Context, status int, contentType string, body []byte, stored bool) {
	i.finish(ctx, IdemFinish{Succeeded: true, Stored: stored, Status: status, ContentType: contentType, Body: body})
}

// Failed records that the call failed or was refused: a repeat is a new
// call.
func (i *Idempotent) Failed(ctx context.Context) { i.finish(ctx, IdemFinish{}) }

func (i *Idempotent) finish(ctx context.Context, f IdemFinish) {
	f.KeyHash, f.Key = i.keyHash, i.key
	err := i.s.withTimeout(context.WithoutCancel(ctx), func(ctx context.Context) error { return i.s.ledger.FinishIdempotency(ctx, f) })
	if err != nil {
		// The claim stays in flight; a repeat is judged by its call's state.
		i.s.log.Warn("recording an idempotent call's end failed", "err", err)
	}
}
