package main

import (
	"math"
	"testing"
	"time"
)

func TestCompare(t *testing.T) {
	tests := []struct {
		name             string
		felix, bare      systemStats
		wantRatio        float64
		wantP50, wantP99 float64
		wantCPU          float64
	}{
		{
			name:      "slower and later",
			felix:     systemStats{System: felixSQLite, RPS: 6000, P50MS: 1.5, P99MS: 4.25, CPUPerRequestUS: 300},
			bare:      systemStats{System: bare, RPS: 10000, P50MS: 1.0, P99MS: 3.0, CPUPerRequestUS: 120},
			wantRatio: 0.6, wantP50: 0.5, wantP99: 1.25, wantCPU: 2.5,
		},
		{
			name:      "faster than bare gives a ratio above 1 and negative added latency",
			felix:     systemStats{System: felixSQLite, RPS: 1200, P50MS: 0.8, P99MS: 2},
			bare:      systemStats{System: bare, RPS: 1000, P50MS: 1, P99MS: 2.5},
			wantRatio: 1.2, wantP50: -0.2, wantP99: -0.5,
		},
		{
			name:      "bare served nothing: no ratios",
			felix:     systemStats{System: felixPostgres, RPS: 500, P50MS: 2, P99MS: 5, CPUPerRequestUS: 400},
			bare:      systemStats{System: bare},
			wantRatio: 0, wantP50: 2, wantP99: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := compare(tt.felix, tt.bare)
			if c.System != tt.felix.System {
				t.Errorf("System = %q, want %q", c.System, tt.felix.System)
			}
			for _, f := range []struct {
				name      string
				got, want float64
			}{
				{"RPSRatio", c.RPSRatio, tt.wantRatio},
				{"AddedP50", c.AddedP50, tt.wantP50},
				{"AddedP99", c.AddedP99, tt.wantP99},
				{"CPURatio", c.CPURatio, tt.wantCPU},
			} {
				if math.Abs(f.got-f.want) > 1e-9 {
					t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
				}
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	warm := loadResult{ok: 50, failed: 1}
	measured := loadResult{ok: 1000, failed: 2, latencies: lat, elapsed: 4 * time.Second}
	s := summarize(felixSQLite, warm, measured, 3<<20)
	want := systemStats{
		System: felixSQLite, Requests: 1000, Errors: 3, ElapsedSeconds: 4, RPS: 250,
		P50MS: 500, P99MS: 990, P999MS: 999, MaxMS: 1000, PeakRSSMiB: 3,
	}
	if s != want {
		t.Errorf("summarize = %+v\nwant        %+v", s, want)
	}
}

func TestTargets(t *testing.T) {
	res := &results{
		Phases: []phase{
			{Concurrency: 16, VersusBare: []comparison{{System: felixSQLite, RPSRatio: 0.9, AddedP99: 2.5}}},
			{Concurrency: 64, VersusBare: []comparison{
				{System: felixSQLite, RPSRatio: 0.6, AddedP99: 1},
				{System: felixPolicies, RPSRatio: 0.59},
				{System: felixPostgres, RPSRatio: 0.34},
			}},
		},
		Streaming: &streamingResult{Status: 200, BytesRead: streamSize, GrowthMiB: 3},
		Farm:      &farmResult{JobMS: 200, Utilisation: []float64{0.97, 0.94}, MinQueue: 3, LightWaitP99MS: 400},
	}
	got := targetsFor(res)
	want := []string{
		met,         // 60% is enough
		missed,      // policies: 59% < 60%
		missed,      // +2.5 ms at c=16
		missed,      // 34% < 35%
		met,         // 3 MiB growth, whole answer
		notMeasured, // no in-flight scenario
		missed,      // one GPU busy 94% < 95%
		met,         // 400 ms = 2 job times
	}
	if len(got) != len(want) {
		t.Fatalf("got %d targets, want %d", len(got), len(want))
	}
	for i, tc := range got {
		if tc.Status != want[i] {
			t.Errorf("target %q: status %q (measured %s), want %q", tc.Goal, tc.Status, tc.Measured, want[i])
		}
	}
}

func TestJain(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{5, 5, 5, 5}, 1},
		{[]float64{4, 0, 0, 0}, 0.25},
		{[]float64{1, 3}, 0.8}, // 16 / (2 × 10)
		{[]float64{0, 0}, 0},
	} {
		if got := jain(tc.xs); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("jain(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestBusyShareAndGaps(t *testing.T) {
	at := func(ms int64) int64 { return time.Unix(100, 0).Add(time.Duration(ms) * time.Millisecond).UnixNano() }
	from, to := time.Unix(0, at(100)), time.Unix(0, at(1100))
	jobs := []jobSpan{
		{at(0), at(200)},     // 100 ms inside
		{at(205), at(405)},   // 200 ms, 5 ms after the first
		{at(1000), at(1200)}, // 100 ms inside, 595 ms after the second
	}
	if got := busyShare(jobs, from, to); math.Abs(got-0.4) > 1e-9 {
		t.Errorf("busyShare = %v, want 0.4", got)
	}
	want := []time.Duration{5 * time.Millisecond, 595 * time.Millisecond}
	if got := idleGaps(jobs, from, to); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("idleGaps = %v, want %v", got, want)
	}
}

func TestFarmKeys(t *testing.T) {
	fc := farmConfig{clients: 200, keys: 20, heavyClients: 150}
	n := fc.clientsOf()
	if n[0] != 150 {
		t.Errorf("heavy key: %d clients, want 150", n[0])
	}
	total := 0
	for k, c := range n {
		total += c
		if k > 0 && (c < 2 || c > 3) {
			t.Errorf("light key %d: %d clients, want 2 or 3 (50 over 19)", k, c)
		}
	}
	if total != 200 {
		t.Errorf("%d clients in all, want 200", total)
	}
}
