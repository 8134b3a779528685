package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

const (
	// inFlightRequests are sent at once in the many-in-flight scenario.
	inFlightRequests = 5000
	// scenarioTimeout bounds each scenario's requests.
	scenarioTimeout = 3 * time.Minute
)

// scenarios runs the streaming, many-in-flight and gpu farm scenarios
// (the last one alone with --only-farm), each against a Felix on SQLite
// started for it (so that its VmHWM is the scenario's own) in front of
// targets in the matching mode, and adds their results, books and problems
// to res. An error means a scenario could not be set up.
func (r *runner) scenarios(ctx context.Context, res *results) error {
	if !r.cfg.onlyFarm {
		if err := r.streamingAndInFlight(ctx, res); err != nil {
			return err
		}
	}
	if err := r.farm(ctx, r.cfg.farm, res); err != nil {
		return fmt.Errorf("gpu farm scenario: %w", err)
	}
	return nil
}

func (r *runner) streamingAndInFlight(ctx context.Context, res *results) error {
	s, books, err := r.streaming(ctx)
	if err != nil {
		return fmt.Errorf("streaming scenario: %w", err)
	}
	res.Streaming = s
	res.Books = append(res.Books, books)
	if err := r.stopChildren(); err != nil {
		res.Problems = append(res.Problems, err.Error())
	}

	f, books, err := r.inFlight(ctx)
	if err != nil {
		return fmt.Errorf("in-flight scenario: %w", err)
	}
	res.InFlight = f
	res.Books = append(res.Books, books)
	if err := r.stopChildren(); err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	return nil
}

// scenarioFelix starts a target in mode and a fresh felix-sqlite in front
// of it, with one key of calls.
func (r *runner) scenarioFelix(ctx context.Context, name, mode string, calls int64) (*child, string, string, error) {
	_, target, err := r.startHelper(ctx, "target-"+name, "target", "--mode", mode, "--body-size", fmt.Sprint(r.cfg.bodySize))
	if err != nil {
		return nil, "", "", err
	}
	felix, base, err := r.startFelix(ctx, felixProcess{
		name:        "felix-" + name,
		instanceID:  "bench-" + name,
		databaseURL: "sqlite:" + filepath.Join(r.dir, name+".db"),
		target:      target,
	})
	if err != nil {
		return nil, "", "", err
	}
	key, err := r.createKey(ctx, base, "bench-"+name, calls)
	if err != nil {
		return nil, "", "", err
	}
	return felix, base, key, nil
}

// streaming sends one request whose answer is streamSize bytes, reads it
// streamChunk bytes at a time and discards it, while sampling Felix's RSS
// every 20 ms.
func (r *runner) streaming(ctx context.Context) (*streamingResult, booksCheck, error) {
	r.log.printf("scenario: streaming %d MiB through felix-sqlite", streamSize>>20)
	felix, base, key, err := r.scenarioFelix(ctx, "stream", modeStream, 1)
	if err != nil {
		return nil, booksCheck{}, err
	}
	before, err := readMemory(felix.pid())
	if err != nil {
		return nil, booksCheck{}, err
	}
	stop := samplePeakRSS([]int{felix.pid()}, 20*time.Millisecond)
	start := time.Now()
	status, n, err := readStream(ctx, r.client, base+"/api/generate", key)
	took := time.Since(start)
	peak := stop()
	s := &streamingResult{
		Status: status, BytesRead: n, Seconds: took.Seconds(),
		RSSBeforeMiB: mib(before.rss), RSSPeakMiB: mib(peak), GrowthMiB: mib(max(peak-before.rss, 0)),
	}
	if err != nil {
		s.Error = err.Error()
	} else if !s.complete() {
		s.Error = fmt.Sprintf("status %d and %d bytes, want 200 and %d bytes", status, n, streamSize)
	}
	var seen int64
	if status == http.StatusOK {
		seen = 1
	}
	books := r.checkBooks(ctx, "felix-sqlite (streaming)", base, []string{key}, []int64{seen}, 1)
	return s, books, nil
}

// readStream posts a generate request and reads the answer chunk by chunk,
// discarding it; it returns the status and the number of bytes read.
func readStream(ctx context.Context, client *http.Client, url, key string) (int, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, scenarioTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(generateBody))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	buf := make([]byte, streamChunk)
	var n int64
	// Bounded by the size expected (and by ctx): a longer answer stops it.
	for n <= streamSize {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			return resp.StatusCode, n, nil
		}
		if err != nil {
			return resp.StatusCode, n, err
		}
	}
	return resp.StatusCode, n, fmt.Errorf("the answer is longer than %d bytes", streamSize)
}

// inFlight sends inFlightRequests requests at once through a fresh Felix
// to a target that waits slowDelay before answering each.
func (r *runner) inFlight(ctx context.Context) (*inFlightResult, booksCheck, error) {
	r.log.printf("scenario: %d requests in flight through felix-sqlite, target waits %s", inFlightRequests, slowDelay)
	felix, base, key, err := r.scenarioFelix(ctx, "inflight", modeSlow, inFlightRequests)
	if err != nil {
		return nil, booksCheck{}, err
	}
	before, err := readMemory(felix.pid())
	if err != nil {
		return nil, booksCheck{}, err
	}
	client := newLoadClient(inFlightRequests)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, scenarioTimeout)
	defer cancel()

	latencies := make([]time.Duration, inFlightRequests)
	errs := make([]error, inFlightRequests)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := range inFlightRequests {
		wg.Go(func() {
			<-ready
			start := time.Now()
			errs[i] = post(ctx, client, base+"/api/generate", key)
			latencies[i] = time.Since(start)
		})
	}
	start := time.Now()
	close(ready)
	wg.Wait()
	f := &inFlightResult{Requests: inFlightRequests, WallSeconds: time.Since(start).Seconds(), RSSBeforeMiB: mib(before.rss)}

	var ok []time.Duration
	for i, err := range errs {
		if err == nil {
			ok = append(ok, latencies[i])
			continue
		}
		f.Errors++
		if f.FirstError == "" {
			f.FirstError = err.Error()
		}
	}
	f.OK = int64(len(ok))
	slices.Sort(ok)
	f.P50MS, f.MaxMS = ms(percentile(ok, 500)), ms(percentile(ok, 1000))
	after, err := readMemory(felix.pid())
	if err != nil {
		return nil, booksCheck{}, err
	}
	f.PeakRSSMiB = mib(after.hwm)
	books := r.checkBooks(ctx, fmt.Sprintf("felix-sqlite (%d in flight)", inFlightRequests), base, []string{key}, []int64{f.OK}, inFlightRequests)
	return f, books, nil
}
