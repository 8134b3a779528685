package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/target"
)

// apiError is an error with the status and code the client sees. Its
// message is a sentence meant for the client.
type apiError struct {
	status    int
	code      string
	msg       string
	header    http.Header // sent with the error, e.g. Allow or Retry-After
	requestID string      // another request's ID the error refers to, e.g. already_succeeded's
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// with returns a copy of e that also sends the header name: value.
func (e *apiError) with(name, value string) *apiError {
	c := *e
	c.header = e.header.Clone()
	if c.header == nil {
		c.header = http.Header{}
	}
	c.header.Set(name, value)
	return &c
}

// badRequest is a 400 invalid_request that names the field and says why.
func badRequest(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "invalid_request", format, args...)
}

var errMissingKey = errorf(http.StatusUnauthorized, "invalid_api_key",
	"missing API key: send it as Authorization: Bearer <key>, X-API-Key: <key> or the apiKey field")

// errClientGone: the client hung up before its request was complete or
// answered. Nobody is left to answer, and it is not a server failure.
var errClientGone = errors.New("server: the client hung up")

// closing returns a copy of e that closes the connection after the answer:
// what follows on it cannot be trusted to be a request.
func (e *apiError) closing() *apiError { return e.with("Connection", "close") }

// refusedError maps why a call was not admitted to what the client sees.
func refusedError(e *quota.RefusedError) *apiError {
	var ae *apiError
	switch e.Reason {
	case quota.UnknownKey:
		ae = errorf(http.StatusUnauthorized, "invalid_api_key", "unknown API key")
	case quota.Disabled:
		ae = errorf(http.StatusForbidden, "key_disabled", "this API key is disabled: ask the operator to enable it")
	case quota.Expired:
		ae = errorf(http.StatusForbidden, "key_expired", "this API key has expired: ask the operator to extend it")
	case quota.RateLimited:
		ae = errorf(http.StatusTooManyRequests, "rate_limited", "this API key is over its rate limit: retry after the seconds in Retry-After")
	case quota.ConcurrencyLimited:
		ae = errorf(http.StatusTooManyRequests, "concurrency_limited", "this API key has as many calls in flight as it may: retry when one has finished")
	case quota.Exhausted:
		ae = errorf(http.StatusTooManyRequests, "quota_exhausted", "this API key has no calls left: ask the operator to top it up")
	default:
		ae = errorf(http.StatusInternalServerError, "internal_error", "internal error: see the server log for this request ID")
	}
	if e.RetryAfter > 0 {
		ae = ae.with("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
	return ae
}

// toAPIError maps an error to what the client sees. Errors it does not
// know are 500s whose cause is only logged.
func toAPIError(err error) *apiError {
	var ae *apiError
	var tooLarge *http.MaxBytesError
	var refused *quota.RefusedError
	var busy *target.BusyError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &refused):
		return refusedError(refused)
	case errors.As(err, &busy):
		return busyError(busy)
	case errors.As(err, &tooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "request body is larger than %d bytes", tooLarge.Limit)
	case errors.Is(err, quota.ErrKeyNotFound):
		return errorf(http.StatusNotFound, "key_not_found", "no such API key")
	case errors.Is(err, quota.ErrInsufficientCalls):
		return errorf(http.StatusConflict, "insufficient_calls", "the key would have fewer remaining calls than it has in flight: remove fewer calls")
	case errors.Is(err, quota.ErrKeyExists):
		return errorf(http.StatusConflict, "key_exists", "an API key with this value exists already")
	case errors.Is(err, quota.ErrInvalidKeyFormat), errors.Is(err, quota.ErrInvalidAmount), errors.Is(err, quota.ErrInvalidIdempotencyKey):
		return badRequest("%s", err.Error())
	case errors.Is(err, quota.ErrReadOnly):
		return errorf(http.StatusServiceUnavailable, "store_read_only", "the usage store is read-only (a database failover may be in progress): the request was not forwarded and not charged; retry later")
	case errors.Is(err, quota.ErrUnavailable):
		return errorf(http.StatusServiceUnavailable, "store_unavailable", "the usage store cannot be reached: the request was not forwarded and not charged; retry later")
	}
	return errorf(http.StatusInternalServerError, "internal_error", "internal error: see the server log for this request ID")
}

// writeError answers with the SPEC's error JSON, logging server-side causes.
// A client that has left gets no answer and is logged as such, not as a
// failure: its request context ends whatever store call was waiting.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeErrorAt(w, r, err, slog.LevelError, "request failed")
}

// writeErrorAt is writeError logging a server-side cause at level, as msg.
func (s *Server) writeErrorAt(w http.ResponseWriter, r *http.Request, err error, level slog.Level, msg string) {
	if errors.Is(err, errClientGone) || r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		setOutcome(r.Context(), "client_gone")
		return
	}
	ae := toAPIError(err)
	setOutcome(r.Context(), ae.code)
	if ae.status >= 500 {
		s.log.LogAttrs(r.Context(), level, msg,
			slog.String("request_id", requestID(r.Context())), slog.Int("status", ae.status), slog.String("err", err.Error()))
	}
	for name, values := range ae.header {
		w.Header()[name] = values
	}
	writeJSON(w, ae.status, struct {
		Error     string `json:"error"`
		Code      string `json:"code"`
		RequestID string `json:"requestId,omitempty"`
	}{ae.msg, ae.code, ae.requestID})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
