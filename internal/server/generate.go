package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/target"
)

// call is the state of one forwarded generate request, shared by the
// proxy's hooks through the outbound request's context.
type call struct {
	res       *quota.Reservation
	requestID string
	settleErr error // the target answered 2xx but the call could not be charged

	key       string         // the client's key: its turn in the queue
	body      []byte         // what is forwarded, again on failover
	slot      target.Slot    // the call's place on its target, once it has one
	outcome   target.Outcome // how the call ended for its target
	targetErr error          // why the target gave no answer
}

// generate is POST /api/generate: decode → reserve → forward → settle or
// release. The target's answer streams through; nothing is buffered.
func (s *Server) generate(w http.ResponseWriter, r *http.Request) error {
	if s.pool == nil {
		return errorf(http.StatusServiceUnavailable, "target_not_configured", "no target is configured: set TARGET_API_DOMAIN")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.Limits.MaxBodyBytes))
	if err != nil {
		return err
	}
	req, err := decodeGenerate(body, s.opts.Limits)
	if err != nil {
		return err
	}
	key, err := clientKey(r, req.apiKey)
	if err != nil {
		return err
	}
	logNote(r.Context(), slog.Any("key", quota.Secret(key)))

	res, err := s.quota.Reserve(r.Context(), quota.CallRequest{Key: key, BatchSize: req.batch, RequestID: requestID(r.Context())})
	if err != nil {
		return err
	}
	c := &call{res: res, requestID: requestID(r.Context()), key: key, body: req.forward, outcome: target.Abandoned}
	if err := s.acquire(r.Context(), c); err != nil {
		s.release(r.Context(), c, 0)
		if r.Context().Err() != nil {
			logNote(r.Context(), slog.String("outcome", "client_gone")) // left the queue
			return nil
		}
		return err
	}
	defer s.releaseSlot(c)
	out := r.WithContext(context.WithValue(r.Context(), callKey, c))
	out.Body = io.NopCloser(bytes.NewReader(req.forward))
	out.ContentLength = int64(len(req.forward))
	s.proxy.ServeHTTP(w, out)
	return nil
}

// clientKey finds the client's API key in Authorization: Bearer, X-API-Key
// or the body, refusing two different ones.
func clientKey(r *http.Request, fromBody string) (string, error) {
	var key, from string
	for _, c := range []struct{ name, value string }{
		{"Authorization", bearerValue(r)},
		{"X-API-Key", r.Header.Get("X-API-Key")},
		{"apiKey", fromBody},
	} {
		switch {
		case c.value == "":
		case key == "":
			key, from = c.value, c.name
		case c.value != key:
			return "", badRequest("the API key in %s differs from the one in %s: send one key", c.name, from)
		}
	}
	if key == "" {
		return "", errMissingKey
	}
	if err := quota.ValidateKey(key); err != nil {
		return "", badRequest("%s", err.Error())
	}
	return key, nil
}

func bearerValue(r *http.Request) string {
	v, _ := bearer(r)
	return v
}

// rewrite points the outbound request at the target, with the target's
// credentials instead of the client's.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	c := pr.In.Context().Value(callKey).(*call)
	pointAt(pr.Out.URL, c.slot.Target())
	pr.Out.Host = ""
	// Without GetBody the Transport never replays the call on a new
	// connection once bytes went out: an image is not generated twice.
	pr.Out.GetBody = nil
	h := pr.Out.Header
	for _, name := range []string{"Authorization", "X-API-Key", "Cookie", "Proxy-Authorization"} {
		h.Del(name)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-ID", c.requestID)
	for name, values := range s.targetAuth {
		h[name] = values
	}
}

// modifyResponse settles the call when the target's status line is 2xx,
// before any of the body reaches the client, and releases it otherwise.
// A 2xx that cannot be charged is not delivered (proxyError answers 503).
func (s *Server) modifyResponse(resp *http.Response) error {
	c := resp.Request.Context().Value(callKey).(*call)
	c.outcome = target.Answered
	resp.Header.Del("X-Request-ID") // the client gets Felix's, set already
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if err := c.res.Settle(resp.Request.Context(), resp.StatusCode); err != nil {
			c.settleErr = err
			return err
		}
		return nil
	}
	s.release(resp.Request.Context(), c, resp.StatusCode)
	return nil
}

// proxyError answers when no usable response came from the target.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	c := r.Context().Value(callKey).(*call)
	if c.settleErr != nil {
		s.writeError(w, r, errorf(http.StatusServiceUnavailable, "store_unavailable",
			"the target answered but the usage store could not confirm the call, so the answer was withheld: retry later"))
		s.log.Error("settle failed", "request_id", c.requestID, "call", c.res.ID, "err", c.settleErr)
		return
	}
	s.release(r.Context(), c, 0)
	var netErr net.Error
	var busy *target.BusyError
	if r.Context().Err() == nil && c.slot.Target() != nil {
		c.outcome, c.targetErr = target.NoAnswer, err
	}
	switch {
	case errors.As(err, &busy):
		// Failover found no other target.
		s.writeError(w, r, err)
	case r.Context().Err() != nil:
		// The client went away; nobody is left to answer.
		logNote(r.Context(), slog.String("outcome", "client_gone"))
	case errors.As(err, &netErr) && netErr.Timeout():
		s.writeError(w, r, errorf(http.StatusGatewayTimeout, "upstream_timeout",
			"the target did not answer within %s; the call was not charged", s.opts.TargetTimeout))
	default:
		s.log.Warn("target unreachable", "request_id", c.requestID, "err", err)
		s.writeError(w, r, errorf(http.StatusBadGateway, "upstream_unreachable",
			"the target could not be reached; the call was not charged"))
	}
}

func (s *Server) release(ctx context.Context, c *call, status int) {
	if err := c.res.Release(ctx, status); err != nil {
		// The call stays open and recovery releases it later.
		s.log.Warn("release failed", "request_id", c.requestID, "call", c.res.ID, "err", err)
	}
}
