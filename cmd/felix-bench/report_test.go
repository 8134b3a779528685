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
				{System: felixPostgres, RPSRatio: 0.34},
			}},
		},
		Streaming: &streamingResult{Status: 200, BytesRead: streamSize, GrowthMiB: 3},
	}
	got := targetsFor(res)
	want := []string{
		met,         // 60% is enough
		missed,      // +2.5 ms at c=16
		missed,      // 34% < 35%
		met,         // 3 MiB growth, whole answer
		notMeasured, // no in-flight scenario
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
