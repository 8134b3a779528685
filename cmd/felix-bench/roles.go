package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/felix-gateway/felix/internal/server"
)

// The target's answer modes.
const (
	modeFast   = "fast"   // answer 200 at once with --body-size bytes
	modeStream = "stream" // answer 200 with streamSize bytes, flushed every streamChunk
	modeSlow   = "slow"   // wait slowDelay, then answer like fast
	modeGPU    = "gpu"    // run one job of --job at a time, then answer like fast (see gpuTarget)
)

const (
	streamSize  = 64 << 20
	streamChunk = 32 << 10
	slowDelay   = 2 * time.Second
)

// listeningPrefix starts the one line a helper writes on stdout, followed
// by the address it listens on.
const listeningPrefix = "listening "

// targetRole runs a fake image API until ctx ends. Every path answers,
// so the same process serves Felix, the bare proxy and health checks.
func targetRole(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("felix-bench target", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	mode := fs.String("mode", modeFast, "fast, stream (64 MiB in 32 KiB chunks), slow (wait 2s, then answer like fast) or gpu (one job of --job at a time)")
	size := fs.Int("body-size", 4096, "size in bytes of the answer in fast, slow and gpu modes")
	job := fs.Duration("job", 200*time.Millisecond, "in gpu mode, how long one job takes")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	var h http.HandlerFunc
	switch *mode {
	case modeFast:
		h = fixedAnswer(imagesJSON(*size), 0)
	case modeSlow:
		h = fixedAnswer(imagesJSON(*size), slowDelay)
	case modeStream:
		h = streamAnswer
	case modeGPU:
		h = newGPU(*job, imagesJSON(*size)).ServeHTTP
	default:
		return fmt.Errorf("target: unknown --mode %q: use fast, stream, slow or gpu", *mode)
	}
	return serveHelper(ctx, *addr, h, stdout)
}

// imagesJSON returns an A1111-style answer, {"images":["AAAA…"]}, of
// exactly size bytes, or of its frame alone when size is smaller.
func imagesJSON(size int) []byte {
	const head, tail = `{"images":["`, `"]}`
	return []byte(head + strings.Repeat("A", max(size-len(head)-len(tail), 0)) + tail)
}

// fixedAnswer reads the request, waits delay (unless the client leaves)
// and answers 200 with body.
func fixedAnswer(body []byte, delay time.Duration) http.HandlerFunc {
	length := fmt.Sprint(len(body))
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", length)
		w.Write(body)
	}
}

// streamAnswer answers 200 with a streamSize-byte JSON body, written and
// flushed streamChunk bytes at a time (chunked transfer encoding).
func streamAnswer(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	rc := http.NewResponseController(w)
	const head, tail = `{"images":["`, `"]}`
	chunk := bytes.Repeat([]byte("A"), streamChunk)
	io.WriteString(w, head)
	for left := streamSize - len(head) - len(tail); left > 0; left -= streamChunk {
		if _, err := w.Write(chunk[:min(left, streamChunk)]); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	io.WriteString(w, tail)
}

// bareRole runs the baseline: a bare reverse proxy to --target, with no
// accounting, until ctx ends.
func bareRole(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("felix-bench bare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	target := fs.String("target", "", "base URL of the target, e.g. http://127.0.0.1:8081")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bare: --target %q is not a URL with a host", *target)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		// The same transport as Felix's, so that only the accounting
		// differs.
		Transport: server.NewTransport(2 * time.Minute),
	}
	return serveHelper(ctx, *addr, bufferedBody(proxy), stdout)
}

// bufferedBody reads the whole request body before calling next, as Felix
// does. Streaming it through a ReverseProxy races with the HTTP/1 server
// closing the inbound body once the answer starts: the transport's final
// read of the body then fails, it drops the connection to the target and
// the answer is cut (golang/go#40747; here about one request in 20,000
// at c=64).
func bufferedBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "bare: reading the request: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// serveHelper serves h on addr, announces the address on stdout and
// returns when ctx ends.
func serveHelper(ctx context.Context, addr string, h http.Handler, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "%s%s\n", listeningPrefix, ln.Addr())
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
