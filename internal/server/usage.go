package server

import (
	"encoding/csv"
	"net/http"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
)

// The usage log (SPEC §4.2): one row per admitted call, as JSON pages or
// as one CSV file streamed in constant memory.

// callFilter reads the usage log's filters; paged adds limit and cursor.
func (s *Server) callFilter(r *http.Request, paged bool) (quota.CallFilter, error) {
	return s.callFilterIn(r, paged, s.quota.Location())
}

// callFilterIn is callFilter with dates in loc.
func (s *Server) callFilterIn(r *http.Request, paged bool, loc *time.Location) (quota.CallFilter, error) {
	allowed := []string{"keyId", "from", "to", "outcome"}
	if paged {
		allowed = append(allowed, "limit", "cursor")
	}
	var f quota.CallFilter
	q, err := readQuery(r, allowed...)
	if err != nil {
		return f, err
	}
	if f.KeyID, err = q.integer("keyId", 1, 1<<62, 0); err != nil {
		return f, err
	}
	if f.From, err = q.time("from", loc, false); err != nil {
		return f, err
	}
	if f.To, err = q.time("to", loc, true); err != nil {
		return f, err
	}
	if f.From != nil && f.To != nil && !f.From.Before(*f.To) {
		return f, badRequest("from must be before to")
	}
	if f.Outcome, err = q.oneOf("outcome", quota.OutcomeSuccess, quota.OutcomeFailed, quota.OutcomeOpen); err != nil {
		return f, err
	}
	if paged {
		limit, err := q.integer("limit", 1, 500, 50)
		if err != nil {
			return f, err
		}
		f.Limit = int(limit)
		if f.Before, err = q.cursor("cursor", "calls"); err != nil {
			return f, err
		}
	}
	return f, nil
}

// usage is GET /api/usage.
func (s *Server) usage(w http.ResponseWriter, r *http.Request) error {
	f, err := s.callFilter(r, true)
	if err != nil {
		return err
	}
	calls, next, err := s.quota.CallsPage(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Calls      []quota.Call `json:"calls"`
		NextCursor *string      `json:"nextCursor"`
	}{calls, encodeCursor("calls", next)})
	return nil
}

// usageCSV is GET /api/usage.csv: every call the filters select, newest
// first, streamed row by row.
func (s *Server) usageCSV(w http.ResponseWriter, r *http.Request) error {
	f, err := s.callFilter(r, false)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="felix-usage-`+s.quota.Now().Format("2006-01-02T150405Z")+`.csv"`)
	h.Set("Cache-Control", "no-store")
	cw := csv.NewWriter(w)
	cw.Write(quota.CallColumns)
	rows := 0
	err = s.quota.Calls(r.Context(), f, func(c quota.Call) error {
		cw.Write(c.Record())
		if rows++; rows%256 == 0 {
			cw.Flush() // stream: the client sees rows as they are read
		}
		return cw.Error()
	})
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	if err != nil {
		// The header is sent: cut the connection, so that the client sees
		// an incomplete download rather than a short file.
		s.log.Warn("usage export cut off", "request_id", requestID(r.Context()), "rows", rows, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}
