package server

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// readBody reads a request body of at most MaxBodyBytes, decoding
// Content-Encoding: gzip (also at most MaxBodyBytes once decoded, so a
// small bomb is refused with 413 before it grows). Every way the body can
// fail is the client's doing and answered as such: 413 too large, 415 an
// encoding Felix does not decode, 408 too slow (the server's ReadTimeout),
// 400 broken chunked framing or gzip data, or no answer when the client
// hung up.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := s.opts.Limits.MaxBodyBytes
	gzipped, err := bodyEncoding(r.Header.Values("Content-Encoding"))
	if err != nil {
		return nil, err
	}
	var body io.Reader = wireBody{http.MaxBytesReader(w, r.Body, limit)}
	if gzipped {
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, bodyError(err)
		}
		body = zr
	}
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, bodyError(err)
	}
	if int64(len(data)) > limit {
		return nil, errorf(http.StatusRequestEntityTooLarge, "body_too_large", "request body is larger than %d bytes once decompressed", limit)
	}
	return data, nil
}

// bodyEncoding reports whether a request body is gzip-compressed, and
// refuses any other content coding.
func bodyEncoding(values []string) (gzipped bool, err error) {
	var codings []string
	for _, v := range values {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(strings.TrimSpace(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	switch {
	case len(codings) == 0:
		return false, nil
	case len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip"):
		return true, nil
	}
	return false, errorf(http.StatusUnsupportedMediaType, "unsupported_encoding",
		"Content-Encoding %q is not supported: send the body uncompressed or with Content-Encoding: gzip", truncate(strings.Join(codings, ", "), 64)).
		with("Accept-Encoding", "gzip") // RFC 9110 §12.5.3: what Felix does decode
}

// wireBody marks the errors of reading the body off the connection, so
// they can be told apart from broken gzip data.
type wireBody struct{ r io.Reader }

func (b wireBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &wireError{err}
	}
	return n, err
}

type wireError struct{ err error }

func (e *wireError) Error() string { return e.err.Error() }
func (e *wireError) Unwrap() error { return e.err }

// bodyError maps a failed body read to what the client is told.
func bodyError(err error) error {
	var wire *wireError
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooLarge):
		return tooLarge
	case !errors.As(err, &wire):
		return badRequest("the request body is not valid gzip data (%s): send it uncompressed or as one gzip stream", strings.TrimPrefix(err.Error(), "gzip: "))
	case errors.As(err, &netErr) && netErr.Timeout():
		return errorf(http.StatusRequestTimeout, "request_timeout", "the request body arrived too slowly: send the whole request at once").closing()
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &netErr):
		return fmt.Errorf("%w: %w", errClientGone, err) // cut before the end of the body
	}
	// net/http's chunked reader refused the framing ("malformed chunked
	// encoding", "invalid byte in chunk length", …): what follows on the
	// connection is not a request.
	return badRequest("the request body's chunked framing is malformed (%s): send the body with Content-Length or as valid chunks", err).closing()
}
