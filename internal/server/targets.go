package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/felix-gateway/felix/internal/target"
)

// acquire gives the call a slot on a target, waiting in the queue when
// every target is full. The target is the one the usage log names.
func (s *Server) acquire(ctx context.Context, c *call) error {
	slot, err := s.pool.Acquire(ctx, c.key)
	if err != nil {
		return err
	}
	c.slot = slot
	c.res.Target = slot.Target().String()
	return nil
}

// releaseSlot gives the call's slot back once its answer is done.
func (s *Server) releaseSlot(c *call) {
	if c.slot.Target() != nil {
		s.pool.Release(c.slot, c.outcome, c.targetErr)
	}
}

// pointAt sets u to t's endpoint: nothing of the client's URL is kept.
func pointAt(u *url.URL, t *target.Target) {
	e := t.Endpoint()
	u.Scheme, u.Host, u.Path, u.RawPath, u.RawQuery = e.Scheme, e.Host, e.Path, e.RawPath, ""
}

// failover is the proxy's transport. A call whose connection to its
// target could not be made goes to the next target up: nothing of it was
// sent, so it cannot have been generated. Once bytes went out it is never
// sent again (the Transport does not retry a POST without GetBody).
type failover struct{ s *Server }

func (f failover) RoundTrip(req *http.Request) (*http.Response, error) {
	s := f.s
	c := req.Context().Value(callKey).(*call)
	req = req.WithContext(req.Context()) // a copy: a RoundTripper leaves its request as it was
	for tries := 1; ; tries++ {
		// Felix's own copy of the body, as an in-memory reader rather than
		// the proxy's wrapper of it: the transport then writes the request
		// line, the headers and a small body in one write instead of
		// flushing the headers first (one packet to the target, not two).
		req.Body = io.NopCloser(bytes.NewReader(c.forward))
		sent := time.Now()
		resp, err := s.opts.Transport.RoundTrip(req)
		if err == nil || req.Context().Err() == nil {
			s.targetTime[c.slot.Target()](time.Since(sent))
		}
		if err == nil || !dialFailed(err) || req.Context().Err() != nil || tries >= len(s.pool.Targets()) {
			return resp, err
		}
		s.log.Warn("target unreachable: trying the next one", "request_id", c.requestID, "target", c.slot.Target().String(), "err", err)
		s.pool.Release(c.slot, target.NoAnswer, err)
		c.slot = target.Slot{}
		if err := s.acquire(req.Context(), c); err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		pointAt(req.URL, c.slot.Target())
	}
}

// dialFailed reports whether err is a failure to connect, before any byte
// of the request was written.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// busyError is the 503 of a call that got no target, with Retry-After.
func busyError(b *target.BusyError) *apiError {
	var e *apiError
	switch {
	case errors.Is(b, target.ErrQueueFull):
		e = errorf(http.StatusServiceUnavailable, "queue_full",
			"every target is busy and the queue of waiting calls is full: retry after %d s; the call was not charged", b.RetryAfter)
	case errors.Is(b, target.ErrQueueTimeout):
		e = errorf(http.StatusServiceUnavailable, "queue_timeout",
			"every target stayed busy while the call waited its longest in the queue: retry after %d s; the call was not charged", b.RetryAfter)
	case errors.Is(b, target.ErrShutdown):
		e = errorf(http.StatusServiceUnavailable, "queue_timeout",
			"Felix is shutting down and the call's turn in the queue did not come: retry after %d s; the call was not charged", b.RetryAfter)
	default:
		e = errorf(http.StatusServiceUnavailable, "no_target_available",
			"no target is up to take the call: retry after %d s; the call was not charged", b.RetryAfter)
	}
	return e.with("Retry-After", strconv.Itoa(b.RetryAfter))
}

// targets is GET /api/targets: every target's state and the queue.
func (s *Server) targets(w http.ResponseWriter, r *http.Request) error {
	st := target.Stats{Targets: []target.TargetStats{}}
	if s.pool != nil {
		st = s.pool.Stats()
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}
