package server

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
)

// TestFramingScanner: the scanner finds each request head of a stream and
// names what is wrong with its framing, however the stream is cut into reads.
func TestFramingScanner(t *testing.T) {
	const post = "POST /api/generate HTTP/1.1\r\nHost: x\r\n"
	const fake = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name   string
		stream string
		want   []string // per head: "" or a word of its problem
	}{
		{"one request, no body", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []string{""}},
		{"keep-alive with bodies", post + "Content-Length: 5\r\n\r\nhello" + post + "Content-Length: 2\r\n\r\n{}" + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []string{"", "", ""}},
		{"a body that looks like a head", post + "Content-Length: " + strconv.Itoa(len(fake)) + "\r\n\r\n" + fake + post + "\r\n", []string{"", ""}},
		{"chunked, then keep-alive", post + "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3  \r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n" + post + "\r\n", []string{"", ""}},
		{"CL then TE", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []string{"both"}},
		{"TE then CL, other case", post + "transfer-encoding: CHUNKED\r\ncontent-length: 5\r\n\r\n0\r\n\r\n", []string{"both"}},
		{"smuggled after a good request", post + "Content-Length: 2\r\n\r\n{}" + post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", []string{"", "both"}},
		{"HTTP/1.0 keep-alive with TE and CL", "POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", []string{"both"}},
		{"HTTP/1.0 with TE alone", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", []string{"HTTP/1.0"}},
		{"folded Content-Length", post + "Content-Length:\r\n 3\r\n\r\nabc" + post + "\r\n", []string{"", ""}},
		{"blank lines between requests", post + "Content-Length: 1\r\n\r\nx\r\n" + post + "\r\n", []string{"", ""}},
		{"bad chunk size stops", post + "Transfer-Encoding: chunked\r\n\r\n0x12\r\n" + post + "\r\n", []string{""}},
		{"negative chunk size stops", post + "Transfer-Encoding: chunked\r\n\r\n-1\r\n" + post + "\r\n", []string{""}},
		{"two Content-Lengths that differ stop", post + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nab" + post + "\r\n", []string{""}},
	} {
		for _, step := range []int{1, 3, 7, len(tc.stream)} {
			var s framingScanner
			for p := tc.stream; p != ""; {
				n := min(step, len(p))
				s.feed([]byte(p[:n]))
				p = p[n:]
			}
			var got []string
			for {
				problem, ok := s.take()
				if !ok {
					break
				}
				got = append(got, problem)
			}
			if len(got) != len(tc.want) {
				t.Errorf("%s (reads of %d bytes): got heads %q, want %d heads", tc.name, step, got, len(tc.want))
				continue
			}
			for i := range got {
				if (got[i] == "") != (tc.want[i] == "") || !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("%s (reads of %d bytes): head %d: got problem %q, want one mentioning %q", tc.name, step, i, got[i], tc.want[i])
				}
			}
		}
	}
}

// goHeads reads stream as Go's HTTP server does and returns the heads it
// would hand to Felix in turn: where each ends, and its problem judged
// from the raw head by net/textproto. It stops where the server would
// close the connection.
func goHeads(stream []byte) []framed {
	cr := &countingReader{r: bytes.NewReader(stream)}
	br := bufio.NewReaderSize(cr, 4096)
	var heads []framed
	lastPOST := false
	for {
		if lastPOST { // as net/http's conn.readRequest
			peek, _ := br.Peek(4)
			n := 0
			for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
				n++
			}
			br.Discard(n)
		}
		start := cr.n - int64(br.Buffered())
		req, err := http.ReadRequest(br)
		if err != nil || req.ProtoMajor != 1 {
			return heads
		}
		end := cr.n - int64(br.Buffered())
		h := framed{end: end, problem: rawProblem(stream[start:end])}
		heads = append(heads, h)
		if h.problem != "" {
			return heads // Felix answers 400 and closes
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return heads
		}
		lastPOST = req.Method == "POST"
	}
}

// rawProblem judges a raw request head independently of the scanner.
func rawProblem(head []byte) string {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	line, _ := tp.ReadLine()
	hdr, _ := tp.ReadMIMEHeader()
	_, proto, _ := strings.Cut(line[strings.IndexByte(line, ' ')+1:], " ")
	major, minor, _ := http.ParseHTTPVersion(proto)
	cl, te := len(hdr["Content-Length"]) > 0, len(hdr["Transfer-Encoding"]) > 0
	switch {
	case cl && te:
		return "both"
	case te && major == 1 && minor == 0:
		return "HTTP/1.0"
	}
	return ""
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// FuzzFraming: for any byte stream cut into reads anyhow, the scanner
// finds every request head Go's server would serve, at the same offset,
// and refuses exactly those whose raw head has both Content-Length and
// Transfer-Encoding (or Transfer-Encoding on HTTP/1.0). Never panics.
func FuzzFraming(f *testing.F) {
	for _, s := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s), []byte{5, 1, 200})
	}
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		var s framingScanner
		for p, i := stream, 0; len(p) > 0; i++ {
			n := len(p)
			if i < len(cuts) {
				n = min(n, int(cuts[i])+1)
			}
			s.feed(p[:n])
			p = p[n:]
		}
		for i, want := range goHeads(stream) {
			if i >= len(s.heads) {
				t.Fatalf("head %d (ends at %d): the scanner lost track of the stream", i, want.end)
			}
			got := s.heads[i]
			if got.end != want.end {
				t.Fatalf("head %d: the scanner ends it at %d, Go at %d", i, got.end, want.end)
			}
			if (got.problem == "") != (want.problem == "") {
				t.Fatalf("head %d: the scanner says %q, the raw head says %q", i, got.problem, want.problem)
			}
		}
	})
}

// BenchmarkFramingScanner is the scanner's cost per typical request: a
// generate head of 8 fields and a 60-byte body, read in one piece.
func BenchmarkFramingScanner(b *testing.B) {
	body := `{"prompt":"bench","width":512,"height":512,"steps":20}`
	req := []byte("POST /api/generate HTTP/1.1\r\nHost: felix:3000\r\nUser-Agent: Go-http-client/1.1\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nAuthorization: Bearer fx_0123456789abcdefghijklmnopqrstuv\r\n" +
		"Content-Type: application/json\r\nAccept-Encoding: gzip\r\nX-Request-ID: bench-1\r\nAccept: */*\r\n\r\n" + body)
	var s framingScanner
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		s.feed(req)
		if _, ok := s.take(); !ok {
			b.Fatal("lost track")
		}
	}
}
