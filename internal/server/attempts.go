package server

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Wrong admin tokens are counted per client address: after maxFailures
// within attemptWindow, that address is refused (429 too_many_attempts)
// until the oldest of them is older than the window, whatever token it
// sends, so that a right guess cannot be told from a wrong one. Other
// addresses are not affected.
const (
	maxFailures     = 10
	attemptWindow   = time.Minute
	maxTrackedAddrs = 10000 // at most about 2 MB
)

// attempts tracks recent wrong admin tokens per address.
type attempts struct {
	mu     sync.Mutex
	now    func() time.Time
	limit  int // addresses tracked at most
	byAddr map[netip.Prefix][]time.Time
}

func newAttempts(now func() time.Time, limit int) *attempts {
	return &attempts{now: now, limit: limit, byAddr: map[netip.Prefix][]time.Time{}}
}

// blocked reports whether addr has used up its failures, and for how long
// it is refused.
func (a *attempts) blocked(addr string) (retryAfter time.Duration, ok bool) {
	key := addrKey(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	recent := a.recent(key, now)
	if len(recent) < maxFailures {
		return 0, false
	}
	return recent[0].Add(attemptWindow).Sub(now), true
}

// fail records a wrong token from addr.
func (a *attempts) fail(addr string) {
	key := addrKey(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	recent := a.recent(key, now)
	if recent == nil && len(a.byAddr) >= a.limit {
		a.evict(now)
	}
	if len(recent) == maxFailures {
		recent = recent[1:]
	}
	a.byAddr[key] = append(recent, now)
}

// recent returns key's failures within the window, oldest first, and
// forgets the older ones.
func (a *attempts) recent(key netip.Prefix, now time.Time) []time.Time {
	times := a.byAddr[key]
	i := 0
	for i < len(times) && !times[i].After(now.Add(-attemptWindow)) {
		i++
	}
	if i == len(times) {
		delete(a.byAddr, key)
		return nil
	}
	return times[i:]
}

// evict makes room for one more address: it forgets every address with
// no failure within the window, or else the one whose last failure is the
// oldest.
func (a *attempts) evict(now time.Time) {
	var oldest netip.Prefix
	var oldestAt time.Time
	for key, times := range a.byAddr {
		last := times[len(times)-1]
		if !last.After(now.Add(-attemptWindow)) {
			delete(a.byAddr, key)
		} else if oldestAt.IsZero() || last.Before(oldestAt) {
			oldest, oldestAt = key, last
		}
	}
	if len(a.byAddr) >= a.limit {
		delete(a.byAddr, oldest)
	}
}

// addrKey is what counts as one client: its IP address from
// Request.RemoteAddr, or for IPv6 its /64 network, since one host
// usually has a whole /64 to pick addresses from.
func addrKey(remoteAddr string) netip.Prefix {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{} // not an IP (a test's or a unix socket's address): one shared entry
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.PrefixFrom(ip, 32)
}

// seconds rounds d up to whole seconds, at least 1, for Retry-After.
func seconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
