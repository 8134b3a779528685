package quota_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

func TestGenerateKey(t *testing.T) {
	seen := map[string]bool{}
	counts := map[rune]int{}
	for range 2000 {
		k, err := quota.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != 35 || !strings.HasPrefix(k, "fx_") || quota.ValidateKey(k) != nil {
			t.Fatalf("GenerateKey() = %q: want fx_ + 32 base62", k)
		}
		if seen[k] {
			t.Fatalf("GenerateKey() repeated %q", k)
		}
		seen[k] = true
		for _, r := range k[3:] {
			counts[r]++
		}
	}
	// 64,000 characters over 62 symbols: about 1,032 each. A biased
	// mapping (e.g. byte % 62 without rejection) skews the first symbols.
	if len(counts) != 62 {
		t.Errorf("%d distinct characters, want 62", len(counts))
	}
	for r, n := range counts {
		if n < 850 || n > 1220 {
			t.Errorf("character %q appears %d times, want about 1032", r, n)
		}
	}
}

func TestMaskAndValidate(t *testing.T) {
	for _, tc := range []struct{ key, masked string }{
		{"fx_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "fx_AbCd…"},
		{"test123", "te…"},
		{"ab", "…"},
		{"aéééééé", "aé…"}, // 13 bytes: the cut at 4 would split an é
	} {
		if got := quota.Mask(tc.key); got != tc.masked {
			t.Errorf("Mask(%q) = %q, want %q", tc.key, got, tc.masked)
		}
	}
	if quota.HashKey("a") == quota.HashKey("b") || len(quota.HashKey("a")) != 64 {
		t.Error("HashKey: want distinct 64-hex-digit SHA-256 digests")
	}
	for _, bad := range []string{"", strings.Repeat("k", 257), "a\x00b", "a\nb", "a\x7fb", "a\u0085b", "\xff\xfe"} {
		if err := quota.ValidateKey(bad); !errors.Is(err, quota.ErrInvalidKeyFormat) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKeyFormat", bad, err)
		}
	}
	if err := quota.ValidateKey(strings.Repeat("k", 256)); err != nil {
		t.Errorf("ValidateKey(256 bytes) = %v, want nil", err)
	}
	if s := quota.Secret("fx_AbCdEfGh0123456789").String(); strings.Contains(s, "Gh01") {
		t.Errorf("Secret prints %q: want it masked", s)
	}
}

// TestDailyHistory: successes are counted on the calendar day of the
// statistics time zone, kept day by day, and today's count follows the
// clock.
func TestDailyHistory(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db string) {
		tokyo, err := time.LoadLocation("Asia/Tokyo")
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 3, 1, 14, 30, 0, 0, time.UTC) // 23:30 in Tokyo
		s := storetest.Open(t, db)
		svc := quota.NewService(quota.Options{Ledger: s, Keys: s, Usage: s, Location: tokyo, Now: func() time.Time { return now }})
		ctx := context.Background()
		_, key, err := svc.CreateKey(ctx, quota.KeySpec{Remaining: 10})
		if err != nil {
			t.Fatal(err)
		}
		succeed := func(n int) {
			for range n {
				r, err := svc.Reserve(ctx, quota.CallRequest{Key: key})
				if err != nil {
					t.Fatal(err)
				}
				if err := r.Settle(ctx, 200); err != nil {
					t.Fatal(err)
				}
			}
		}
		succeed(2)               // 2026-03-01 in Tokyo
		now = now.Add(time.Hour) // 00:30 on 03-02 in Tokyo, still 03-01 in UTC
		succeed(3)
		st, err := svc.SiteStats(ctx, 7)
		if err != nil {
			t.Fatal(err)
		}
		want := []quota.Day{{Date: "2026-03-01", Generations: 2}, {Date: "2026-03-02", Generations: 3}}
		if st.TotalGenerations != 5 || st.DailyGenerations != 3 || len(st.Days) != 2 || st.Days[0] != want[0] || st.Days[1] != want[1] {
			t.Errorf("SiteStats = %+v, want total 5, today 3, days %v", st, want)
		}
		now = now.AddDate(0, 0, 10) // ten days on: nothing today, history kept
		st, err = svc.SiteStats(ctx, 30)
		if err != nil || st.TotalGenerations != 5 || st.DailyGenerations != 0 || len(st.Days) != 2 {
			t.Errorf("ten days later: %+v, %v; want total 5, today 0, 2 days of history", st, err)
		}
		st, err = svc.SiteStats(ctx, 7)
		if err != nil || st.TotalGenerations != 5 || len(st.Days) != 0 {
			t.Errorf("last 7 days, ten days later: %+v, %v; want total 5 and no days", st, err)
		}
	})
}
