package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// farmConfig is the shape of the gpu farm scenario: Felix in front of
// fake GPUs that each run one job at a time, TARGET_MAX_IN_FLIGHT=1,
// with closed-loop clients on several keys, one of them heavy.
type farmConfig struct {
	gpus         int           // fake GPUs, each one job at a time
	job          time.Duration // how long one job takes
	clients      int           // closed-loop clients
	keys         int           // API keys; key 0 is the heavy one
	heavyClients int           // clients on key 0; the others share keys 1…
	warmup       time.Duration // load before the measured window
	measure      time.Duration // the measured window
	queued       int           // calls held in the queue to measure Felix's memory
}

// defaultFarm is what make bench runs: about a minute.
var defaultFarm = farmConfig{
	gpus: 4, job: 200 * time.Millisecond, clients: 200, keys: 20, heavyClients: 150,
	warmup: 3 * time.Second, measure: 20 * time.Second, queued: 5000,
}

// keyOf returns the key client i sends with.
func (fc farmConfig) keyOf(i int) int {
	if i < fc.heavyClients {
		return 0
	}
	return 1 + (i-fc.heavyClients)%(fc.keys-1)
}

// clientsOf returns how many clients send with each key.
func (fc farmConfig) clientsOf() []int {
	n := make([]int, fc.keys)
	for i := range fc.clients {
		n[fc.keyOf(i)]++
	}
	return n
}

// farmResult is what the gpu farm scenario measured. Waits are from the
// client sending a call to its GPU starting the job, for the calls sent in
// the measured window; served counts the jobs started in it.
type farmResult struct {
	GPUs            int       `json:"gpus"`
	JobMS           float64   `json:"jobMs"`
	Clients         int       `json:"clients"`
	Keys            int       `json:"keys"`
	HeavyClients    int       `json:"heavyClients"`
	MeasuredSeconds float64   `json:"measuredSeconds"`
	Calls           int64     `json:"calls"`  // answered 200, whole run
	Errors          int64     `json:"errors"` // anything else
	FirstError      string    `json:"firstError,omitempty"`
	Overlaps        int64     `json:"overlaps"`       // jobs a GPU got while it ran one: the cap broken
	MinQueue        int       `json:"minQueueLength"` // smallest queue length sampled in the window
	Utilisation     []float64 `json:"utilisation"`    // busy ÷ window, per GPU
	// GapP50MS and GapP99MS are the idle times between one job's end and
	// the next job's start on a GPU, in the window: Felix's hand-over.
	GapP50MS       float64 `json:"gapP50Ms"`
	GapP99MS       float64 `json:"gapP99Ms"`
	ServedPerKey   []int64 `json:"servedPerKey"` // jobs started in the window
	LightWaitP50MS float64 `json:"lightWaitP50Ms"`
	LightWaitP99MS float64 `json:"lightWaitP99Ms"`
	HeavyWaitP50MS float64 `json:"heavyWaitP50Ms"`
	HeavyWaitP99MS float64 `json:"heavyWaitP99Ms"`
	// JainPerClient is Jain's index across keys of served calls per
	// client of the key; JainPerKey the same of served calls per key.
	JainPerClient float64 `json:"jainPerClient"`
	JainPerKey    float64 `json:"jainPerKey"`
	// Felix's memory while Queued calls wait (a fresh Felix, GPUs that
	// hold every job).
	Queued       int     `json:"queued"`
	QueuedOK     bool    `json:"queuedOk"` // the queue reached Queued and emptied when the clients left
	RSSBeforeMiB float64 `json:"rssBeforeMiB"`
	RSSQueuedMiB float64 `json:"rssQueuedMiB"`
}

// minUtilisation is the least busy GPU's share of the window.
func (f *farmResult) minUtilisation() float64 {
	if len(f.Utilisation) == 0 {
		return 0
	}
	return slices.Min(f.Utilisation)
}

// failed reports a call that did not succeed, a broken cap or a queue
// that did not behave.
func (f *farmResult) failed() bool { return f.Errors > 0 || f.Overlaps > 0 || !f.QueuedOK }

// farm runs the gpu farm scenario, first the fairness and utilisation
// run, then the memory of a long queue, and adds its result, books and
// problems to out.
func (r *runner) farm(ctx context.Context, fc farmConfig, out *results) error {
	res := &farmResult{
		GPUs: fc.gpus, JobMS: ms(fc.job), Clients: fc.clients, Keys: fc.keys, HeavyClients: fc.heavyClients,
		MeasuredSeconds: fc.measure.Seconds(),
	}
	r.log.printf("scenario: gpu farm, %d GPUs of one %s job at a time, %d clients on %d keys (%d on one)",
		fc.gpus, fc.job, fc.clients, fc.keys, fc.heavyClients)
	gpus, err := r.startGPUs(ctx, "gpu", fc.gpus, fc.job)
	if err != nil {
		return err
	}
	base, keys, _, err := r.farmFelix(ctx, "farm", gpus, fc.keys, max(fc.clients, 1000))
	if err != nil {
		return err
	}
	from := time.Now().Add(fc.warmup)
	to := from.Add(fc.measure)
	stopSampling := r.sampleQueue(ctx, base, from, to, &res.MinQueue)
	calls := runFarmClients(ctx, r.client, base+"/api/generate", keys, fc, to)
	stopSampling()

	seen := make([]int64, fc.keys)
	res.ServedPerKey = make([]int64, fc.keys)
	var light, heavy []time.Duration
	for i, cs := range calls {
		k := fc.keyOf(i)
		for _, c := range cs {
			if c.err != nil {
				res.Errors++
				if res.FirstError == "" {
					res.FirstError = c.err.Error()
				}
				continue
			}
			seen[k]++
			res.Calls++
			if !c.jobStart.Before(from) && c.jobStart.Before(to) {
				res.ServedPerKey[k]++
			}
			if c.sent.Before(from) || !c.sent.Before(to) {
				continue
			}
			if wait := max(c.jobStart.Sub(c.sent), 0); k == 0 {
				heavy = append(heavy, wait)
			} else {
				light = append(light, wait)
			}
		}
	}
	slices.Sort(light)
	slices.Sort(heavy)
	res.LightWaitP50MS, res.LightWaitP99MS = ms(percentile(light, 500)), ms(percentile(light, 990))
	res.HeavyWaitP50MS, res.HeavyWaitP99MS = ms(percentile(heavy, 500)), ms(percentile(heavy, 990))
	perClient := make([]float64, fc.keys)
	perKey := make([]float64, fc.keys)
	for k, n := range fc.clientsOf() {
		perKey[k] = float64(res.ServedPerKey[k])
		if n > 0 {
			perClient[k] = perKey[k] / float64(n)
		}
	}
	res.JainPerClient, res.JainPerKey = jain(perClient), jain(perKey)
	var gaps []time.Duration
	for _, g := range gpus {
		jobs, err := r.gpuJobs(ctx, g)
		if err != nil {
			return err
		}
		res.Overlaps += jobs.Overlaps
		res.Utilisation = append(res.Utilisation, busyShare(jobs.Jobs, from, to))
		gaps = append(gaps, idleGaps(jobs.Jobs, from, to)...)
	}
	slices.Sort(gaps)
	res.GapP50MS, res.GapP99MS = ms(percentile(gaps, 500)), ms(percentile(gaps, 990))
	out.Farm = res
	out.Books = append(out.Books, r.checkBooks(ctx, "felix-sqlite (gpu farm)", base, keys, seen, keyCalls))
	if err := r.stopChildren(); err != nil {
		out.Problems = append(out.Problems, err.Error())
	}

	books, err := r.farmQueued(ctx, fc, res)
	if err != nil {
		return err
	}
	out.Books = append(out.Books, books)
	if err := r.stopChildren(); err != nil {
		out.Problems = append(out.Problems, err.Error())
	}
	return nil
}

// startGPUs starts n fake GPUs and returns their base URLs.
func (r *runner) startGPUs(ctx context.Context, name string, n int, job time.Duration) ([]string, error) {
	var urls []string
	for i := range n {
		_, base, err := r.startHelper(ctx, fmt.Sprintf("%s-%d", name, i), "target", "--mode", modeGPU, "--job", job.String(), "--body-size", "512")
		if err != nil {
			return nil, err
		}
		urls = append(urls, base)
	}
	return urls, nil
}

// farmFelix starts a fresh felix-sqlite in front of gpus, one call at a
// time on each, with room for queueMax waiting calls, and creates keys.
func (r *runner) farmFelix(ctx context.Context, name string, gpus []string, keys, queueMax int) (string, []string, *child, error) {
	c, base, err := r.startFelix(ctx, felixProcess{
		name: "felix-" + name, instanceID: "bench-" + name,
		databaseURL: "sqlite:" + filepath.Join(r.dir, name+".db"),
		target:      strings.Join(gpus, ","),
		env:         []string{"TARGET_MAX_IN_FLIGHT=1", "QUEUE_MAX=" + strconv.Itoa(queueMax), "QUEUE_TIMEOUT=10m"},
	})
	if err != nil {
		return "", nil, nil, err
	}
	var out []string
	for i := range keys {
		key, err := r.createKey(ctx, base, fmt.Sprintf("bench-%s-%d", name, i), keyCalls)
		if err != nil {
			return "", nil, nil, err
		}
		out = append(out, key)
	}
	return base, out, c, nil
}

// farmCall is one call of a farm client.
type farmCall struct {
	sent, jobStart time.Time
	err            error
}

// runFarmClients runs fc.clients closed-loop clients until stop, each on
// its key, and returns every client's calls. Calls still waiting at stop
// are answered before it returns (the queue drains), so that every charge
// was seen.
func runFarmClients(ctx context.Context, client *http.Client, url string, keys []string, fc farmConfig, stop time.Time) [][]farmCall {
	ctx, cancel := context.WithTimeout(ctx, time.Until(stop)+scenarioTimeout)
	defer cancel()
	calls := make([][]farmCall, fc.clients)
	var wg sync.WaitGroup
	for i := range fc.clients {
		key := keys[fc.keyOf(i)]
		wg.Go(func() {
			for range maxRequestsPerWorker {
				if ctx.Err() != nil || !time.Now().Before(stop) {
					return
				}
				sent := time.Now()
				start, err := postJob(ctx, client, url, key)
				calls[i] = append(calls[i], farmCall{sent: sent, jobStart: start, err: err})
			}
		})
	}
	wg.Wait()
	return calls
}

// postJob sends one generate call and returns when its GPU started the job
// (its X-Job-Start header).
func postJob(ctx context.Context, client *http.Client, url, key string) (time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(generateBody))
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		return time.Time{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return time.Time{}, fmt.Errorf("status %s: %.300s", resp.Status, bytes.TrimSpace(b))
	}
	ns, err := strconv.ParseInt(resp.Header.Get("X-Job-Start"), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("no X-Job-Start in the answer: %w", err)
	}
	return time.Unix(0, ns), nil
}

// farmQueued measures Felix's memory with fc.queued calls waiting: GPUs
// that hold every job, a fresh Felix, fc.gpus + fc.queued calls at once;
// once the queue holds fc.queued the RSS is read, then every client
// leaves, which must empty the queue without charging anything.
func (r *runner) farmQueued(ctx context.Context, fc farmConfig, res *farmResult) (booksCheck, error) {
	r.log.printf("scenario: gpu farm, %d calls queued", fc.queued)
	res.Queued = fc.queued
	gpus, err := r.startGPUs(ctx, "gpu-hold", fc.gpus, time.Hour)
	if err != nil {
		return booksCheck{}, err
	}
	base, keys, felix, err := r.farmFelix(ctx, "queued", gpus, 1, fc.queued)
	if err != nil {
		return booksCheck{}, err
	}
	before, err := readMemory(felix.pid())
	if err != nil {
		return booksCheck{}, err
	}
	res.RSSBeforeMiB = mib(before.rss)
	client := newLoadClient(fc.queued + fc.gpus)
	defer client.CloseIdleConnections()
	calls, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range fc.queued + fc.gpus {
		wg.Go(func() { postJob(calls, client, base+"/api/generate", keys[0]) })
	}
	full := r.waitQueue(ctx, base, func(n int) bool { return n == fc.queued })
	if full {
		if m, err := readMemory(felix.pid()); err == nil {
			res.RSSQueuedMiB = mib(m.rss)
		}
	}
	cancel()
	wg.Wait()
	res.QueuedOK = full && r.waitQueue(ctx, base, func(n int) bool { return n == 0 })
	return r.checkBooks(ctx, fmt.Sprintf("felix-sqlite (%d queued)", fc.queued), base, keys, []int64{0}, keyCalls), nil
}

// poolStats is what GET /api/targets answers.
type poolStats struct {
	Queue struct {
		Length int `json:"length"`
	} `json:"queue"`
}

func (r *runner) queueLength(ctx context.Context, base string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/targets", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+r.adminToken)
	var st poolStats
	err = doJSON(r.client, req, http.StatusOK, &st)
	return st.Queue.Length, err
}

// waitQueue polls the queue length every 50 ms until ok accepts it, for
// up to a minute.
func (r *runner) waitQueue(ctx context.Context, base string, ok func(int) bool) bool {
	for range 1200 {
		if n, err := r.queueLength(ctx, base); err == nil && ok(n) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// sampleQueue samples the queue length every 100 ms between from and to,
// keeping the smallest in *least, until the returned function is called.
func (r *runner) sampleQueue(ctx context.Context, base string, from, to time.Time, least *int) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	*least = -1
	go func() {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if now.Before(from) || !now.Before(to) {
					continue
				}
				if n, err := r.queueLength(ctx, base); err == nil && (*least < 0 || n < *least) {
					*least = n
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// gpuReport is what a fake GPU tells about its jobs.
type gpuReport struct {
	Overlaps int64     `json:"overlaps"`
	Jobs     []jobSpan `json:"jobs"`
}

// jobSpan is one job's run, in Unix nanoseconds.
type jobSpan struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

func (r *runner) gpuJobs(ctx context.Context, base string) (gpuReport, error) {
	var out gpuReport
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+gpuJobsPath, nil)
	if err != nil {
		return out, err
	}
	return out, doJSON(r.client, req, http.StatusOK, &out)
}

// busyShare is the share of [from, to) that jobs cover.
func busyShare(jobs []jobSpan, from, to time.Time) float64 {
	lo, hi := from.UnixNano(), to.UnixNano()
	if hi <= lo {
		return 0
	}
	var busy int64
	for _, j := range jobs {
		busy += max(min(j.End, hi)-max(j.Start, lo), 0)
	}
	return float64(busy) / float64(hi-lo)
}

// idleGaps returns the times between one job's end and the next one's
// start, for the jobs that start in [from, to).
func idleGaps(jobs []jobSpan, from, to time.Time) []time.Duration {
	jobs = slices.Clone(jobs)
	slices.SortFunc(jobs, func(a, b jobSpan) int { return int(a.Start - b.Start) })
	var gaps []time.Duration
	for i := 1; i < len(jobs); i++ {
		if start := time.Unix(0, jobs[i].Start); !start.Before(from) && start.Before(to) {
			gaps = append(gaps, time.Duration(max(jobs[i].Start-jobs[i-1].End, 0)))
		}
	}
	return gaps
}

// jain is Jain's fairness index of xs: (Σx)² ÷ (n·Σx²), 1 when all are
// equal, 1/n when one has everything; 0 for nothing.
func jain(xs []float64) float64 {
	var sum, squares float64
	for _, x := range xs {
		sum += x
		squares += x * x
	}
	if squares == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * squares)
}

// gpuJobsPath is where a fake GPU lists its jobs.
const gpuJobsPath = "/gpu/jobs"

// gpu is a fake GPU: it runs one job at a time, each taking job. A call
// that arrives while a job runs waits for the GPU and is counted as an
// overlap (Felix, capping each target at 1, should never send one). The
// answer carries X-Job-Start, the job's start in Unix nanoseconds; GET
// /gpu/jobs lists every job run.
type gpu struct {
	job      time.Duration
	body     []byte
	length   string
	device   chan struct{} // holds one token while a job runs
	mu       sync.Mutex
	calls    int // calls in the handler now
	overlaps int64
	jobs     []jobSpan
}

func newGPU(job time.Duration, body []byte) *gpu {
	return &gpu{job: job, body: body, length: strconv.Itoa(len(body)), device: make(chan struct{}, 1)}
}

func (g *gpu) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == gpuJobsPath {
		g.mu.Lock()
		b, err := json.Marshal(gpuReport{Overlaps: g.overlaps, Jobs: g.jobs})
		g.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	io.Copy(io.Discard, r.Body)
	g.mu.Lock()
	g.calls++
	if g.calls > 1 {
		g.overlaps++
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.calls--
		g.mu.Unlock()
	}()
	select {
	case g.device <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	start := time.Now()
	t := time.NewTimer(g.job)
	select {
	case <-t.C:
	case <-r.Context().Done():
		t.Stop()
	}
	end := time.Now()
	<-g.device
	g.mu.Lock()
	g.jobs = append(g.jobs, jobSpan{Start: start.UnixNano(), End: end.UnixNano()})
	g.mu.Unlock()
	if r.Context().Err() != nil {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", g.length)
	w.Header().Set("X-Job-Start", strconv.FormatInt(start.UnixNano(), 10))
	w.Write(g.body)
}
