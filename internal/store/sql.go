package store

import (
	"errors"
	"fmt"
	"strings"

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
