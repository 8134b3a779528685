package server

import (
	"net/http"

	"github.com/felix-gateway/felix/internal/quota"
)

// The admin API of keys by id (SPEC §4.1). The plaintext key is a
// credential, never an address: after creation an operator names a key by
// its id.

// Field limits of a key.
const (
	maxNameLen = 200
	maxNoteLen = 2000
)

// createKeyByID is POST /api/keys.
func (s *Server) createKeyByID(w http.ResponseWriter, r *http.Request) error {
	obj, err := s.adminBody(w, r, append([]string{"remainingCalls", "name", "note", "apiKey", "expiresAt"}, policyFields...)...)
	if err != nil {
		return err
	}
	var spec quota.KeySpec
	if spec.Remaining, err = obj.requiredInt("remainingCalls", 0, maxCalls); err != nil {
		return err
	}
	if spec.Key, err = obj.str("apiKey", 1<<10); err != nil {
		return err
	}
	if spec.Name, err = obj.str("name", maxNameLen); err != nil {
		return err
	}
	if spec.Note, err = obj.str("note", maxNoteLen); err != nil {
		return err
	}
	if spec.ExpiresAt, _, err = obj.time("expiresAt"); err != nil {
		return err
	}
	var c quota.KeyChange
	if err := decodePolicies(obj, &c); err != nil {
		return err
	}
	spec.Policies = quota.Policies{RateLimit: c.RateLimit, MaxConcurrent: c.MaxConcurrent, Refill: c.Refill}
	if c.CostPerImage != nil {
		spec.Policies.CostPerImage = *c.CostPerImage
	}
	k, full, err := s.quota.CreateKey(r.Context(), spec)
	if err != nil {
		return err
	}
	s.writeNewKey(w, k, full)
	return nil
}

// listKeys is GET /api/keys?q=&status=&limit=&cursor=.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) error {
	q, err := readQuery(r, "q", "status", "limit", "cursor")
	if err != nil {
		return err
	}
	var f quota.KeyFilter
	if f.Query, err = q.str("q", 200); err != nil {
		return err
	}
	if f.Status, err = q.oneOf("status", quota.StatusActive, quota.StatusDisabled, quota.StatusExpired, quota.StatusExhausted); err != nil {
		return err
	}
	limit, err := q.integer("limit", 1, 500, 50)
	if err != nil {
		return err
	}
	f.Limit = int(limit)
	if f.Before, err = q.cursor("cursor", "keys"); err != nil {
		return err
	}
	keys, next, err := s.quota.ListKeys(r.Context(), f)
	if err != nil {
		return err
	}
	now := s.quota.Now()
	out := make([]quota.Stats, len(keys))
	for i, k := range keys {
		out[i] = k.Stats(now)
	}
	writeJSON(w, http.StatusOK, struct {
		Keys       []quota.Stats `json:"keys"`
		NextCursor *string       `json:"nextCursor"`
	}{out, encodeCursor("keys", next)})
	return nil
}

// getKeyByID is GET /api/keys/{id}.
func (s *Server) getKeyByID(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	k, err := s.quota.KeyByID(r.Context(), id)
	if err != nil {
		return err
	}
	s.writeKey(w, http.StatusOK, k)
	return nil
}

// patchKey is PATCH /api/keys/{id}.
func (s *Server) patchKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	obj, err := s.adminBody(w, r, append([]string{"name", "note", "disabled", "expiresAt", "remainingCalls"}, policyFields...)...)
	if err != nil {
		return err
	}
	c, err := decodeKeyChange(obj)
	if err != nil {
		return err
	}
	k, err := s.quota.ChangeKey(r.Context(), id, c)
	if err != nil {
		return err
	}
	s.writeKey(w, http.StatusOK, k)
	return nil
}

// decodeKeyChange reads a PATCH body: absent fields stay as they are.
func decodeKeyChange(obj object) (quota.KeyChange, error) {
	var c quota.KeyChange
	str := func(name string, maxLen int) (*string, error) {
		if _, ok := obj[name]; !ok {
			return nil, nil
		}
		if !obj.has(name) {
			return nil, badRequest("%s must be a string, not null", name)
		}
		v, err := obj.str(name, maxLen)
		return &v, err
	}
	var err error
	if c.Name, err = str("name", maxNameLen); err != nil {
		return c, err
	}
	if c.Note, err = str("note", maxNoteLen); err != nil {
		return c, err
	}
	if c.Disabled, err = obj.boolean("disabled"); err != nil {
		return c, err
	}
	var present bool
	if c.ExpiresAt, present, err = obj.time("expiresAt"); err != nil {
		return c, err
	}
	c.ClearExpiry = present && c.ExpiresAt == nil
	if n, ok, err := obj.integer("remainingCalls", 0, maxCalls); err != nil {
		return c, err
	} else if ok {
		c.Remaining = &n
	}
	return c, decodePolicies(obj, &c)
}

// policyFields are the per-key policies a create or a PATCH may set.
var policyFields = []string{"rateLimit", "maxConcurrent", "costPerImage", "refill"}

// decodePolicies reads the policy fields into c: absent stays as is, null
// clears (sets none, on create).
func decodePolicies(obj object, c *quota.KeyChange) error {
	_, present := obj["rateLimit"]
	if present && !obj.has("rateLimit") {
		c.ClearRateLimit = true
	} else if present {
		sub, err := obj.sub("rateLimit", "requests", "per")
		if err != nil {
			return err
		}
		n, err := sub.requiredInt("requests", 1, maxCalls)
		if err != nil {
			return badRequest("rateLimit.%s", err.Error())
		}
		per, err := sub.requiredStr("per", 16)
		if _, ok := quota.RatePeriods[per]; err != nil || !ok {
			return badRequest("rateLimit.per must be second, minute, hour or day")
		}
		c.RateLimit = &quota.RateLimit{Requests: n, Per: per}
	}
	_, present = obj["maxConcurrent"]
	if n, ok, err := obj.integer("maxConcurrent", 1, maxCalls); err != nil {
		return err
	} else if ok {
		c.MaxConcurrent = &n
	} else {
		c.ClearMaxConcurrent = present
	}
	var err error
	if c.CostPerImage, err = obj.boolean("costPerImage"); err != nil {
		return err
	}
	_, present = obj["refill"]
	if present && !obj.has("refill") {
		c.ClearRefill = true
	} else if present {
		sub, err := obj.sub("refill", "calls", "every")
		if err != nil {
			return err
		}
		n, err := sub.requiredInt("calls", 0, maxCalls)
		if err != nil {
			return badRequest("refill.%s", err.Error())
		}
		every, err := sub.requiredStr("every", 16)
		if err != nil || every != "day" && every != "month" {
			return badRequest("refill.every must be day or month")
		}
		c.Refill = &quota.Refill{Calls: n, Every: every}
	}
	return nil
}

// topUp is POST /api/keys/{id}/topup {"calls": N}.
func (s *Server) topUp(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	obj, err := s.adminBody(w, r, "calls")
	if err != nil {
		return err
	}
	n, err := obj.requiredInt("calls", -maxCalls, maxCalls)
	if err != nil {
		return err
	}
	if n == 0 {
		return badRequest("calls must not be 0: a positive number adds calls, a negative one removes them")
	}
	k, err := s.quota.TopUp(r.Context(), id, n)
	if err != nil {
		return err
	}
	s.writeKey(w, http.StatusOK, k)
	return nil
}

// deleteKey is DELETE /api/keys/{id}: 204, and the key stops working.
func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if err := s.quota.DeleteKey(r.Context(), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// keyEvents is GET /api/keys/{id}/events.
func (s *Server) keyEvents(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	events, err := s.quota.KeyEvents(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Events []quota.Event `json:"events"`
	}{events})
	return nil
}

// keyDaily is GET /api/keys/{id}/daily?days=N.
func (s *Server) keyDaily(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	q, err := readQuery(r, "days")
	if err != nil {
		return err
	}
	n, err := q.integer("days", 1, 366, 30)
	if err != nil {
		return err
	}
	days, err := s.quota.KeyDaily(r.Context(), id, int(n))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Days []quota.KeyDay `json:"days"`
	}{days})
	return nil
}
