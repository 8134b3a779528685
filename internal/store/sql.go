package store

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
)

// siteStatsQuery selects the total of all days with each day from a
// bound, as rows (total, day, generations); one row with an empty day
// when no day is in range.
func siteStatsQuery(since, day string) string {
	return fmt.Sprintf(`
		SELECT t.total, COALESCE(%s, ''), COALESCE(d.generations, 0)
		FROM (SELECT COALESCE(sum(generations), 0) AS total FROM daily_generations) t
		LEFT JOIN daily_generations d ON d.day >= %s
		ORDER BY d.day`, day, since)
}

// callColumns are the columns of a usage-log row, in the order both
// stores scan them.
const callColumns = `c.id, c.key_id, k.key_prefix, c.request_id, c.started_at, c.finished_at, c.state, c.status, c.batch_size, c.cost, c.target`

// callsQuery is the usage log's statement for a filter, newest first,
// with its arguments. It writes only the conditions the filter sets, so
// that one key's calls are found by calls_key (and a time window by
// calls_started) even in a plan made before the values are known, as
// SQLite makes every plan: a condition like `(? = 0 OR key_id = ?)` hides
// the index from such a plan, which then reads calls from the newest to
// the oldest. started is the start column as the conditions name it and
// order the id column as ORDER BY names it (either may carry SQLite's
// unary + to keep the planner off an index); placeholder writes the n-th
// parameter as the store's SQL does; at converts a time to the store's
// column type.
func callsQuery(f quota.CallFilter, started, order string, placeholder func(n int) string, at func(time.Time) any) (string, []any) {
	var (
		conds []string
		args  []any
	)
	where := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, placeholder(len(args))))
	}
	if f.KeyID != 0 {
		where("c.key_id = %s", f.KeyID)
	}
	if f.From != nil {
		where(started+" >= %s", at(*f.From))
	}
	if f.To != nil {
		where(started+" < %s", at(*f.To))
	}
	if state := outcomeState(f.Outcome); state != "" {
		where("c.state = %s", state)
	}
	if f.Before != 0 {
		where("c.id < %s", f.Before)
	}
	q := "SELECT " + callColumns + " FROM calls c JOIN api_key_stats k ON k.id = c.key_id"
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY " + order + " DESC"
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += " LIMIT " + placeholder(len(args))
	}
	return q, args
}

// rowScanner is what pgx.Rows and *sql.Rows have in common; the caller
// closes them.
type rowScanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

func scanSiteStats(rows rowScanner) (quota.SiteStats, error) {
	var st quota.SiteStats
	for rows.Next() {
		var d quota.Day
		if err := rows.Scan(&st.TotalGenerations, &d.Date, &d.Generations); err != nil {
			return st, wrap("site stats", err)
		}
		if d.Date != "" {
			st.Days = append(st.Days, d)
		}
	}
	return st, wrap("site stats", rows.Err())
}

// wrap prefixes a store error with its operation, leaving the sentinels
// the rules test for recognisable.
func wrap(op string, err error) error {
	if err == nil || errors.Is(err, quota.ErrKeyNotFound) {
		return err
	}
	return fmt.Errorf("store: %s: %w", op, readOnly(err))
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// escapeLike escapes s for a LIKE pattern with ESCAPE '\'.
func escapeLike(s string) string { return likeEscaper.Replace(s) }
