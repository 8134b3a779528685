package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// BenchmarkCall measures one call's accounting, reserve then settle, with
// parallel callers spread over 8 keys: the store's cost per request, in
// time and in CPU (cpu-µs/op: user and system time of the whole process,
// which under load is what bounds the gateway).
func BenchmarkCall(b *testing.B) {
	for _, kind := range storetest.Kinds {
		b.Run(string(kind), func(b *testing.B) {
			s := storetest.Open(b, storetest.URL(b, kind))
			ctx := context.Background()
			for i := range 8 {
				if _, err := s.CreateKey(ctx, quota.NewKey{Hash: fmt.Sprint("k", i), Prefix: "k", Remaining: 1 << 40, Now: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
			var n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			cpu := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					now := time.Now()
					a, err := s.Reserve(ctx, quota.ReserveRequest{KeyHash: fmt.Sprint("k", n.Add(1)%8), BatchSize: 1, Owner: "b", Start: now, Deadline: now.Add(time.Minute)})
					if err != nil || !a.Admitted() {
						b.Fatal(a, err)
					}
					if err := s.Settle(ctx, quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: 200, At: now, Day: "2026-01-01"}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64((processCPU()-cpu)/time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU returns the CPU time (user and system) this process used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
