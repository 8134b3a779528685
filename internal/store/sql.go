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

// callColumns are the columns of a usage-log row after its id, in the
// order both stores scan them.
const callColumns = `c.key_id, k.key_prefix, c.request_id, c.started_at, c.finished_at, c.state, c.status, c.batch_size, c.cost, c.target`

// callFilterSQL is a usage-log filter as the placeholders of the
// conditions it sets ("" for those it does not), with their arguments.
// Only the conditions a filter sets are written, so that one key's calls
// are found by their key's index (and a time window by calls_started)
// even in a plan made before the values are known, as SQLite makes every
// plan: a condition like `(? = 0 OR key_id = ?)` hides the index from
// such a plan, which then reads calls from the newest to the oldest.
type callFilterSQL struct {
	args                                     []any
	key, from, to, state, before, limitParam string
}

// newCallFilterSQL writes f's conditions' placeholders as placeholder
// does, with times converted by at to the store's column type.
func newCallFilterSQL(f quota.CallFilter, placeholder func(n int) string, at func(time.Time) any) callFilterSQL {
	var s callFilterSQL
	param := func(v any) string {
		s.args = append(s.args, v)
		return placeholder(len(s.args))
	}
	if f.KeyID != 0 {
		s.key = param(f.KeyID)
	}
	if f.From != nil {
		s.from = param(at(*f.From))
	}
	if f.To != nil {
		s.to = param(at(*f.To))
	}
	if state := outcomeState(f.Outcome); state != "" {
		s.state = param(state)
	}
	if f.Before != 0 {
		s.before = param(f.Before)
	}
	if f.Limit > 0 {
		s.limitParam = param(f.Limit)
	}
	return s
}

// callCols names the columns the conditions of a filter are written on.
type callCols struct{ key, id, started string }

// onCalls are the columns of calls c.
var onCalls = callCols{"c.key_id", "c.id", "c.started_at"}

// conds are the filter's conditions on cols, after the given ones.
func (s callFilterSQL) conds(cols callCols, conds ...string) string {
	for _, c := range []struct{ col, op, param string }{
		{cols.key, "=", s.key}, {cols.started, ">=", s.from}, {cols.started, "<", s.to},
		{"c.state", "=", s.state}, {cols.id, "<", s.before},
	} {
		if c.param != "" {
			conds = append(conds, c.col+" "+c.op+" "+c.param)
		}
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// limit is the LIMIT clause, if the filter sets one.
func (s callFilterSQL) limit() string {
	if s.limitParam == "" {
		return ""
	}
	return " LIMIT " + s.limitParam
}

// callsFrom selects a usage-log row from calls c joined to its key.
const callsFrom = "SELECT c.id, " + callColumns + " FROM calls c JOIN api_key_stats k ON k.id = c.key_id"

// callsQuery is the usage log's statement for a filter, newest first,
// with its arguments, reading one key's calls by calls_key (PostgreSQL).
func callsQuery(f quota.CallFilter, placeholder func(n int) string, at func(time.Time) any) (string, []any) {
	s := newCallFilterSQL(f, placeholder, at)
	return callsFrom + s.conds(onCalls) + " ORDER BY c.id DESC" + s.limit(), s.args
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
