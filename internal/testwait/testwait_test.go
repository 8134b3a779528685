package testwait_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/testwait"
)

func TestFor(t *testing.T) {
	var n atomic.Int64
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	if !testwait.For(10*time.Second, func() bool { return n.Load() == 3 }) {
		t.Fatal("a condition that comes true was not seen")
	}
	if testwait.For(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was reported as held")
	}
}
