package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
	"github.com/felix-gateway/felix/internal/testwait"
)

// TestPoliciesAcrossInstances: two felix processes on one PostgreSQL
// apply each key's policies exactly, as one: the rate limit, the
// concurrency cap, Idempotency-Keys, refills and top-ups all live in the
// shared store, never per instance. The books balance afterwards.
func TestPoliciesAcrossInstances(t *testing.T) {
	databaseURL := storetest.URL(t, store.PostgresKind)
	tgt := newTarget(t, testSeed(t), always200(0))
	nodes := make([]*felix, 2)
	for i := range nodes {
		nodes[i] = startFelix(t, felixOptions{DatabaseURL: databaseURL, Target: tgt.URL(), Instance: fmt.Sprintf("policy-%d", i)})
	}
	hc := newClient(t)
	// spread sends n requests at once, alternating between the instances.
	spread := func(n int, send func(base string) answer) []answer {
		out := make([]answer, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { out[i] = send(nodes[i%2].URL) })
		}
		wg.Wait()
		return out
	}
	tally := func(answers []answer) map[string]int {
		m := map[string]int{}
		for _, a := range answers {
			switch {
			case a.err != nil:
				m["error: "+a.err.Error()]++
			case a.replayed:
				m["replayed"]++
			case a.status == http.StatusOK:
				m["200"]++
			default:
				m[fmt.Sprint(a.status, " ", a.code)]++
			}
		}
		return m
	}
	newKey := func(fields map[string]any) (int64, string) {
		t.Helper()
		k, err := adminDo(hc, http.MethodPost, nodes[0].URL+"/api/keys", fields, http.StatusCreated)
		if err != nil {
			t.Fatal(err)
		}
		return k.ID, k.APIKey
	}

	t.Run("rate limit", func(t *testing.T) {
		_, key := newKey(map[string]any{"remainingCalls": 1000, "rateLimit": map[string]any{"requests": 10, "per": "hour"}})
		got := tally(spread(30, func(base string) answer { return generate(context.Background(), hc, base, key) }))
		if got["200"] != 10 || got["429 rate_limited"] != 20 {
			t.Errorf("30 calls on a 10-per-hour key over two instances: %v, want 10 × 200 and 20 × 429 rate_limited", got)
		}
	})

	t.Run("concurrency cap", func(t *testing.T) {
		_, key := newKey(map[string]any{"remainingCalls": 1000, "maxConcurrent": 3})
		tgt.hold()
		hitsBefore := tgt.hits.Load()
		answers := make(chan answer, 12)
		for i := range 12 {
			go func() { answers <- generate(context.Background(), hc, nodes[i%2].URL, key) }()
		}
		var refused []answer
		for range 9 { // the 9 beyond the cap are refused while 3 are held
			refused = append(refused, <-answers)
		}
		if n := tgt.hits.Load() - hitsBefore; n != 3 {
			t.Errorf("%d calls reached the target at once, want the cap of 3", n)
		}
		tgt.release()
		ok := []answer{<-answers, <-answers, <-answers}
		if got := tally(refused); got["429 concurrency_limited"] != 9 {
			t.Errorf("the calls beyond the cap: %v, want 9 × 429 concurrency_limited", got)
		}
		if got := tally(ok); got["200"] != 3 {
			t.Errorf("the calls within the cap: %v, want 3 × 200", got)
		}
	})

	t.Run("idempotency key", func(t *testing.T) {
		id, key := newKey(map[string]any{"remainingCalls": 1000})
		tgt.hold()
		hitsBefore := tgt.hits.Load()
		send := func(base string) answer {
			return generateWith(context.Background(), hc, base, key, "Idempotency-Key", "order-77")
		}
		first := make(chan answer, 1)
		go func() { first <- send(nodes[0].URL) }()
		if err := tgt.waitHeld(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if got := tally(spread(10, send)); got["409 request_in_progress"] != 10 {
			t.Errorf("repeats while the first is in flight: %v, want 10 × 409 request_in_progress", got)
		}
		tgt.release()
		if a := <-first; a.status != http.StatusOK || !a.target {
			t.Fatalf("the first call: %v", a)
		}
		if got := tally(spread(10, send)); got["replayed"] != 10 {
			t.Errorf("repeats after the first succeeded: %v, want 10 replays", got)
		}
		if n := tgt.hits.Load() - hitsBefore; n != 1 {
			t.Errorf("the target got %d calls for one Idempotency-Key, want 1", n)
		}
		var k keyJSON
		if _, err := getJSON(hc, fmt.Sprint(nodes[1].URL, "/api/keys/", id), adminToken, &k); err != nil || k.SuccessfulCalls != 1 || k.RemainingCalls != 999 {
			t.Errorf("the key after one call and 20 repeats: %+v, %v; want charged once", k, err)
		}
	})

	t.Run("top-ups", func(t *testing.T) {
		id, _ := newKey(map[string]any{"remainingCalls": 0})
		spread(50, func(base string) answer {
			_, err := adminDo(hc, http.MethodPost, fmt.Sprint(base, "/api/keys/", id, "/topup"), map[string]any{"calls": 1}, http.StatusOK)
			return answer{status: http.StatusOK, err: err}
		})
		var k keyJSON
		if _, err := getJSON(hc, fmt.Sprint(nodes[0].URL, "/api/keys/", id), adminToken, &k); err != nil || k.RemainingCalls != 50 {
			t.Errorf("after 50 top-ups of 1 over two instances: %+v, %v; want 50", k, err)
		}
	})

	t.Run("refill once", func(t *testing.T) {
		id, _ := newKey(map[string]any{"remainingCalls": 7, "refill": map[string]any{"calls": 500, "every": "day"}})
		// The day's start has come: make the refill due now, as the clock
		// would at midnight, and let both instances' refill loops find it.
		l := openLedger(t, databaseURL)
		if _, err := l.db.Exec(`UPDATE api_key_stats SET refill_next_at = now() - interval '1 second' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		refilled := func() int64 {
			return l.count(t, fmt.Sprintf(`SELECT count(*) FROM key_events WHERE key_id = %d AND action = 'refilled'`, id))
		}
		testwait.Until(t, 10*time.Second, "an instance to apply the due refill", func() bool { return refilled() > 0 })
		// A second application would need the refill to be due again: it
		// is conditional on refill_next_at, which the first moved to the
		// next midnight (the race of two instances at once is the store
		// suite's TestRefillOnce).
		var k keyJSON
		if _, err := getJSON(hc, fmt.Sprint(nodes[1].URL, "/api/keys/", id), adminToken, &k); err != nil || k.RemainingCalls != 500 || refilled() != 1 {
			t.Errorf("after the refill: remaining %d, %d refilled events, %v; want 500 and exactly 1", k.RemainingCalls, refilled(), err)
		}
	})

	checkBooks(t, openLedger(t, databaseURL), nil)
}
