package server

import (
	"fmt"
	"testing"
	"time"
)

// TestAttempts: an address is refused after maxFailures within the
// window, until its oldest failure leaves the window; addresses are
// counted apart (IPv6 by /64), and the tracker never holds more than its
// limit, however many addresses fail.
func TestAttempts(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := newAttempts(func() time.Time { return now }, 100)
	for i := range maxFailures {
		if _, blocked := a.blocked("192.0.2.1:5000"); blocked {
			t.Fatalf("blocked after %d failures, want after %d", i, maxFailures)
		}
		a.fail(fmt.Sprintf("192.0.2.1:%d", 5000+i)) // the port does not matter
		now = now.Add(time.Second)
	}
	wait, blocked := a.blocked("192.0.2.1:6000")
	if !blocked || wait != attemptWindow-maxFailures*time.Second {
		t.Errorf("after %d failures: got blocked %v for %v, want blocked for %v", maxFailures, blocked, wait, attemptWindow-maxFailures*time.Second)
	}
	if _, blocked := a.blocked("192.0.2.2:5000"); blocked {
		t.Error("another address is blocked too")
	}
	now = now.Add(wait)
	if _, blocked := a.blocked("192.0.2.1:5000"); blocked {
		t.Error("still blocked once the oldest failure left the window")
	}
	a.fail("192.0.2.1:5000")
	if _, blocked := a.blocked("192.0.2.1:5000"); !blocked {
		t.Error("not blocked with 10 failures in the last minute")
	}

	for i := range maxFailures {
		a.fail(fmt.Sprintf("[2001:db8:1:2::%x]:443", i)) // one /64
	}
	if _, blocked := a.blocked("[2001:db8:1:2:ffff::1]:443"); !blocked {
		t.Error("an IPv6 /64 is not counted as one client")
	}
	if _, blocked := a.blocked("[2001:db8:1:3::1]:443"); blocked {
		t.Error("the next /64 is blocked too")
	}
}

func TestAttemptsBounded(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := newAttempts(func() time.Time { return now }, 50)
	for range maxFailures {
		a.fail("198.51.100.7:1")
		now = now.Add(time.Millisecond)
	}
	for i := range 1000 {
		a.fail(fmt.Sprintf("10.0.%d.%d:1", i/256, i%256))
		if len(a.byAddr) > 50 {
			t.Fatalf("tracking %d addresses, want at most 50", len(a.byAddr))
		}
		now = now.Add(time.Millisecond)
	}
	now = now.Add(attemptWindow)
	a.fail("203.0.113.1:1")
	if len(a.byAddr) != 1 {
		t.Errorf("after a quiet minute: tracking %d addresses, want 1 (the expired ones forgotten)", len(a.byAddr))
	}
}
