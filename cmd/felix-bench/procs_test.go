package main

import (
	"os"
	"testing"
	"time"
)

func TestParseCPUTime(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{
			name: "utime 150 + stime 25 ticks",
			stat: "4242 (felix) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 11 0 12345 1000000 5000",
			want: 1750 * time.Millisecond,
		},
		{
			name: "a command name with spaces and parentheses",
			stat: "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1",
			want: 70 * time.Millisecond,
		},
		{name: "truncated", stat: "7 (felix) S 1 7 7", wantErr: true},
		{name: "no command name", stat: "garbage", wantErr: true},
		{name: "not a number", stat: "7 (felix) S 1 7 7 0 -1 0 0 0 0 0 x 4 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCPUTime(tt.stat)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseCPUTime error = %v, want error: %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseCPUTime = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseMemory(t *testing.T) {
	status := "Name:\tfelix\nVmPeak:\t 1300000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   20480 kB\nThreads:\t11\n"
	got, err := parseMemory(status)
	if err != nil {
		t.Fatal(err)
	}
	if want := (memory{rss: 20 << 20, hwm: 50 << 20}); got != want {
		t.Errorf("parseMemory = %+v, want %+v", got, want)
	}
	if _, err := parseMemory("Name:\tfelix\n"); err == nil {
		t.Error("parseMemory without VmRSS and VmHWM: no error, want one")
	}
}

func TestReadOwnProcess(t *testing.T) {
	// The parsers agree with this kernel's /proc.
	pid := os.Getpid()
	if _, err := cpuTime(pid); err != nil {
		t.Errorf("cpuTime(self): %v", err)
	}
	m, err := readMemory(pid)
	if err != nil {
		t.Fatalf("readMemory(self): %v", err)
	}
	if m.rss <= 0 || m.hwm < m.rss {
		t.Errorf("readMemory(self) = %+v, want 0 < rss ≤ hwm", m)
	}
}
