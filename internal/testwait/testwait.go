// Package testwait waits, in tests, for a condition instead of for a
// time: the one place tests poll.
package testwait

import (
	"testing"
	"time"
)

// interval is how often a condition is checked: short against the
// seconds a test may wait, long enough not to spin a core.
const interval = 5 * time.Millisecond

// For reports whether cond held within timeout, checking it at once and
// then every few milliseconds.
func For(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(interval) {
		if time.Now().After(deadline) {
			return cond()
		}
	}
	return true
}

// Until fails t, naming what it waited for, unless cond holds within
// timeout.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !For(timeout, cond) {
		t.Fatalf("still waiting after %s for %s", timeout, what)
	}
}
