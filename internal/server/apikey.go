package server

import (
	"log/slog"
	"net/http"
	"strconv"

	"github.com/felix-gateway/felix/internal/quota"
)

// maxCalls bounds amounts an admin may set.
const maxCalls = quota.MaxCalls

// getKey is GET /api/apikey?apiKey=K (or the key in a header): the key as
// its holder may see it, with its last 30 days.
func (s *Server) getKey(w http.ResponseWriter, r *http.Request) error {
	key, err := clientKey(r, r.URL.Query().Get("apiKey"))
	if err != nil {
		return err
	}
	k, days, err := s.quota.Holder(r.Context(), key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		quota.Stats
		Daily []quota.KeyDay `json:"daily"`
	}{k.Stats(s.quota.Now()), days})
	return nil
}

// writeKey answers with a key as operators see it.
func (s *Server) writeKey(w http.ResponseWriter, status int, k quota.Key) {
	writeJSON(w, status, k.Stats(s.quota.Now()))
}

// writeNewKey answers 201 with a key just created and its full plaintext,
// shown only this once.
func (s *Server) writeNewKey(w http.ResponseWriter, k quota.Key, full string) {
	out := k.Stats(s.quota.Now())
	out.APIKey = full
	writeJSON(w, http.StatusCreated, out)
}

// adminBody reads and decodes an admin request body with only the
// allowed fields.
func (s *Server) adminBody(w http.ResponseWriter, r *http.Request, allowed ...string) (object, error) {
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	obj, err := decodeObject(body)
	if err != nil {
		return nil, err
	}
	return obj, obj.only(allowed...)
}

// createKey is POST /api/apikey {apiKey?, initialRemainingCalls, name?}.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) error {
	obj, err := s.adminBody(w, r, "apiKey", "initialRemainingCalls", "name")
	if err != nil {
		return err
	}
	key, err := obj.str("apiKey", 1<<10)
	if err != nil {
		return err
	}
	remaining, err := obj.requiredInt("initialRemainingCalls", 0, maxCalls)
	if err != nil {
		return err
	}
	name, err := obj.str("name", 200)
	if err != nil {
		return err
	}
	k, full, err := s.quota.CreateKey(r.Context(), quota.KeySpec{Key: key, Name: name, Remaining: remaining})
	if err != nil {
		return err
	}
	s.writeNewKey(w, k, full)
	return nil
}

// setRemaining is PUT /api/apikey {apiKey, remainingCalls}.
func (s *Server) setRemaining(w http.ResponseWriter, r *http.Request) error {
	obj, err := s.adminBody(w, r, "apiKey", "remainingCalls")
	if err != nil {
		return err
	}
	key, err := obj.requiredStr("apiKey", 1<<10)
	if err != nil {
		return err
	}
	n, err := obj.requiredInt("remainingCalls", 0, maxCalls)
	if err != nil {
		return err
	}
	k, err := s.quota.SetRemaining(r.Context(), key, n)
	if err != nil {
		return err
	}
	s.writeKey(w, http.StatusOK, k)
	return nil
}

// siteStats is GET /api/stats?days=N (default 30).
func (s *Server) siteStats(w http.ResponseWriter, r *http.Request) error {
	days := 30
	if v := r.URL.Query().Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 3660 {
			return badRequest("days must be an integer from 1 to 3660")
		}
		days = n
	}
	st, err := s.quota.SiteStats(r.Context(), days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		TotalGenerations int64       `json:"totalGenerations"`
		DailyGenerations int64       `json:"dailyGenerations"`
		Days             []quota.Day `json:"days"`
	}{st.TotalGenerations, st.DailyGenerations, st.Days})
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz reports whether the store accepts writes, which every call
// needs: a read-only, locked or full store fails them all (503
// store_read_only or store_unavailable). Each poll costs one tiny, bounded
// probe, shared by the polls that arrive while it runs (see
// internal/store/health.go). A 503 here is logged as a warning, not as a
// failed request: the answer is the report, and load balancers poll it
// every few seconds for as long as the store is down.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if err := s.quota.Writable(r.Context()); err != nil {
		s.writeErrorAt(w, r, err, slog.LevelWarn, "not ready")
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "store": "ok"})
	return nil
}
