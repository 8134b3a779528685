package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/felix-gateway/felix/internal/quota"
)

// Idempotency-Key on POST /api/generate (SPEC §4.3): the first call with a
// key is handled normally and its answer kept; a repeat of a succeeded call
// is answered from what was kept, without forwarding or charging.

// idempotency claims the request's Idempotency-Key, if it has one. It
// returns the claim of a call that goes on (nil without a key), or
// answered when it answered a repeat itself, or the error to answer.
func (s *Server) idempotency(w http.ResponseWriter, r *http.Request, key string, body []byte) (claim *quota.Idempotent, answered bool, err error) {
	values := r.Header.Values("Idempotency-Key")
	switch len(values) {
	case 0:
		return nil, false, nil
	case 1:
	default:
		return nil, false, badRequest("send one Idempotency-Key header, not %d", len(values))
	}
	res, claim, err := s.quota.ClaimIdempotency(r.Context(), key, values[0], body, requestID(r.Context()))
	if err != nil {
		return nil, false, err
	}
	switch res.State {
	case quota.IdemClaimed:
		return claim, false, nil
	case quota.IdemInProgress:
		return nil, false, errorf(http.StatusConflict, "request_in_progress",
			"a request with this Idempotency-Key is still in progress: retry once it has finished")
	case quota.IdemReused:
		return nil, false, errorf(http.StatusUnprocessableEntity, "idempotency_key_reused",
			"this Idempotency-Key was used with a different request: use a new key for a new request")
	case quota.IdemSucceeded:
		if !res.Stored {
			e := errorf(http.StatusConflict, "already_succeeded",
				"a request with this Idempotency-Key succeeded already and its answer was not kept (too large or cut off): see requestId")
			e.requestID = res.RequestID
			return nil, false, e
		}
		h := w.Header()
		if res.ContentType != "" {
			h.Set("Content-Type", res.ContentType)
		}
		h.Set("Content-Length", strconv.Itoa(len(res.Body)))
		h.Set("Idempotent-Replayed", "true")
		w.WriteHeader(res.Status)
		w.Write(res.Body)
		setOutcome(r.Context(), "replayed")
		return nil, true, nil
	}
	return nil, false, nil // no such key: the reservation refuses it
}

// keepAnswer wraps a 2xx answer's body so that, once it has been streamed
// on, the call's Idempotency-Key claim records it: with the answer when it
// was read whole and fits the claim's MaxBytes, else without. The stream
// itself is neither delayed nor buffered beyond that copy.
func keepAnswer(resp *http.Response, idem *quota.Idempotent) io.ReadCloser {
	ctx := context.WithoutCancel(resp.Request.Context())
	k := &kept{ReadCloser: resp.Body, max: idem.MaxBytes}
	k.done = func() {
		body, stored := k.buf.Bytes(), k.eof && !k.over
		if !stored {
			body = nil
		}
		idem.Succeeded(ctx, resp.StatusCode, resp.Header.Get("Content-Type"), body, stored)
	}
	return k
}

type kept struct {
	io.ReadCloser
	buf       bytes.Buffer
	max       int64
	over, eof bool
	done      func()
	once      sync.Once
}

func (k *kept) Read(p []byte) (int, error) {
	n, err := k.ReadCloser.Read(p)
	if !k.over {
		if int64(k.buf.Len()+n) > k.max {
			k.over, k.buf = true, bytes.Buffer{}
		} else {
			k.buf.Write(p[:n])
		}
	}
	if err == io.EOF {
		k.eof = true
	}
	return n, err
}

func (k *kept) Close() error {
	err := k.ReadCloser.Close()
	k.once.Do(k.done)
	return err
}
