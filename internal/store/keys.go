package store

import (
	"strings"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
)

// keyColumns are the columns of api_key_stats that make a quota.Key, in
// the order both stores scan them.
const keyColumns = `id, key_prefix, name, note, total_calls, successful_calls, remaining_calls, reserved_calls,
	used_units, disabled, expires_at, last_used_at, created_at, updated_at,
	rate_requests, rate_per, rate_tat, max_concurrent, in_flight, cost_per_image, refill_calls, refill_every, refill_next_at`

// keyTx is a transaction that changes one key, in a store's own SQL.
type keyTx interface {
	// lock reads the key ref names (not deleted) and locks it until the
	// transaction ends, or returns quota.ErrKeyNotFound.
	lock(ref quota.KeyRef) (quota.Key, error)
	// update writes the key's new state and returns it.
	update(id int64, k keyState) (quota.Key, error)
	// event records one event of the key.
	event(id int64, e quota.Event) error
}

// keyState is what an operator may change on a key.
type keyState struct {
	name, note   string
	disabled     bool
	expiresAt    *time.Time
	remaining    int64
	deleted      bool
	rate         *quota.RateLimit
	concurrent   *int64
	perImage     bool
	refill       *quota.Refill
	refillNextAt *time.Time
	now          time.Time
}

// rateColumns are a rate limit's values for its three columns.
func (st keyState) rateColumns() (requests *int64, per *string, interval *int64) {
	if st.rate == nil {
		return nil, nil, nil
	}
	i := st.rate.Interval()
	return &st.rate.Requests, &st.rate.Per, &i
}

// refillColumns are a refill's values for its columns.
func (st keyState) refillColumns() (calls *int64, every *string) {
	if st.refill == nil {
		return nil, nil
	}
	return &st.refill.Calls, &st.refill.Every
}

// changeKey applies c to the key ref in tx and records its events. The
// key is locked from the first read to the commit, so deciding here what
// to write is exact: no call or operator changes the key in between.
func changeKey(tx keyTx, ref quota.KeyRef, c quota.KeyChange) (quota.Key, error) {
	k, err := tx.lock(ref)
	if err != nil {
		return quota.Key{}, err
	}
	st := keyState{
		name: k.Name, note: k.Note, disabled: k.Disabled, expiresAt: k.ExpiresAt, remaining: k.RemainingCalls,
		rate: k.RateLimit, concurrent: k.MaxConcurrent, perImage: k.CostPerImage, refill: k.Refill, refillNextAt: k.RefillNextAt,
		now: c.Now,
	}
	var events []quota.Event
	at := func(action string) quota.Event { return quota.Event{At: c.Now, Action: action} }

	var updated []string
	if c.Name != nil && *c.Name != k.Name {
		st.name = *c.Name
		updated = append(updated, "name")
	}
	if c.Note != nil && *c.Note != k.Note {
		st.note = *c.Note
		updated = append(updated, "note")
	}
	switch {
	case c.ClearExpiry && k.ExpiresAt != nil:
		st.expiresAt = nil
		updated = append(updated, "expiresAt")
	case c.ExpiresAt != nil && (k.ExpiresAt == nil || !c.ExpiresAt.Equal(*k.ExpiresAt)):
		st.expiresAt = c.ExpiresAt
		updated = append(updated, "expiresAt")
	}
	switch {
	case c.ClearRateLimit && k.RateLimit != nil:
		st.rate = nil
		updated = append(updated, "rateLimit")
	case c.RateLimit != nil && (k.RateLimit == nil || *c.RateLimit != *k.RateLimit):
		st.rate = c.RateLimit
		updated = append(updated, "rateLimit")
	}
	switch {
	case c.ClearMaxConcurrent && k.MaxConcurrent != nil:
		st.concurrent = nil
		updated = append(updated, "maxConcurrent")
	case c.MaxConcurrent != nil && (k.MaxConcurrent == nil || *c.MaxConcurrent != *k.MaxConcurrent):
		st.concurrent = c.MaxConcurrent
		updated = append(updated, "maxConcurrent")
	}
	if c.CostPerImage != nil && *c.CostPerImage != k.CostPerImage {
		st.perImage = *c.CostPerImage
		updated = append(updated, "costPerImage")
	}
	switch {
	case c.ClearRefill && k.Refill != nil:
		st.refill, st.refillNextAt = nil, nil
		updated = append(updated, "refill")
	case c.Refill != nil && (k.Refill == nil || *c.Refill != *k.Refill):
		st.refill, st.refillNextAt = c.Refill, c.RefillNextAt
		updated = append(updated, "refill")
	}
	if len(updated) > 0 {
		e := at(quota.ActionUpdated)
		e.Detail = strings.Join(updated, ", ")
		events = append(events, e)
	}
	if c.Disabled != nil && *c.Disabled != k.Disabled {
		st.disabled = *c.Disabled
		if st.disabled {
			events = append(events, at(quota.ActionDisabled))
		} else {
			events = append(events, at(quota.ActionEnabled))
		}
	}
	if c.Remaining != nil {
		st.remaining = max(*c.Remaining, k.ReservedCalls) // calls in flight keep their hold
		events = append(events, remainingEvent(at(quota.ActionSet), *c.Remaining, k.RemainingCalls, st.remaining))
	}
	if c.TopUp != 0 {
		before := st.remaining
		st.remaining += c.TopUp
		if st.remaining < k.ReservedCalls {
			return quota.Key{}, quota.ErrInsufficientCalls
		}
		events = append(events, remainingEvent(at(quota.ActionTopUp), c.TopUp, before, st.remaining))
	}
	if c.RefillDue && k.Refill != nil && k.RefillNextAt != nil && !k.RefillNextAt.After(c.Now) {
		// Due and not yet applied: another instance that applied it moved
		// refill_next_at on, and this change is then a no-op.
		before := st.remaining
		st.remaining = max(k.Refill.Calls, k.ReservedCalls) // calls in flight keep their hold, as with a set
		st.refillNextAt = c.RefillNextAt
		events = append(events, remainingEvent(at(quota.ActionRefilled), k.Refill.Calls, before, st.remaining))
	}
	if c.Delete {
		st.deleted = true
		events = append(events, at(quota.ActionDeleted))
	}
	if len(events) == 0 {
		return k, nil
	}
	out, err := tx.update(k.ID, st)
	if err != nil {
		return quota.Key{}, err
	}
	for _, e := range events {
		if err := tx.event(k.ID, e); err != nil {
			return quota.Key{}, err
		}
	}
	return out, nil
}

// remainingEvent fills in a change of remaining calls: what was asked
// (calls), and the value before and after.
func remainingEvent(e quota.Event, calls, before, after int64) quota.Event {
	e.Calls, e.Before, e.After = &calls, &before, &after
	return e
}

// newKeyState is the state a new key is created with.
func newKeyState(n quota.NewKey) keyState {
	return keyState{
		rate: n.Policies.RateLimit, concurrent: n.Policies.MaxConcurrent, perImage: n.Policies.CostPerImage,
		refill: n.Policies.Refill, refillNextAt: n.Policies.RefillNextAt,
	}
}

// createdEvent is a new key's first event: from 0 to its remaining calls.
func createdEvent(n quota.NewKey) quota.Event {
	return remainingEvent(quota.Event{At: n.Now, Action: quota.ActionCreated}, n.Remaining, 0, n.Remaining)
}

// statusCondition is the SQL condition on api_key_stats of ListKeys'
// status filter, given the placeholders of the filter (status) and of
// the current time (now), each written as its store writes them.
func statusCondition(status, now string) string {
	live := `(expires_at IS NULL OR expires_at > ` + now + `)`
	return `(` + status + ` = ''
		OR ` + status + ` = '` + quota.StatusDisabled + `' AND disabled
		OR ` + status + ` = '` + quota.StatusActive + `' AND NOT disabled AND ` + live + `
		OR ` + status + ` = '` + quota.StatusExpired + `' AND NOT disabled AND NOT ` + live + `
		OR ` + status + ` = '` + quota.StatusExhausted + `' AND NOT disabled AND ` + live + ` AND remaining_calls <= reserved_calls)`
}

// outcomeState is the calls.state an outcome filter selects.
func outcomeState(outcome string) string {
	switch outcome {
	case quota.OutcomeSuccess:
		return "settled"
	case quota.OutcomeFailed:
		return "released"
	case quota.OutcomeOpen:
		return "open"
	}
	return ""
}

// callOutcome is the outcome of a call in state.
func callOutcome(state string) string {
	switch state {
	case "settled":
		return quota.OutcomeSuccess
	case "released":
		return quota.OutcomeFailed
	}
	return quota.OutcomeOpen
}

// finishCall fills in the fields of a call derived from its raw columns.
func finishCall(c *quota.Call, state string, status int) {
	c.Outcome = callOutcome(state)
	if status != 0 {
		c.Status = &status
	}
	if c.FinishedAt != nil {
		ms := c.FinishedAt.Sub(c.StartedAt).Milliseconds()
		c.LatencyMs = &ms
	}
}

// setPolicies fills in a key's policies from their nullable columns.
func setPolicies(k *quota.Key, rateRequests *int64, ratePer *string, maxConcurrent *int64, refillCalls *int64, refillEvery *string) {
	if rateRequests != nil && ratePer != nil {
		k.RateLimit = &quota.RateLimit{Requests: *rateRequests, Per: *ratePer}
	}
	k.MaxConcurrent = maxConcurrent
	if refillCalls != nil && refillEvery != nil {
		k.Refill = &quota.Refill{Calls: *refillCalls, Every: *refillEvery}
	}
}
