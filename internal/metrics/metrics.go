// Package metrics owns Felix's Prometheus metrics: a registry of its own
// (never the global one), the metric families, and the handler that
// serves them. Each layer of Felix declares the small observer interface
// it calls; a *Metrics implements them all and cmd/felix passes it in.
//
// Labels are bounded by construction: routes are the router's patterns,
// outcomes a fixed vocabulary, targets the configured base URLs, statuses
// three-digit codes. No label ever holds a key, a prompt or a URL a client
// sent. Every series a request touches is resolved when Felix starts, so
// recording one costs a few atomic additions and no allocation.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/felix-gateway/felix/internal/target"
)

// Other is the outcome recorded for an outcome not in Options.Outcomes,
// so that the label stays bounded whatever a caller passes.
const Other = "other"

// Options say which label values exist, so that their series are created
// (at zero) when Felix starts.
type Options struct {
	// Outcomes are the ways a generate request can end ("success",
	// "target_error", the error codes, …).
	Outcomes []string
	// Targets are the targets' base URLs, as configured: their latency
	// series exist from the start.
	Targets []string
}

// Metrics is Felix's registry and every family in it.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec   // route, code
	httpDuration *prometheus.HistogramVec // route
	generate     map[string]prometheus.Counter
	generateVec  *prometheus.CounterVec

	targetDuration *prometheus.HistogramVec // target

	callsOpen       prometheus.Gauge
	settleFailures  prometheus.Counter
	releaseFailures prometheus.Counter
	recovered       prometheus.Counter

	commitDuration prometheus.Histogram
	groupSize      prometheus.Histogram
	commitFailures prometheus.Counter
}

// New returns Felix's metrics on a registry of their own, with the Go
// runtime's and the process's collectors.
func New(o Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := factory{m.reg}

	m.httpRequests = f.counterVec("felix_http_requests_total",
		"HTTP requests answered, by route pattern and status code.", "route", "code")
	m.httpDuration = f.histogramVec("felix_http_request_duration_seconds",
		"Time from a request's arrival to the end of its answer, by route pattern.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}, "route")
	m.generateVec = f.counterVec("felix_generate_requests_total",
		"POST /api/generate requests by how they ended: success, target_error (a non-2xx from the target) or the error code Felix answered.", "outcome")
	m.generate = make(map[string]prometheus.Counter, len(o.Outcomes)+1)
	for _, out := range append([]string{Other}, o.Outcomes...) {
		m.generate[out] = m.generateVec.WithLabelValues(out)
	}

	m.targetDuration = f.histogramVec("felix_target_duration_seconds",
		"Time from sending a call to a target until its status line arrived, or until it failed, by target.",
		[]float64{.05, .1, .25, .5, 1, 2, 4, 8, 15, 30, 60, 120, 300}, "target")
	for _, t := range o.Targets {
		m.targetDuration.WithLabelValues(t)
	}

	m.callsOpen = f.gauge("felix_calls_open", "Calls this instance has reserved and not yet settled or released.")
	m.settleFailures = f.counter("felix_settle_failures_total",
		"Calls the target answered 2xx that could not be charged (the store failed past the call's hold): the answer was withheld.")
	m.releaseFailures = f.counter("felix_release_failures_total",
		"Calls whose release failed; recovery releases them later.")
	m.recovered = f.counter("felix_recovered_calls_total",
		"Open calls released by recovery: orphans past their hold, or left by this instance's previous run.")

	m.commitDuration = f.histogram("felix_store_commit_duration_seconds",
		"Time one group commit (one transaction of reserves, settles and releases) took.",
		[]float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5})
	m.groupSize = f.histogram("felix_store_group_size",
		"Writes committed together in one group commit.",
		[]float64{1, 2, 4, 8, 16, 32, 64, 128, 256})
	m.commitFailures = f.counter("felix_store_commit_failures_total",
		"Group commits that failed (the store was unreachable, read-only or timed out).")

	return m
}

// Registry returns the registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus's text format (or protobuf,
// when a scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// Route returns the recorder of one route's requests: the server calls it
// once per route when it is built, and the result once per request.
func (m *Metrics) Route(pattern string) func(status int, elapsed time.Duration) {
	hist := m.httpDuration.WithLabelValues(pattern) // the route's series exist from now on
	codes := &codeCounters{vec: m.httpRequests, route: pattern}
	codes.m.Store(&map[int]prometheus.Counter{})
	return func(status int, elapsed time.Duration) {
		codes.get(status).Inc()
		hist.Observe(elapsed.Seconds())
	}
}

// codeCounters are one route's counters by status code, created on first
// use and read without a lock afterwards (the map is replaced, never
// changed).
type codeCounters struct {
	vec   *prometheus.CounterVec
	route string
	mu    sync.Mutex
	m     atomic.Pointer[map[int]prometheus.Counter]
}

func (c *codeCounters) get(status int) prometheus.Counter {
	if ctr, ok := (*c.m.Load())[status]; ok {
		return ctr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.m.Load()
	if ctr, ok := old[status]; ok {
		return ctr
	}
	if status < 100 || status > 599 {
		status = 0 // bounded even for a status no HTTP server sends
	}
	ctr := c.vec.WithLabelValues(c.route, strconv.Itoa(status))
	next := make(map[int]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[status] = ctr
	c.m.Store(&next)
	return ctr
}

// Generate counts one generate request that ended with outcome.
func (m *Metrics) Generate(outcome string) {
	c, ok := m.generate[outcome]
	if !ok {
		c = m.generate[Other]
	}
	c.Inc()
}

// Target returns the recorder of one target's calls (server.Observer):
// called once per target, with its base URL as configured; the result
// once per call sent to it, with the time until its status line arrived
// or it failed.
func (m *Metrics) Target(url string) func(elapsed time.Duration) {
	h := m.targetDuration.WithLabelValues(url)
	return func(elapsed time.Duration) { h.Observe(elapsed.Seconds()) }
}

// Pool is what the metrics read of the target pool (*target.Pool).
type Pool interface {
	Stats() target.Stats
}

// ObservePool makes every scrape read the targets' state from the pool
// (its own counters, read under its lock): felix_target_in_flight,
// felix_target_up, felix_target_answered_total, felix_target_failures_total,
// felix_queue_length and felix_queue_max. Reading at scrape time costs
// the request path nothing and is never stale.
func (m *Metrics) ObservePool(pool Pool) {
	m.reg.MustRegister(&poolCollector{
		pool:     pool,
		inFlight: prometheus.NewDesc("felix_target_in_flight", "Calls a target is running now.", []string{"target"}, nil),
		up:       prometheus.NewDesc("felix_target_up", "1 while a target may take calls, 0 while it is left out (failed health probe or cooldown after a call got no answer).", []string{"target"}, nil),
		answered: prometheus.NewDesc("felix_target_answered_total", "Calls a target answered, whatever the status.", []string{"target"}, nil),
		failed:   prometheus.NewDesc("felix_target_failures_total", "Calls that got no answer from a target (refused, reset, timed out).", []string{"target"}, nil),
		queue:    prometheus.NewDesc("felix_queue_length", "Calls waiting for a free target.", nil, nil),
		queueMax: prometheus.NewDesc("felix_queue_max", "How many calls may wait for a target (QUEUE_MAX).", nil, nil),
	})
}

type poolCollector struct {
	pool                                            Pool
	inFlight, up, answered, failed, queue, queueMax *prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inFlight, c.up, c.answered, c.failed, c.queue, c.queueMax} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stats()
	for _, t := range st.Targets {
		up := 0.0
		if t.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(t.InFlight), t.URL)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, t.URL)
		ch <- prometheus.MustNewConstMetric(c.answered, prometheus.CounterValue, float64(t.Served), t.URL)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(t.Failed), t.URL)
	}
	ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(st.Queue.Length))
	ch <- prometheus.MustNewConstMetric(c.queueMax, prometheus.GaugeValue, float64(st.Queue.Max))
}

// The ledger's hooks (quota.Observer).

// CallOpened records a call reserved.
func (m *Metrics) CallOpened() { m.callsOpen.Inc() }

// CallClosed records a call settled or released (whether or not that
// succeeded).
func (m *Metrics) CallClosed() { m.callsOpen.Dec() }

// SettleFailed records a 2xx that could not be charged.
func (m *Metrics) SettleFailed() { m.settleFailures.Inc() }

// ReleaseFailed records a release that failed.
func (m *Metrics) ReleaseFailed() { m.releaseFailures.Inc() }

// Recovered records n calls released by recovery.
func (m *Metrics) Recovered(n int) { m.recovered.Add(float64(n)) }

// GroupCommitted records one group commit (store.Observer).
func (m *Metrics) GroupCommitted(size int, elapsed time.Duration, err error) {
	m.commitDuration.Observe(elapsed.Seconds())
	m.groupSize.Observe(float64(size))
	if err != nil {
		m.commitFailures.Inc()
	}
}

// factory creates and registers families.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
