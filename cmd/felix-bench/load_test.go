package main

import (
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
