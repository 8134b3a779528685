package store_test

import (
	"context"
	"fmt"
	"sync"
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
func BenchmarkCall(b *testing.B) { benchCall(b, 0, 8) }

// BenchmarkCallGrown is BenchmarkCall as the gateway sees it at c=64: 64
// callers (on two cores) on a database of 100,000 calls, where each key's
// entries in calls_key span many pages, so a commit writes a page per key
// to the WAL. It shows the store's share of the gateway's cost at c=64
// with less noise than the gateway (docs/performance.md).
func BenchmarkCallGrown(b *testing.B) { benchCall(b, 100_000, 32) }

// benchCall times calls after history calls, with parallelism callers
// per GOMAXPROCS.
func benchCall(b *testing.B, history, parallelism int) {
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
			call := func() error {
				now := time.Now()
				a, err := s.Reserve(ctx, quota.ReserveRequest{KeyHash: fmt.Sprint("k", n.Add(1)%8), BatchSize: 1, Owner: "b", Start: now, Deadline: now.Add(time.Minute)})
				if err != nil || !a.Admitted() {
					return fmt.Errorf("reserve: %v %v", a, err)
				}
				return s.Settle(ctx, quota.Outcome{CallID: a.CallID, KeyID: a.KeyID, Cost: a.Cost, Status: 200, At: now, Day: "2026-01-01", Target: "http://127.0.0.1:8081"})
			}
			var (
				wg   sync.WaitGroup
				errs = make(chan error, 64)
			)
			for range min(history, 64) {
				wg.Go(func() {
					for n.Load() < int64(history) {
						if err := call(); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetParallelism(parallelism)
			b.ResetTimer()
			cpu := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
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
