package e2e

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"text/tabwriter"

	"github.com/felix-gateway/felix/internal/store"
)

var reportFile = flag.String("report", "", "write the reliability summary table to this file")

// tallies sums, per store, what the suite did and what its audits found;
// `make reliability` prints them as one table.
var tallies = struct {
	sync.Mutex
	rows map[store.Kind]*tallyRow
}{rows: map[store.Kind]*tallyRow{}}

type tallyRow struct {
	requests      int64 // client requests sent and answered (or cut)
	kills         int64 // SIGKILLs survived
	faults        int64 // other faults injected: SIGTERM restarts, cut-off shutdowns, outages, stalls
	failovers     int64 // PostgreSQL primaries lost (stopped or fenced) and standbys promoted under load
	audits        int64 // book checks run
	discrepancies int64 // book checks that failed
}

func tally(kind store.Kind, f func(r *tallyRow)) {
	tallies.Lock()
	defer tallies.Unlock()
	r := tallies.rows[kind]
	if r == nil {
		r = &tallyRow{}
		tallies.rows[kind] = r
	}
	f(r)
}

// sent counts the book's answers not yet tallied, and marks them tallied.
func (b *book) untallied() int64 {
	n := b.seen200.Load() + b.seen429.Load() + b.seenTarget.Load() + b.lost.Load() +
		b.settleFail.Load() + b.storeDown.Load() + b.refused.Load() + b.unexpected.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	d := n - b.tallied
	b.tallied = n
	return d
}

// writeReport writes the summary table to w.
func writeReport(w io.Writer) {
	tallies.Lock()
	defer tallies.Unlock()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "store\trequests sent\tkills survived\tfailovers survived\tother faults injected\tbook audits\tdiscrepancies\t")
	kinds := make([]store.Kind, 0, len(tallies.rows))
	for k := range tallies.rows {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		r := tallies.rows[k]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", k, r.requests, r.kills, r.failovers, r.faults, r.audits, r.discrepancies)
	}
	tw.Flush()
}

func writeReportFile() {
	if *reportFile == "" {
		return
	}
	f, err := os.Create(*reportFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: report:", err)
		return
	}
	defer f.Close()
	writeReport(f)
}
