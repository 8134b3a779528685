package main

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	// 1..n milliseconds, so that the k-th smallest value is k ms.
	ramp := func(n int) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i+1) * time.Millisecond
		}
		return s
	}
	tests := []struct {
		name     string
		sorted   []time.Duration
		perMille int
		want     time.Duration
	}{
		{"empty", nil, 500, 0},
		{"one value is every percentile", ramp(1), 999, time.Millisecond},
		{"p50 of 1000", ramp(1000), 500, 500 * time.Millisecond},
		{"p99 of 1000", ramp(1000), 990, 990 * time.Millisecond},
		{"p99.9 of 1000 is the 999th, not the max", ramp(1000), 999, 999 * time.Millisecond},
		{"p100 is the max", ramp(1000), 1000, 1000 * time.Millisecond},
		{"p50 of an odd count is the middle", ramp(5), 500, 3 * time.Millisecond},
		{"p50 of an even count is the lower middle", ramp(4), 500, 2 * time.Millisecond},
		{"p99 of 10 rounds the rank up to the max", ramp(10), 990, 10 * time.Millisecond},
		{"p99.9 of 10001 rounds 9990.999 up", ramp(10001), 999, 9991 * time.Millisecond},
		{"p0 is the min", ramp(10), 0, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.perMille); got != tt.want {
				t.Errorf("percentile(%d values, %d‰) = %v, want %v", len(tt.sorted), tt.perMille, got, tt.want)
			}
		})
	}
}

func TestParseConcurrency(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{"16,64,256", []int{16, 64, 256}, false},
		{" 8 , 32", []int{8, 32}, false},
		{"1", []int{1}, false},
		{"0", nil, true},
		{"16,,64", nil, true},
		{"sixteen", nil, true},
		{"5000", nil, true},
	}
	for _, tt := range tests {
		got, err := parseConcurrency(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseConcurrency(%q) error = %v, want error: %v", tt.in, err, tt.wantErr)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseConcurrency(%q) = %v, want %v", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("parseConcurrency(%q) = %v, want %v", tt.in, got, tt.want)
				break
			}
		}
	}
}

// TestLoadResultAdd: a system's rounds pool into one result.
func TestLoadResultAdd(t *testing.T) {
	first := errors.New("status 503")
	a := loadResult{ok: 2, failed: 1, firstErr: first, okByKey: []int64{1, 1}, latencies: []time.Duration{1, 3}, elapsed: time.Second}
	b := loadResult{ok: 3, firstErr: errors.New("later"), okByKey: []int64{2, 1}, latencies: []time.Duration{2}, elapsed: 2 * time.Second}
	got := loadResult{}.add(a).add(b)
	slices.Sort(got.latencies)
	if got.ok != 5 || got.failed != 1 || got.firstErr != first || got.elapsed != 3*time.Second {
		t.Errorf("ok %d, failed %d, first error %v, elapsed %s; want 5, 1, %v, 3s", got.ok, got.failed, got.firstErr, got.elapsed, first)
	}
	if !slices.Equal(got.okByKey, []int64{3, 2}) || !slices.Equal(got.latencies, []time.Duration{1, 2, 3}) {
		t.Errorf("okByKey %v, latencies %v; want [3 2] and [1 2 3]", got.okByKey, got.latencies)
	}
}

// TestParseFlagsRounds: rounds must leave each turn some time.
func TestParseFlagsRounds(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--rounds", "5"}, true},
		{[]string{"--rounds", "1", "--duration", "1s"}, true},
		{[]string{"--rounds", "0"}, false},
		{[]string{"--rounds", "20", "--duration", "1s"}, false},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if (err == nil) != tc.ok {
			t.Errorf("%v: got error %v, want ok=%v", tc.args, err, tc.ok)
		}
		if err == nil && cfg.rounds < 1 {
			t.Errorf("%v: rounds %d", tc.args, cfg.rounds)
		}
	}
}
