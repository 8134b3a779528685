package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
)

// writeKind tells which write of a call's life a callWrite is.
type writeKind uint8

const (
	reserveWrite writeKind = iota + 1
	settleWrite
	releaseWrite
	sweepWrite // SQLite: release the expired calls, or an owner's
)

// callWrite is one write the group commits: the input of one operation.
type callWrite struct {
	kind    writeKind
	reserve quota.ReserveRequest // reserveWrite
	outcome quota.Outcome        // settleWrite, releaseWrite
	sweep   sweep                // sweepWrite
}

// sweep selects open calls to release: those past their deadline at now,
// or (owner set) those of owner started before now.
type sweep struct {
	owner string
	now   time.Time
}

// callResult is what one callWrite did; the group hands each caller its
// own, fresh on every attempt.
type callResult struct {
	callID, keyID, cost int64 // reserveWrite: the admitted call; 0 when refused
	changed             bool  // settleWrite, releaseWrite: the call was open and is now resolved
	released            int   // sweepWrite: how many calls were released
}

// admission turns a reserve's result into the Ledger's answer; key reads
// the key after a refusal.
func admission(r callResult, key func() (quota.Key, error)) (quota.Admission, error) {
	if r.callID != 0 {
		return quota.Admission{CallID: r.callID, KeyID: r.keyID, Cost: r.cost}, nil
	}
	k, err := key()
	switch {
	case err == nil:
		return quota.Admission{Key: &k}, nil
	case errors.Is(err, quota.ErrKeyNotFound):
		return quota.Admission{}, nil
	}
	return quota.Admission{}, wrap("reserve", err)
}

// settled tells what a settle that changed nothing found: the call was
// settled already (a retry after a lost answer: fine) or released.
func settled(callID int64, state string, err error) error {
	if err != nil {
		return wrap("settle", err)
	}
	switch state {
	case "settled":
		return nil
	case "released":
		return quota.ErrCallReleased
	}
	return fmt.Errorf("store: settle call %d: still %s", callID, state)
}

// dailyCounts add up a group's successful calls per day, for the site and
// for each key, so that each daily row is written once per group.
type dailyCounts struct {
	site map[string]int64
	keys map[keyDay]dayCount
}

type keyDay struct {
	keyID int64
	day   string
}

type dayCount struct{ generations, units int64 }

func (d *dailyCounts) add(keyID int64, day string, cost int64) {
	if d.site == nil {
		d.site, d.keys = map[string]int64{}, map[keyDay]dayCount{}
	}
	d.site[day]++
	k := keyDay{keyID, day}
	c := d.keys[k]
	d.keys[k] = dayCount{c.generations + 1, c.units + cost}
}
