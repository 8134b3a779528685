package main

import "testing"

// TestInstanceTargets: rows of several instances on more than one key
// need 80% of one instance, no deadlock and no non-2xx answer; a history
// row needs 85% of a fresh database; one key and bare proxies are only
// reported.
func TestInstanceTargets(t *testing.T) {
	row := func(instances int, history int64, bare bool, versus float64, deadlocks, non2xx int64) instanceRow {
		return instanceRow{Instances: instances, History: history, Bare: bare, VersusOne: versus, Deadlocks: deadlocks,
			Stats: systemStats{System: instanceSetup{instances: instances, history: history, bare: bare}.name(), Non2xx: non2xx}}
	}
	groups := []instanceGroup{
		{Keys: 8, Rows: []instanceRow{
			row(1, 0, false, 1, 0, 0),
			row(2, 0, false, 0.85, 0, 0),  // met
			row(3, 0, false, 0.79, 0, 0),  // too slow
			row(1, 1e6, false, 0.9, 0, 0), // met
			row(2, 0, true, 0.5, -1, 0),   // bare: reported only
		}},
		{Keys: 1000, Rows: []instanceRow{
			row(1, 0, false, 1, 0, 0),
			row(2, 0, false, 0.95, 1, 0), // a deadlock
			row(3, 0, false, 0.95, 0, 2), // non-2xx answers
		}},
		{Keys: 1, Rows: []instanceRow{row(1, 0, false, 1, 0, 0), row(2, 0, false, 0.5, 0, 0)}},
	}
	want := []struct{ goal, status string }{
		{"postgres, 2 instances × 8 keys: ≥ 80% of one instance, 0 deadlocks, 0 non-2xx", met},
		{"postgres, 3 instances × 8 keys: ≥ 80% of one instance, 0 deadlocks, 0 non-2xx", missed},
		{"postgres, 1 instance, 1M calls analyzed: ≥ 85% of a fresh database's requests/s", met},
		{"postgres, 2 instances × 1000 keys: ≥ 80% of one instance, 0 deadlocks, 0 non-2xx", missed},
		{"postgres, 3 instances × 1000 keys: ≥ 80% of one instance, 0 deadlocks, 0 non-2xx", missed},
	}
	got := instanceTargets(groups)
	if len(got) != len(want) {
		t.Fatalf("got %d targets %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].Goal != w.goal || got[i].Status != w.status {
			t.Errorf("target %d: got %q %s (measured %s), want %q %s", i, got[i].Goal, got[i].Status, got[i].Measured, w.goal, w.status)
		}
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int64]string{1_000_000: "1M", 20_000: "20k", 1500: "1500", 999: "999", 3_000_000: "3M"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
