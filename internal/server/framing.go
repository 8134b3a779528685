package server

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Go's HTTP server settles a request's framing before any handler runs and
// keeps no trace of how: given both Content-Length and Transfer-Encoding it
// drops Content-Length and reads chunks, and on HTTP/1.0 it drops
// Transfer-Encoding. RFC 9112 §6.1 wants such a request refused and its
// connection closed, because a proxy in front of Felix may have framed the
// same bytes the other way (request smuggling). So Felix serves on a
// listener whose connections run every byte the server reads through a
// framingScanner, which follows request boundaries as Go's server does and
// records what was wrong with each request head; ServeHTTP claims that
// record before anything else happens to the request.

// Listener wraps ln so that Felix sees how each request was framed on the
// wire. Serve the http.Server of NewHTTPServer on it.
func Listener(ln net.Listener) net.Listener { return framingListener{ln} }

type framingListener struct{ net.Listener }

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framingConn{Conn: c}, nil
}

// framingConn is a connection whose reads pass through a framingScanner.
type framingConn struct {
	net.Conn
	scan framingScanner
}

func (c *framingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.scan.feed(p[:n])
	return n, err
}

// CloseWrite lets the server half-close the TCP connection before closing
// it, so that its last answer reaches a client that is still sending.
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// framingContext is http.Server.ConnContext: it hands the connection's
// scanner to the requests read from it.
func framingContext(ctx context.Context, c net.Conn) context.Context {
	if fc, ok := c.(*framingConn); ok {
		return context.WithValue(ctx, framingKey, &fc.scan)
	}
	return ctx
}

// checkFraming refuses a request whose head, as sent, had both
// Content-Length and Transfer-Encoding, or Transfer-Encoding on HTTP/1.0.
// Requests served without Listener are not checked.
func checkFraming(r *http.Request) error {
	scan, ok := r.Context().Value(framingKey).(*framingScanner)
	if !ok {
		return nil
	}
	problem, ok := scan.take()
	switch {
	case !ok:
		problem = "Felix could not follow the framing of the requests on this connection"
	case problem == "":
		return nil
	}
	return badRequest("%s: send one complete request framed by Content-Length alone (RFC 9112 §6.1)", problem).closing()
}

// Scanner states.
const (
	scanRequestLine = iota // before a request: blank lines are skipped
	scanHeader             // in a head's header fields
	scanBody               // skipping remain bytes of a Content-Length body
	scanChunkSize          // at a chunk-size line
	scanChunkData          // skipping remain bytes of chunk data and its CRLF
	scanTrailer            // in the trailer fields after the last chunk
	scanStopped            // lost or after a refused head: nothing more is read
)

// maxScanLine bounds a line the scanner keeps; Go's server refuses heads of
// more than MaxHeaderBytes (1 MiB at most by default) and chunk lines of
// 4 KiB, so a longer line never reaches a handler.
const maxScanLine = 1<<20 + 4096

// framingScanner follows the requests on one connection's byte stream the
// way Go's server frames them (net/http's readRequest, fixLength and
// chunked reader): a head, then a body of Content-Length bytes or chunks.
// It is lax where Go is strict, since whatever Go refuses closes the
// connection anyway, and stops at anything it cannot follow.
type framingScanner struct {
	mu     sync.Mutex
	state  int
	line   []byte // the line being read
	offset int64  // bytes fed so far

	// the head being read
	old       bool     // HTTP/1.0 (or older)
	lengths   []string // Content-Length values
	encodings int      // Transfer-Encoding fields
	last      *string  // the Content-Length value a continuation line extends

	remain int64    // bytes left of the body or chunk being skipped
	heads  []framed // heads read and not yet taken, oldest first
}

// framed is what the scanner learnt of one request head.
type framed struct {
	end     int64  // offset of the byte after the head
	problem string // what is wrong with its framing; "" when nothing
}

// take returns the framing problem of the next request head on the
// connection: the one the server is about to serve. ok is false when the
// scanner lost track of the stream before that head.
func (s *framingScanner) take() (problem string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.heads) == 0 {
		return "", false
	}
	h := s.heads[0]
	s.heads = s.heads[1:]
	return h.problem, true
}

// feed runs the bytes the server has just read through the scanner.
func (s *framingScanner) feed(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(p) > 0 && s.state != scanStopped {
		switch s.state {
		case scanBody, scanChunkData:
			n := min(int64(len(p)), s.remain)
			s.remain -= n
			s.offset += n
			p = p[n:]
			if s.remain == 0 && s.state == scanBody {
				s.state = scanRequestLine
			} else if s.remain == 0 {
				s.state = scanChunkSize
			}
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				s.line = append(s.line, p...)
				s.offset += int64(len(p))
				p = nil
			} else {
				s.line = append(s.line, p[:i]...)
				s.offset += int64(i + 1)
				p = p[i+1:]
				s.endLine(bytes.TrimSuffix(s.line, []byte("\r")))
				s.line = s.line[:0]
			}
			if len(s.line) > maxScanLine {
				s.state = scanStopped
			}
		}
	}
}

// endLine handles one complete line, without its line end. The line is
// the scanner's buffer: keep no part of it.
func (s *framingScanner) endLine(line []byte) {
	switch s.state {
	case scanRequestLine:
		s.requestLine(line)
	case scanHeader:
		s.headerLine(line)
	case scanChunkSize:
		s.chunkSize(line)
	case scanTrailer:
		if len(line) == 0 {
			s.state = scanRequestLine
		}
	}
}

func (s *framingScanner) requestLine(line []byte) {
	if len(line) == 0 {
		return // Go tolerates blank lines before a request after a POST
	}
	_, rest, ok1 := bytes.Cut(line, []byte(" "))
	_, proto, ok2 := bytes.Cut(rest, []byte(" "))
	major, minor, ok3 := httpVersion(proto)
	if !ok1 || !ok2 || !ok3 {
		s.state = scanStopped // Go answers 400 and closes
		return
	}
	s.old = major < 1 || major == 1 && minor == 0
	s.lengths, s.encodings, s.last = s.lengths[:0], 0, nil
	s.state = scanHeader
}

// httpVersion parses "HTTP/x.y" as http.ParseHTTPVersion does.
func httpVersion(v []byte) (major, minor int, ok bool) {
	if len(v) != len("HTTP/x.y") || !bytes.HasPrefix(v, []byte("HTTP/")) || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (s *framingScanner) headerLine(line []byte) {
	if len(line) == 0 {
		s.endHead()
		return
	}
	if line[0] == ' ' || line[0] == '\t' { // obs-fold: Go joins it to the field before
		if s.last != nil {
			*s.last += " " + string(line)
		}
		return
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		s.state = scanStopped // Go answers 400 and closes
		return
	}
	s.last = nil
	switch {
	case asciiEqualFold(name, "Content-Length"):
		s.lengths = append(s.lengths, string(value))
		s.last = &s.lengths[len(s.lengths)-1]
	case asciiEqualFold(name, "Transfer-Encoding"):
		s.encodings++
	}
}

// endHead records the head just read and finds where its body ends, as
// net/http's fixLength does for a request.
func (s *framingScanner) endHead() {
	h := framed{end: s.offset}
	switch {
	case len(s.lengths) > 0 && s.encodings > 0:
		h.problem = "the request has both Content-Length and Transfer-Encoding"
	case s.old && s.encodings > 0:
		h.problem = "an HTTP/1.0 request has Transfer-Encoding"
	}
	s.heads = append(s.heads, h)
	switch {
	case h.problem != "":
		s.state = scanStopped // the connection is closed after the answer
	case s.encodings > 0:
		s.state = scanChunkSize // or Go refuses an encoding other than chunked and closes
	case len(s.lengths) > 0:
		n, ok := contentLength(s.lengths)
		s.remain, s.state = n, scanBody
		if !ok {
			s.state = scanStopped // Go answers 400 and closes
		} else if n == 0 {
			s.state = scanRequestLine
		}
	default:
		s.state = scanRequestLine // a request without either has no body
	}
}

// contentLength parses Content-Length values as net/http does: all equal
// once trimmed, and one decimal number below 2^63.
func contentLength(values []string) (int64, bool) {
	first := strings.Trim(values[0], " \t\r\n")
	for _, v := range values[1:] {
		if strings.Trim(v, " \t\r\n") != first {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(first, 10, 63)
	return int64(n), err == nil
}

// chunkSize reads a chunk-size line: at most 16 hex digits, then optional
// white space and extensions. The last chunk (size 0) is followed by
// trailer fields.
func (s *framingScanner) chunkSize(line []byte) {
	line, _, _ = bytes.Cut(line, []byte(";"))
	line = bytes.TrimRight(line, " \t")
	var n int64
	for _, c := range line {
		d := hexDigit(c)
		if d < 0 || len(line) > 16 || n > 1<<58 { // so many bytes never arrive
			s.state = scanStopped // Go's chunked reader fails, and the connection is closed
			return
		}
		n = n<<4 | int64(d)
	}
	switch {
	case len(line) == 0:
		s.state = scanStopped
	case n == 0:
		s.state = scanTrailer
	default:
		s.remain, s.state = n+2, scanChunkData // the data and its CRLF
	}
}

func hexDigit(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// asciiEqualFold reports whether the header name a equals b ignoring
// ASCII case, as header names are compared (strings.EqualFold would also
// match "ſ" to "s").
func asciiEqualFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
