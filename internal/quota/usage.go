package quota

import (
	"context"
	"fmt"
	"time"
)

// Site is the site-wide statistics with today's count.
type Site struct {
	TotalGenerations int64
	DailyGenerations int64
	Days             []Day
}

// SiteStats returns the total, today's count and the last days of history.
func (s *Service) SiteStats(ctx context.Context, days int) (Site, error) {
	if days <= 0 {
		days = 30
	}
	today, since := s.lastDays(days)
	st, err := s.usage.SiteStats(ctx, since)
	if err != nil {
		return Site{}, unavailable(err)
	}
	out := Site{TotalGenerations: st.TotalGenerations, Days: st.Days}
	if out.Days == nil {
		out.Days = []Day{}
	}
	for _, d := range st.Days {
		if d.Date == today {
			out.DailyGenerations = d.Generations
		}
	}
	return out, nil
}

// lastDays returns today and the first of the last n days (today
// included), in the statistics time zone.
func (s *Service) lastDays(n int) (today, since string) {
	now := s.now().In(s.loc)
	return s.Day(now), s.Day(now.AddDate(0, 0, -(n - 1)))
}

// KeyDaily returns the last n days of the key id, today included, oldest
// first, with the days without use as zeros.
func (s *Service) KeyDaily(ctx context.Context, id int64, n int) ([]KeyDay, error) {
	if _, err := s.KeyByID(ctx, id); err != nil {
		return nil, err
	}
	return s.keyDaily(ctx, id, n)
}

func (s *Service) keyDaily(ctx context.Context, id int64, n int) ([]KeyDay, error) {
	_, since := s.lastDays(n)
	used, err := s.usage.KeyDaily(ctx, id, since)
	if err != nil {
		return nil, unavailable(err)
	}
	byDate := make(map[string]KeyDay, len(used))
	for _, d := range used {
		byDate[d.Date] = d
	}
	first := s.now().In(s.loc).AddDate(0, 0, -(n - 1))
	days := make([]KeyDay, n)
	for i := range days {
		date := s.Day(first.AddDate(0, 0, i))
		days[i] = byDate[date]
		days[i].Date = date
	}
	return days, nil
}

// HolderDays is how many days of its own use a key's holder sees.
const HolderDays = 30

// Holder returns a key by its plaintext with its last HolderDays days:
// what the key's holder may see of it.
func (s *Service) Holder(ctx context.Context, key string) (Key, []KeyDay, error) {
	k, err := s.Key(ctx, key)
	if err != nil {
		return Key{}, nil, err
	}
	days, err := s.keyDaily(ctx, k.ID, HolderDays)
	return k, days, err
}

// Calls streams the calls f selects to each, newest first.
func (s *Service) Calls(ctx context.Context, f CallFilter, each func(Call) error) error {
	return unavailableOrNil(s.usage.Calls(ctx, f, each))
}

// CallsPage returns a page of calls, newest first, and the cursor of the
// next page (0 when this is the last).
func (s *Service) CallsPage(ctx context.Context, f CallFilter) ([]Call, int64, error) {
	want := f.Limit
	f.Limit++
	calls := []Call{}
	err := s.Calls(ctx, f, func(c Call) error {
		calls = append(calls, c)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	if len(calls) > want {
		calls = calls[:want]
		return calls, calls[want-1].ID, nil
	}
	return calls, 0, nil
}

// pruneBatch bounds the calls one delete removes, so that pruning never
// holds the store for long.
const pruneBatch = 1000

// Prune deletes the usage log's calls started more than retention ago, in
// small batches, and returns how many. Counters, the site's totals and the
// daily histories are kept.
func (s *Service) Prune(ctx context.Context, retention time.Duration) (int, error) {
	before := s.nowUTC().Add(-retention)
	total := 0
	for {
		n, err := s.usage.PruneCalls(ctx, before, pruneBatch)
		total += n
		if err != nil {
			return total, unavailable(err)
		}
		if n < pruneBatch {
			return total, nil
		}
	}
}

// RunPrune prunes the usage log (a retention of 0 keeps every call) and
// forgets expired Idempotency-Keys, at once and then every interval until
// ctx ends.
func (s *Service) RunPrune(ctx context.Context, retention, interval time.Duration) {
	for {
		if retention > 0 {
			n, err := s.Prune(ctx, retention)
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Warn("pruning the usage log failed", "err", err)
			case n > 0:
				s.log.Info("pruned the usage log", "calls", n, "retention", retention)
			}
		}
		if _, err := s.ledger.PruneIdempotency(ctx, s.nowUTC()); err != nil && ctx.Err() == nil {
			s.log.Warn("forgetting expired Idempotency-Keys failed", "err", err)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Books checks the books from the store alone and returns one sentence per
// discrepancy (none when they balance): for every key, Σ over its events
// of (after − before) − usedUnits = remainingCalls and its daily history
// sums to its successful calls and used units; for the site, the total of
// the daily history = Σ of every key's successful calls.
func (s *Service) Books(ctx context.Context) ([]string, error) {
	a, err := s.usage.Audit(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	var out []string
	var successful int64
	for _, k := range a.Keys {
		successful += k.SuccessfulCalls
		name := fmt.Sprintf("key %d (%s…)", k.ID, k.Prefix)
		if k.Deleted {
			name += ", deleted,"
		}
		if got := k.EventsChange - k.UsedUnits; got != k.RemainingCalls {
			out = append(out, fmt.Sprintf("%s: its events add up to %d and it used %d units, so %d should remain, but remainingCalls is %d",
				name, k.EventsChange, k.UsedUnits, got, k.RemainingCalls))
		}
		if k.DailyCalls != k.SuccessfulCalls || k.DailyUnits != k.UsedUnits {
			out = append(out, fmt.Sprintf("%s: its daily history adds up to %d calls and %d units, but successfulCalls is %d and usedUnits %d",
				name, k.DailyCalls, k.DailyUnits, k.SuccessfulCalls, k.UsedUnits))
		}
	}
	if a.SiteGenerations != successful {
		out = append(out, fmt.Sprintf("site: the daily history adds up to %d generations, but the keys' successful calls add up to %d",
			a.SiteGenerations, successful))
	}
	return out, nil
}
