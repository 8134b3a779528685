package server

import (
	"context"
	"errors"
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
	settleErr error             // the target answered 2xx but the call could not be charged
	body      *idleBody         // the target's answer body, once its headers arrived
	cut       func()            // cancels the outbound request: the target went silent
	idem      *quota.Idempotent // the call's Idempotency-Key claim, or nil

	key       string         // the client's key: its turn in the queue
	forward   []byte         // what is forwarded, again on failover
	slot      target.Slot    // the call's place on its target, once it has one
	outcome   target.Outcome // how the call ended for its target
	targetErr error          // why the target gave no answer
}

// errSwitchingProtocols: the target answered 101. Felix never asks for an
// upgrade and never tunnels, so this is a failed call.
var errSwitchingProtocols = errors.New("server: the target switched protocols (101) although none was asked for")

// errTargetIdle cancels an outbound request whose answer stalled.
var errTargetIdle = errors.New("server: the target sent nothing for TARGET_IDLE_TIMEOUT")

// generate is POST /api/generate: decode → reserve → forward → settle or
// release. The target's answer streams through; nothing is buffered.
func (s *Server) generate(w http.ResponseWriter, r *http.Request) error {
	if s.pool == nil {
		return errorf(http.StatusServiceUnavailable, "target_not_configured", "no target is configured: set TARGET_API_DOMAIN")
	}
	body, err := s.readBody(w, r)
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

	idem, answered, err := s.idempotency(w, r, key, req.forward)
	if err != nil || answered {
		return err
	}
	res, err := s.quota.Reserve(r.Context(), quota.CallRequest{Key: key, BatchSize: req.batch, RequestID: requestID(r.Context()), Idempotent: idem})
	if err != nil {
		if idem != nil {
			idem.Failed(r.Context()) // refused or not admitted: a repeat is a new call
		}
		return err
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	c := &call{
		res: res, requestID: requestID(r.Context()), idem: idem, cut: func() { cancel(errTargetIdle) },
		key: key, forward: req.forward, outcome: target.Abandoned,
	}
	if err := s.acquire(r.Context(), c); err != nil {
		s.release(r.Context(), c, 0)
		if r.Context().Err() != nil {
			setOutcome(r.Context(), "client_gone") // it left the queue
			return nil
		}
		return err
	}
	defer s.releaseSlot(c)
	// The target gets Felix's own body and framing, none of the client's.
	stripClientHeaders(r.Header) // the key was read from it already
	out := r.WithContext(context.WithValue(ctx, callKey, c))
	out.Body = http.NoBody // the failover transport sends c.forward (targets.go)
	out.ContentLength = int64(len(req.forward))
	out.TransferEncoding = nil
	out.Trailer = nil
	aw := &answerWriter{ResponseWriter: w, header: http.Header{}, idle: s.opts.TargetIdleTimeout}
	defer streamOutcome(r.Context(), c, aw) // also when a cut answer aborts the proxy
	s.proxy.ServeHTTP(aw, out)
	return nil
}

// streamOutcome names, for the access log, how a streamed answer ended
// when it did not end well. The call was settled or released at the
// status line already.
func streamOutcome(ctx context.Context, c *call, aw *answerWriter) {
	switch {
	case c.body == nil:
	case c.body.idled.Load():
		setOutcome(ctx, "target_idle_timeout")
	case aw.err != nil, c.body.err != nil && ctx.Err() != nil:
		setOutcome(ctx, "client_gone") // it left or stopped reading
	case c.body.err != nil:
		setOutcome(ctx, "target_cut")
	}
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
// credentials instead of the client's, and Felix's X-Forwarded-For
// instead of whatever the client claimed.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	c := pr.In.Context().Value(callKey).(*call)
	pointAt(pr.Out.URL, c.slot.Target())
	// Without GetBody the Transport never replays the call on a new
	// connection once bytes went out: an image is not generated twice.
	pr.Out.GetBody = nil
	pr.Out.Host = ""
	h := pr.Out.Header // forwardHeaders kept only what the target may get
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		h.Set("X-Forwarded-For", ip)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Request-ID", c.requestID)
	for name, v := range s.targetAuth {
		h[name] = v
	}
}

// modifyResponse settles the call when the target's status line is 2xx,
// before any of the body reaches the client, and releases it otherwise.
// A 2xx that cannot be charged is not delivered (proxyError answers 503);
// a 101 is a failed call (proxyError answers 502).
func (s *Server) modifyResponse(resp *http.Response) error {
	c := resp.Request.Context().Value(callKey).(*call)
	c.outcome = target.Answered
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return errSwitchingProtocols
	}
	stripTargetHeaders(resp)
	resp.Trailer = nil // the target's trailers are not passed on either
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if err := c.res.Settle(resp.Request.Context(), resp.StatusCode); err != nil {
			c.settleErr = err
			return err
		}
		setOutcome(resp.Request.Context(), "success")
	} else {
		s.release(resp.Request.Context(), c, resp.StatusCode)
		setOutcome(resp.Request.Context(), "target_error")
	}
	c.body = newIdleBody(resp.Body, s.opts.TargetIdleTimeout, c.cut)
	resp.Body = c.body
	if c.idem != nil && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		resp.Body = keepAnswer(resp, c.idem) // kept as it streams through
	}
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
	if r.Context().Err() == nil && c.slot.Target() != nil && !errors.Is(err, errSwitchingProtocols) {
		c.outcome, c.targetErr = target.NoAnswer, err
	}
	switch {
	case errors.As(err, &busy):
		// Failover found no other target.
		s.writeError(w, r, err)
	case r.Context().Err() != nil:
		// The client went away; nobody is left to answer.
		setOutcome(r.Context(), "client_gone")
	case errors.Is(err, errSwitchingProtocols):
		s.log.Warn("target switched protocols; the call failed", "request_id", c.requestID)
		s.writeError(w, r, errorf(http.StatusBadGateway, "upstream_unreachable",
			"the target answered 101 Switching Protocols, which Felix does not pass on; the call was not charged"))
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
	if c.idem != nil {
		c.idem.Failed(ctx)
	}
	if err := c.res.Release(ctx, status); err != nil {
		// The call stays open and recovery releases it later.
		s.log.Warn("release failed", "request_id", c.requestID, "call", c.res.ID, "err", err)
	}
}
