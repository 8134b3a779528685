package store_test

import (
	"context"
	"database/sql"
	"slices"
	"testing"

	"github.com/felix-gateway/felix/internal/store"
	"github.com/felix-gateway/felix/internal/store/storetest"
)

// TestAutovacuumOff: on PostgreSQL, AutovacuumOff names the server
// setting when autovacuum is off (as on the shared test server) and every
// table of Felix's schema whose own autovacuum_enabled is false; on SQLite
// it names nothing.
func TestAutovacuumOff(t *testing.T) {
	storetest.Each(t, func(t *testing.T, databaseURL string) {
		s := storetest.Open(t, databaseURL)
		ctx := context.Background()
		kind, dsn, _ := store.Parse(databaseURL)
		var (
			want []string
			db   *sql.DB
		)
		if kind == store.PostgresKind {
			var err error
			if db, err = sql.Open("pgx", dsn); err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var setting string
			if err := db.QueryRow(`SHOW autovacuum`).Scan(&setting); err != nil {
				t.Fatal(err)
			}
			if setting == "off" {
				want = []string{"autovacuum"}
			}
		}
		got, err := store.AutovacuumOff(ctx, s)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("AutovacuumOff = %v, %v; want %v", got, err, want)
		}
		if db == nil {
			return
		}
		for _, q := range []string{`ALTER TABLE calls SET (autovacuum_enabled = off)`, `ALTER TABLE daily_generations SET (autovacuum_enabled = false)`, `ALTER TABLE api_key_stats SET (autovacuum_enabled = on)`} {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		want = append(want, "calls", "daily_generations")
		if got, err := store.AutovacuumOff(ctx, s); err != nil || !slices.Equal(got, want) {
			t.Errorf("after turning it off for calls and daily_generations: AutovacuumOff = %v, %v; want %v", got, err, want)
		}
	})
}
