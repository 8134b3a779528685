package store

import "fmt"

// PGByIndex is what every group sets in its transaction.
const PGByIndex = pgByIndex

// PGStatements are the PostgreSQL statements whose plans the tests of
// package store_test check, by name, with their parameters' SQL types.
var PGStatements = []struct {
	Name, SQL string
	Params    []string
}{
	{"settle", pgSettle, []string{"bigint[]", "int[]", "timestamptz[]", "date[]", "text[]"}},
	{"release", pgRelease, []string{"bigint[]", "int[]", "timestamptz[]", "text[]"}},
	{"lock the keys of expired calls", fmt.Sprintf(pgLockKeysOf, pgExpired), []string{"timestamptz"}},
	{"release expired calls", fmt.Sprintf(pgReleaseWhere, pgExpired), []string{"timestamptz"}},
	{"lock the keys of an owner's calls", fmt.Sprintf(pgLockKeysOf, pgOwned), []string{"timestamptz", "text"}},
	{"release an owner's calls", fmt.Sprintf(pgReleaseWhere, pgOwned), []string{"timestamptz", "text"}},
}
