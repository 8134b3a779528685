package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// results is everything a run measured; it is written as JSON.
type results struct {
	Date      time.Time        `json:"date"`
	GoVersion string           `json:"goVersion"`
	Machine   machine          `json:"machine"`
	Settings  settings         `json:"settings"`
	Phases    []phase          `json:"phases"`
	Instances []instanceGroup  `json:"instances,omitempty"`
	Books     []booksCheck     `json:"books"`
	Memory    []processMemory  `json:"memory"`
	Streaming *streamingResult `json:"streaming,omitempty"`
	InFlight  *inFlightResult  `json:"inFlight,omitempty"`
	Farm      *farmResult      `json:"gpuFarm,omitempty"`
	Targets   []targetCheck    `json:"targets"`
	Problems  []string         `json:"problems,omitempty"` // e.g. a process that died
	Failed    bool             `json:"failed"`             // a request failed, the books disagree or a problem occurred
}

// machine describes where the run happened.
type machine struct {
	CPUs      int    `json:"cpus"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	CPUModel  string `json:"cpuModel"`
	LoadAvg   string `json:"loadAvg"` // 1, 5 and 15 minutes, at the start
	OpenFiles uint64 `json:"openFiles"`
}

// settings are the run's parameters.
type settings struct {
	DurationSeconds float64  `json:"durationSeconds"`
	WarmupSeconds   float64  `json:"warmupSeconds"`
	Rounds          int      `json:"rounds"`
	Concurrency     []int    `json:"concurrency"`
	BodySize        int      `json:"bodySize"`
	Keys            int      `json:"keys"`
	Systems         []string `json:"systems"`
	FelixLogLevel   string   `json:"felixLogLevel"`

	Instances           []int `json:"instances,omitempty"`
	InstanceKeys        []int `json:"instanceKeys,omitempty"`
	InstanceConcurrency int   `json:"instanceConcurrency,omitempty"`
	History             int64 `json:"history,omitempty"`
}

// phase is one concurrency: every system's figures and Felix's cost.
type phase struct {
	Concurrency int           `json:"concurrency"`
	Systems     []systemStats `json:"systems"`
	VersusBare  []comparison  `json:"versusBare"`
}

// systemStats are one system's figures at one concurrency. Latencies are
// of the 2xx answers of the measured run, in milliseconds.
type systemStats struct {
	System         string  `json:"system"`
	Requests       int64   `json:"requests"` // 2xx answers in the measured run
	Errors         int64   `json:"errors"`   // warm-up included
	Non2xx         int64   `json:"non2xx"`   // of Errors, the answers with a non-2xx status
	FirstError     string  `json:"firstError,omitempty"`
	ElapsedSeconds float64 `json:"elapsedSeconds"`
	RPS            float64 `json:"rps"`
	P50MS          float64 `json:"p50Ms"`
	P99MS          float64 `json:"p99Ms"`
	P999MS         float64 `json:"p999Ms"`
	MaxMS          float64 `json:"maxMs"`
	PeakRSSMiB     float64 `json:"peakRssMiB"` // VmRSS sampled every 100 ms
	// CPUPerRequestUS is the CPU time (user and system) the system's
	// process used per 2xx answer in the measured run, in microseconds;
	// unlike requests/s it hardly depends on what else the machine runs.
	CPUPerRequestUS float64 `json:"cpuPerRequestUs"`
	// DBCPUPerRequestUS is the same for the PostgreSQL sessions of the
	// system's own database; 0 when it has none or it is unknown.
	DBCPUPerRequestUS float64 `json:"dbCpuPerRequestUs,omitempty"`
}

// summarize turns a measured run into a system's figures.
func summarize(name string, warm, measured loadResult, peakRSS int64) systemStats {
	s := systemStats{
		System:         name,
		Requests:       measured.ok,
		Errors:         warm.failed + measured.failed,
		Non2xx:         warm.non2xx + measured.non2xx,
		ElapsedSeconds: measured.elapsed.Seconds(),
		P50MS:          ms(percentile(measured.latencies, 500)),
		P99MS:          ms(percentile(measured.latencies, 990)),
		P999MS:         ms(percentile(measured.latencies, 999)),
		MaxMS:          ms(percentile(measured.latencies, 1000)),
		PeakRSSMiB:     mib(peakRSS),
	}
	if measured.elapsed > 0 {
		s.RPS = float64(measured.ok) / measured.elapsed.Seconds()
	}
	for _, err := range []error{warm.firstErr, measured.firstErr} {
		if err != nil && s.FirstError == "" {
			s.FirstError = err.Error()
		}
	}
	return s
}

// ms converts a duration to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// comparison is a Felix system's cost over the bare proxy at one
// concurrency.
type comparison struct {
	System   string  `json:"system"`
	RPSRatio float64 `json:"rpsRatio"` // Felix's requests/s over bare's; 0 if bare has none
	AddedP50 float64 `json:"addedP50Ms"`
	AddedP99 float64 `json:"addedP99Ms"`
	CPURatio float64 `json:"cpuRatio"` // Felix's CPU per request over bare's; 0 if unknown
}

// compare computes felix's cost over bare.
func compare(felix, bare systemStats) comparison {
	c := comparison{System: felix.System, AddedP50: felix.P50MS - bare.P50MS, AddedP99: felix.P99MS - bare.P99MS}
	if bare.RPS > 0 {
		c.RPSRatio = felix.RPS / bare.RPS
	}
	if bare.CPUPerRequestUS > 0 {
		c.CPURatio = felix.CPUPerRequestUS / bare.CPUPerRequestUS
	}
	return c
}

// booksCheck compares a key's successfulCalls with the 200s seen.
type booksCheck struct {
	System string     `json:"system"`
	Keys   []keyBooks `json:"keys"`
	Pass   bool       `json:"pass"`
	Error  string     `json:"error,omitempty"` // the statistics could not be read
}

// keyBooks is one key's books: Felix's counters and the 200s seen.
type keyBooks struct {
	Key             int   `json:"key"` // index of the key in the run
	Seen200         int64 `json:"seen200"`
	SuccessfulCalls int64 `json:"successfulCalls"`
	RemainingCalls  int64 `json:"remainingCalls"`
	Initial         int64 `json:"initial"`
}

// ok reports whether the key's books agree: every 200 seen was counted as
// a success, and only those were taken from its calls.
func (k keyBooks) ok() bool {
	return k.SuccessfulCalls == k.Seen200 && k.Initial-k.SuccessfulCalls == k.RemainingCalls
}

// processMemory is a process's peak RSS over its whole life (VmHWM).
type processMemory struct {
	Process string  `json:"process"`
	PeakMiB float64 `json:"peakMiB"`
}

// streamingResult is the 64 MiB streaming scenario.
type streamingResult struct {
	Status       int     `json:"status"`
	BytesRead    int64   `json:"bytesRead"`
	Seconds      float64 `json:"seconds"`
	RSSBeforeMiB float64 `json:"rssBeforeMiB"`
	RSSPeakMiB   float64 `json:"rssPeakMiB"` // VmRSS sampled every 20 ms
	GrowthMiB    float64 `json:"growthMiB"`
	Error        string  `json:"error,omitempty"`
}

// complete reports whether the whole answer arrived with status 200.
func (s *streamingResult) complete() bool {
	return s.Error == "" && s.Status == 200 && s.BytesRead == streamSize
}

// inFlightResult is the many-in-flight scenario.
type inFlightResult struct {
	Requests     int     `json:"requests"`
	OK           int64   `json:"ok"`
	Errors       int64   `json:"errors"`
	FirstError   string  `json:"firstError,omitempty"`
	WallSeconds  float64 `json:"wallSeconds"`
	P50MS        float64 `json:"p50Ms"`
	MaxMS        float64 `json:"maxMs"`
	RSSBeforeMiB float64 `json:"rssBeforeMiB"`
	PeakRSSMiB   float64 `json:"peakRssMiB"` // VmHWM of a Felix started for the scenario
}

// targetCheck is one of the performance targets.
type targetCheck struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Status   string `json:"status"` // met, missed or not measured
}

// Target statuses.
const (
	met         = "met"
	missed      = "missed"
	notMeasured = "not measured"
)

// verdict names a target met or missed.
func verdict(ok bool) string {
	if ok {
		return met
	}
	return missed
}

// targetsFor evaluates the targets against res.
func targetsFor(res *results) []targetCheck {
	stream := targetCheck{Goal: "streaming 64 MiB: Felix RSS grows < 16 MiB", Measured: "-", Status: notMeasured}
	if s := res.Streaming; s != nil {
		stream.Measured = fmt.Sprintf("%.1f MiB", s.GrowthMiB)
		stream.Status = verdict(s.complete() && s.GrowthMiB < 16)
	}
	inFlight := targetCheck{Goal: fmt.Sprintf("%d in flight: all 200 and Felix RSS < 400 MiB", inFlightRequests), Measured: "-", Status: notMeasured}
	if f := res.InFlight; f != nil {
		inFlight.Measured = fmt.Sprintf("%d×200, %.0f MiB", f.OK, f.PeakRSSMiB)
		inFlight.Status = verdict(f.OK == int64(f.Requests) && f.PeakRSSMiB < 400)
	}
	return append([]targetCheck{
		ratioTarget(res, felixSQLite, 64, 0.60),
		ratioTarget(res, felixPolicies, 64, 0.60),
		addedP99Target(res, felixSQLite, 16, 2),
		ratioTarget(res, felixPostgres, 64, 0.35),
		stream,
		inFlight,
	}, append(farmTargets(res.Farm), instanceTargets(res.Instances)...)...)
}

// farmTargets are the gpu farm's goals: the GPUs kept busy while calls
// wait, and a light key's calls not held behind the heavy key's.
func farmTargets(f *farmResult) []targetCheck {
	busy := targetCheck{Goal: "gpu farm: every GPU busy ≥ 95% while calls wait", Measured: "-", Status: notMeasured}
	light := targetCheck{Goal: "gpu farm: light keys' p99 queue wait ≤ 2 job times", Measured: "-", Status: notMeasured}
	if f != nil {
		busy.Measured = fmt.Sprintf("%.1f%% (least busy GPU)", 100*f.minUtilisation())
		busy.Status = verdict(f.minUtilisation() >= 0.95 && f.MinQueue > 0)
		light.Measured = fmt.Sprintf("%.0f ms = %.1f job times", f.LightWaitP99MS, f.LightWaitP99MS/f.JobMS)
		light.Status = verdict(f.LightWaitP99MS <= 2*f.JobMS)
	}
	return []targetCheck{busy, light}
}

// ratioTarget checks that system reaches at least ratio of bare's
// requests/s at concurrency.
func ratioTarget(res *results, system string, concurrency int, ratio float64) targetCheck {
	t := targetCheck{Goal: fmt.Sprintf("%s ≥ %.0f%% of bare requests/s at c=%d", system, 100*ratio, concurrency), Measured: "-", Status: notMeasured}
	if c, ok := res.versus(system, concurrency); ok {
		t.Measured = fmt.Sprintf("%.0f%%", 100*c.RPSRatio)
		t.Status = verdict(c.RPSRatio >= ratio)
	}
	return t
}

// addedP99Target checks that system adds less than limit milliseconds to
// bare's p99 at concurrency.
func addedP99Target(res *results, system string, concurrency int, limit float64) targetCheck {
	t := targetCheck{Goal: fmt.Sprintf("%s adds < %g ms to p99 at c=%d", system, limit, concurrency), Measured: "-", Status: notMeasured}
	if c, ok := res.versus(system, concurrency); ok {
		t.Measured = fmt.Sprintf("%+.2f ms", c.AddedP99)
		t.Status = verdict(c.AddedP99 < limit)
	}
	return t
}

// versus finds system's comparison with bare at concurrency.
func (res *results) versus(system string, concurrency int) (comparison, bool) {
	for _, p := range res.Phases {
		if p.Concurrency != concurrency {
			continue
		}
		for _, c := range p.VersusBare {
			if c.System == system {
				return c, true
			}
		}
	}
	return comparison{}, false
}

// printHeader describes the run before any figure.
func printHeader(w io.Writer, r *results) {
	m := r.Machine
	fmt.Fprintf(w, "Felix benchmark, %s, %s %s/%s, %d CPUs (%s), load average %s\n",
		r.Date.Format(time.RFC3339), r.GoVersion, m.GOOS, m.GOARCH, m.CPUs, m.CPUModel, m.LoadAvg)
	fmt.Fprintf(w, "Systems (one process each, loopback only): %s; target: fake image API answering %d-byte JSON at once.\n",
		strings.Join(r.Settings.Systems, ", "), r.Settings.BodySize)
	fmt.Fprintf(w, "Closed loop per system and concurrency: %s warm-up, then %s measured in %d rounds, the systems taking turns; %d keys round-robin.\n",
		seconds(r.Settings.WarmupSeconds), seconds(r.Settings.DurationSeconds), r.Settings.Rounds, r.Settings.Keys)
	fmt.Fprintf(w, "Felix runs with LOG_LEVEL=%s: at info it logs one line per request, which costs throughput.\n", r.Settings.FelixLogLevel)
	fmt.Fprintf(w, "The load generator, the target and the proxies share the CPUs: compare the systems, not machines.\n")
}

// seconds formats a number of seconds as a duration, e.g. 10s.
func seconds(s float64) string { return time.Duration(s * float64(time.Second)).String() }

// printPhase prints one concurrency's table and Felix's cost over bare.
func printPhase(w io.Writer, p phase) {
	fmt.Fprintf(w, "\nConcurrency %d\n", p.Concurrency)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\treq/s\tp50 ms\tp99 ms\tp99.9 ms\terrors\tpeak RSS MiB\tCPU µs/req\t")
	for _, s := range p.Systems {
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%.1f\t%.0f\t\n", s.System, s.RPS, s.P50MS, s.P99MS, s.P999MS, s.Errors, s.PeakRSSMiB, s.CPUPerRequestUS)
	}
	tw.Flush()
	for _, c := range p.VersusBare {
		fmt.Fprintf(w, "  %s vs bare: %.0f%% of the throughput (%.2f×), p50 %+.2f ms, p99 %+.2f ms, CPU per request %.1f×\n",
			c.System, 100*c.RPSRatio, c.RPSRatio, c.AddedP50, c.AddedP99, c.CPURatio)
	}
	for _, s := range p.Systems {
		if s.FirstError != "" {
			fmt.Fprintf(w, "  %s: %d errors, e.g. %s\n", s.System, s.Errors, s.FirstError)
		}
	}
}

// printBooks prints the books checks.
func printBooks(w io.Writer, checks []booksCheck) {
	fmt.Fprintf(w, "\nBooks: successfulCalls of each key = 200s seen, remainingCalls = initial - successfulCalls\n")
	for _, b := range checks {
		var seen, counted int64
		for _, k := range b.Keys {
			seen += k.Seen200
			counted += k.SuccessfulCalls
		}
		verdict := "PASS"
		if !b.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "  %-30s %s  (%s, %d 200s seen, %d successful calls counted)\n", b.System, verdict, plural(len(b.Keys), "key"), seen, counted)
		if b.Error != "" {
			fmt.Fprintf(w, "    %s\n", b.Error)
		}
		for _, k := range b.Keys {
			if !k.ok() {
				fmt.Fprintf(w, "    key %d: 200s seen %d, successfulCalls %d, remainingCalls %d (expected %d)\n",
					k.Key, k.Seen200, k.SuccessfulCalls, k.RemainingCalls, k.Initial-k.SuccessfulCalls)
			}
		}
	}
}

// plural returns "1 key" or "n keys".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// printMemory prints each process's peak RSS over the run.
func printMemory(w io.Writer, mem []processMemory) {
	if len(mem) == 0 {
		return
	}
	fmt.Fprintf(w, "\nPeak RSS over the load phases (VmHWM)\n")
	for _, m := range mem {
		fmt.Fprintf(w, "  %-16s %6.1f MiB\n", m.Process, m.PeakMiB)
	}
}

// printScenarios prints the two felix-sqlite scenarios that ran.
func printScenarios(w io.Writer, s *streamingResult, f *inFlightResult) {
	if s != nil {
		fmt.Fprintf(w, "\nStreaming: one 64 MiB answer (32 KiB chunks) through felix-sqlite, read chunk by chunk\n")
		if s.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", s.Error)
		}
		fmt.Fprintf(w, "  status %d, %d bytes in %.2f s; Felix RSS before %.1f MiB, peak during %.1f MiB (every 20 ms): growth %.1f MiB\n",
			s.Status, s.BytesRead, s.Seconds, s.RSSBeforeMiB, s.RSSPeakMiB, s.GrowthMiB)
	}
	if f != nil {
		fmt.Fprintf(w, "\nMany in flight: %d concurrent requests through felix-sqlite, target waits %s\n", f.Requests, slowDelay)
		fmt.Fprintf(w, "  %d answered 200, %d errors; wall time %.2f s (latency p50 %.0f ms, max %.0f ms); Felix RSS before %.1f MiB, peak %.1f MiB (VmHWM)\n",
			f.OK, f.Errors, f.WallSeconds, f.P50MS, f.MaxMS, f.RSSBeforeMiB, f.PeakRSSMiB)
		if f.FirstError != "" {
			fmt.Fprintf(w, "  e.g. %s\n", f.FirstError)
		}
	}
}

// printFarm prints the gpu farm scenario.
func printFarm(w io.Writer, f *farmResult) {
	if f == nil {
		return
	}
	fmt.Fprintf(w, "\nGPU farm: felix-sqlite, %d fake GPUs running one %.0f ms job at a time (TARGET_MAX_IN_FLIGHT=1), %d closed-loop clients on %d keys, %d of them on one heavy key; %.0f s measured\n",
		f.GPUs, f.JobMS, f.Clients, f.Keys, f.HeavyClients, f.MeasuredSeconds)
	fmt.Fprintf(w, "  %d calls answered 200, %d errors; %d calls sent to a busy GPU (the cap broken); queue length never below %d while measured\n",
		f.Calls, f.Errors, f.Overlaps, f.MinQueue)
	if f.FirstError != "" {
		fmt.Fprintf(w, "  e.g. %s\n", f.FirstError)
	}
	util := make([]string, len(f.Utilisation))
	for i, u := range f.Utilisation {
		util[i] = fmt.Sprintf("%.1f%%", 100*u)
	}
	fmt.Fprintf(w, "  GPU utilisation (busy ÷ wall): %s; idle between two jobs p50 %.1f ms, p99 %.1f ms\n", strings.Join(util, ", "), f.GapP50MS, f.GapP99MS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  queue wait\tp50 ms\tp99 ms\tp99 in job times\t")
	fmt.Fprintf(tw, "  light keys\t%.0f\t%.0f\t%.1f\t\n", f.LightWaitP50MS, f.LightWaitP99MS, f.LightWaitP99MS/f.JobMS)
	fmt.Fprintf(tw, "  heavy key\t%.0f\t%.0f\t%.1f\t\n", f.HeavyWaitP50MS, f.HeavyWaitP99MS, f.HeavyWaitP99MS/f.JobMS)
	tw.Flush()
	fmt.Fprintf(w, "  served per key while measured: %v\n", f.ServedPerKey)
	fmt.Fprintf(w, "  Jain's fairness index across keys: %.3f of served calls per key, %.3f of served calls per client\n", f.JainPerKey, f.JainPerClient)
	fmt.Fprintf(w, "  %d calls queued: Felix RSS %.1f MiB (%.1f MiB before); queue filled and emptied as the clients left: %v\n",
		f.Queued, f.RSSQueuedMiB, f.RSSBeforeMiB, f.QueuedOK)
}

// printTargets prints the targets, met or missed.
func printTargets(w io.Writer, targets []targetCheck) {
	fmt.Fprintf(w, "\nTargets (reported only: missing one does not fail the run)\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, t := range targets {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", t.Goal, t.Measured, t.Status)
	}
	tw.Flush()
}

// printProblems prints what went wrong with the processes, if anything.
func printProblems(w io.Writer, problems []string) {
	if len(problems) == 0 {
		return
	}
	fmt.Fprintf(w, "\nProblems\n")
	for _, p := range problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// writeJSON writes res to path.
func writeJSON(path string, res *results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// describeMachine reads the CPU model and load average from /proc.
func describeMachine(openFiles uint64) machine {
	m := machine{CPUs: runtime.NumCPU(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUModel: "unknown", OpenFiles: openFiles}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPUModel = strings.TrimSpace(value)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}
