package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/felix-gateway/felix/internal/target"
)

// TestOutcomesBounded: a known outcome is counted under its name, any
// other under "other", and every known one is exported from the start.
func TestOutcomesBounded(t *testing.T) {
	m := New(Options{Outcomes: []string{"success", "quota_exhausted"}})
	m.Generate("success")
	m.Generate("success")
	m.Generate("fx_secretkey") // what a careless caller might pass
	for outcome, want := range map[string]float64{"success": 2, "quota_exhausted": 0, Other: 1} {
		if got := testutil.ToFloat64(m.generateVec.WithLabelValues(outcome)); got != want {
			t.Errorf("outcome %q: got %v, want %v", outcome, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.generateVec); n != 3 {
		t.Errorf("%d outcome series, want 3 (success, quota_exhausted, other)", n)
	}
}

// TestRouteCodes: a route counts its answers by status code; a status
// outside 100–599 is counted as "0".
func TestRouteCodes(t *testing.T) {
	m := New(Options{})
	record := m.Route("GET /api/keys/{id}")
	for _, status := range []int{200, 200, 404, 1000, -1} {
		record(status, time.Millisecond)
	}
	for code, want := range map[string]float64{"200": 2, "404": 1, "0": 2} {
		if got := testutil.ToFloat64(m.httpRequests.WithLabelValues("GET /api/keys/{id}", code)); got != want {
			t.Errorf("code %s: got %v, want %v", code, got, want)
		}
	}
	if got := testutil.CollectAndCount(m.httpDuration); got != 1 {
		t.Errorf("%d duration series, want 1", got)
	}
}

// TestRecordingDoesNotAllocate: what the request path calls costs no
// allocation once a route's statuses have been seen.
func TestRecordingDoesNotAllocate(t *testing.T) {
	m := New(Options{Outcomes: []string{"success"}, Targets: []string{"http://gpu1:7860"}})
	record := m.Route("POST /api/generate")
	target := m.Target("http://gpu1:7860")
	record(200, time.Millisecond)
	allocs := testing.AllocsPerRun(1000, func() {
		record(200, time.Millisecond)
		m.Generate("success")
		target(time.Second)
		m.CallOpened()
		m.CallClosed()
		m.GroupCommitted(8, time.Millisecond, nil)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request, want 0", allocs)
	}
}

// TestOwnRegistry: the families are on Felix's own registry, with the Go
// and process collectors, and nothing is registered globally.
func TestOwnRegistry(t *testing.T) {
	m := New(Options{})
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range families {
		seen[strings.SplitN(mf.GetName(), "_", 2)[0]] = true
	}
	for _, prefix := range []string{"go", "process", "felix"} {
		if !seen[prefix] {
			t.Errorf("no %s_* family in the registry", prefix)
		}
	}
	// A second set of metrics registers without a conflict: nothing is global.
	New(Options{})
}

// fakePool is a pool whose state the test sets.
type fakePool struct{ st target.Stats }

func (p *fakePool) Stats() target.Stats { return p.st }

// TestPoolReadAtScrape: the targets' and the queue's series are read from
// the pool at each scrape.
func TestPoolReadAtScrape(t *testing.T) {
	m := New(Options{})
	p := &fakePool{st: target.Stats{
		Targets: []target.TargetStats{
			{URL: "http://gpu1:7860", Up: true, InFlight: 2, Served: 10, Failed: 1},
			{URL: "http://gpu2:7860", Up: false, InFlight: 0, Served: 3, Failed: 4},
		},
		Queue: target.QueueStats{Length: 5, Max: 100},
	}}
	m.ObservePool(p)
	want := `
# HELP felix_queue_length Calls waiting for a free target.
# TYPE felix_queue_length gauge
felix_queue_length 5
# HELP felix_target_failures_total Calls that got no answer from a target (refused, reset, timed out).
# TYPE felix_target_failures_total counter
felix_target_failures_total{target="http://gpu1:7860"} 1
felix_target_failures_total{target="http://gpu2:7860"} 4
# HELP felix_target_in_flight Calls a target is running now.
# TYPE felix_target_in_flight gauge
felix_target_in_flight{target="http://gpu1:7860"} 2
felix_target_in_flight{target="http://gpu2:7860"} 0
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"felix_queue_length", "felix_target_failures_total", "felix_target_in_flight"); err != nil {
		t.Error(err)
	}
	p.st.Targets[1].Up = true
	p.st.Queue.Length = 0
	want = `
# HELP felix_queue_length Calls waiting for a free target.
# TYPE felix_queue_length gauge
felix_queue_length 0
# HELP felix_target_up 1 while a target may take calls, 0 while it is left out (failed health probe or cooldown after a call got no answer).
# TYPE felix_target_up gauge
felix_target_up{target="http://gpu1:7860"} 1
felix_target_up{target="http://gpu2:7860"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "felix_queue_length", "felix_target_up"); err != nil {
		t.Errorf("after the pool changed: %v", err)
	}
}

// BenchmarkRequest is what the metrics cost one generate call: the
// route's and the outcome's counters, two latency histograms, the calls
// open gauge, and its share of a group commit of 8 writes.
func BenchmarkRequest(b *testing.B) {
	m := New(Options{Outcomes: []string{"success"}, Targets: []string{"http://gpu1:7860"}})
	record := m.Route("POST /api/generate")
	target := m.Target("http://gpu1:7860")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			m.CallOpened()
			target(time.Second)
			m.CallClosed()
			record(200, time.Second)
			m.Generate("success")
			if i%4 == 0 { // two writes per call, eight per commit
				m.GroupCommitted(8, time.Millisecond, nil)
			}
		}
	})
}
