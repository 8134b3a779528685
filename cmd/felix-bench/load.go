package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// generateBody is the request every worker sends.
var generateBody = []byte(`{"prompt":"bench","width":512,"height":512}`)

const (
	// requestGrace is how long after the end of a run a request may still
	// take before it is cancelled and counted as an error.
	requestGrace = 30 * time.Second
	// maxRequestsPerWorker bounds a worker's loop whatever the clock does.
	maxRequestsPerWorker = 50_000_000
)

// newLoadClient returns the client all workers share, keeping up to idle
// connections per host so that a closed loop reuses its connections.
func newLoadClient(idle int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        0, // no limit but the per-host one
		MaxIdleConnsPerHost: idle,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// load is one closed-loop run: workers each send the next request as soon
// as the previous answer has been read, until the duration has passed.
type load struct {
	client      *http.Client
	urls        []string // worker i sends to urls[i % len(urls)]: the load is split evenly over them
	keys        []string // spread over the requests round-robin
	concurrency int
	duration    time.Duration
	record      bool // keep every latency
}

// loadResult is what a run saw.
type loadResult struct {
	ok        int64           // 2xx answers read in full
	failed    int64           // non-2xx answers and transport errors
	non2xx    int64           // of failed, the answers with a non-2xx status
	firstErr  error           // an example of the failures
	okByKey   []int64         // ok per key, indexed like load.keys
	latencies []time.Duration // of the ok requests when recorded, sorted
	elapsed   time.Duration   // from the start until the last worker finished
}

// add pools two runs of one system: counts and latencies add up (the
// latencies must be sorted again), and so do the times.
func (a loadResult) add(b loadResult) loadResult {
	a.ok += b.ok
	a.failed += b.failed
	a.non2xx += b.non2xx
	if a.firstErr == nil {
		a.firstErr = b.firstErr
	}
	if a.okByKey == nil {
		a.okByKey = make([]int64, len(b.okByKey))
	}
	for k, n := range b.okByKey {
		a.okByKey[k] += n
	}
	a.latencies = append(a.latencies, b.latencies...)
	a.elapsed += b.elapsed
	return a
}

// run runs the load and returns what it saw. Cancelling ctx stops it.
func (l load) run(ctx context.Context) loadResult {
	ctx, cancel := context.WithTimeout(ctx, l.duration+requestGrace)
	defer cancel()
	var next atomic.Uint64
	workers := make([]worker, l.concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(l.duration)
	for i := range workers {
		w := &workers[i]
		w.okByKey = make([]int64, len(l.keys))
		url := l.urls[i%len(l.urls)]
		wg.Go(func() { w.loop(ctx, l, url, &next, deadline) })
	}
	wg.Wait()
	res := loadResult{okByKey: make([]int64, len(l.keys)), elapsed: time.Since(start)}
	for _, w := range workers {
		res.ok += w.ok
		res.failed += w.failed
		res.non2xx += w.non2xx
		if res.firstErr == nil {
			res.firstErr = w.firstErr
		}
		for k, n := range w.okByKey {
			res.okByKey[k] += n
		}
		res.latencies = append(res.latencies, w.latencies...)
	}
	slices.Sort(res.latencies)
	return res
}

// worker is one closed-loop client; it owns its counters, merged after
// the run.
type worker struct {
	ok, failed int64
	non2xx     int64 // of failed, answers with a non-2xx status
	firstErr   error
	okByKey    []int64
	latencies  []time.Duration
}

// loop sends requests to url until the deadline, ctx ends or the count
// bound is reached, each with the next key in the shared round-robin.
func (w *worker) loop(ctx context.Context, l load, url string, next *atomic.Uint64, deadline time.Time) {
	for range maxRequestsPerWorker {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return
		}
		k := int(next.Add(1) % uint64(len(l.keys)))
		start := time.Now()
		err := post(ctx, l.client, url, l.keys[k])
		took := time.Since(start)
		if err != nil {
			w.failed++
			if errors.As(err, new(*statusError)) {
				w.non2xx++
			}
			if w.firstErr == nil {
				w.firstErr = err
			}
			continue
		}
		w.ok++
		w.okByKey[k]++
		if l.record {
			w.latencies = append(w.latencies, took)
		}
	}
}

// statusError is a non-2xx answer, quoting the start of its body.
type statusError struct {
	status string
	body   []byte
}

func (e *statusError) Error() string { return fmt.Sprintf("status %s: %s", e.status, e.body) }

// post sends one generate request with key and reads the whole answer. A
// non-2xx answer is a *statusError.
func post(ctx context.Context, client *http.Client, url, key string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(generateBody))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		io.Copy(io.Discard, resp.Body)
		return &statusError{status: resp.Status, body: bytes.TrimSpace(b)}
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	return nil
}

// percentile returns the perMille/1000 quantile of sorted (ascending) by
// the nearest-rank method: the smallest value that at least perMille/1000
// of the values do not exceed. perMille 500, 990 and 999 give p50, p99
// and p99.9 with integer arithmetic, so no rounding can pick the wrong
// rank. It returns 0 for no values.
func percentile(sorted []time.Duration, perMille int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (perMille*n + 999) / 1000 // ⌈perMille·n/1000⌉
	return sorted[min(max(rank, 1), n)-1]
}
