package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/felix-gateway/felix/internal/config"
	"github.com/felix-gateway/felix/internal/store"
)

// startStore opens the configured store for serve and the key commands:
// migrated first when migrate is set (only that creates a SQLite file)
// and, when writable is set (serve), checked to accept writes, since a
// gateway on a read-only store could only refuse every call. Its errors
// are those of storeStep.
func startStore(ctx context.Context, cfg config.Config, migrate, writable bool, o store.Options) (store.Store, error) {
	if migrate {
		if err := migrateStore(ctx, cfg); err != nil {
			return nil, err
		}
	} else if err := databaseExists(cfg.DatabaseURL); err != nil {
		return nil, err
	}
	var st store.Store
	err := storeStep(ctx, cfg, true, func(ctx context.Context) error {
		s, err := store.Open(ctx, cfg.DatabaseURL, o)
		if err != nil {
			return err
		}
		if writable {
			if err := s.Writable(ctx); err != nil {
				s.Close()
				return err
			}
		}
		st = s
		return nil
	})
	return st, err
}

// migrateStore applies the migrations once the database answers. Waiting
// for another instance's migrations (they take turns) is not bounded by
// STORE_CONNECT_TIMEOUT.
func migrateStore(ctx context.Context, cfg config.Config) error {
	if err := storeStep(ctx, cfg, true, func(ctx context.Context) error { return store.Reachable(ctx, cfg.DatabaseURL) }); err != nil {
		return err
	}
	return storeStep(ctx, cfg, false, func(ctx context.Context) error { return store.Migrate(ctx, cfg.DatabaseURL) })
}

// storeStep runs one step of opening the store, within
// STORE_CONNECT_TIMEOUT if bounded is set, so that a database that accepts
// connections but never answers fails the start instead of hanging it.
// Its error is one sentence naming DATABASE_URL, where the value came
// from, and what to do.
func storeStep(ctx context.Context, cfg config.Config, bounded bool, f func(ctx context.Context) error) error {
	parent := ctx
	if bounded && cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
	}
	err := f(ctx)
	if err == nil {
		return nil
	}
	if parent.Err() != nil {
		return fmt.Errorf("stopped while opening the database: %w", parent.Err())
	}
	what := "the default database ./felix.db (DATABASE_URL is not set)"
	if cfg.DatabaseURLFrom != "" {
		what = "DATABASE_URL (set in " + cfg.DatabaseURLFrom + ")"
	}
	cause := store.Explain(err)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		cause = fmt.Sprintf("it did not answer within STORE_CONNECT_TIMEOUT=%s; check that it names a running database that is not overloaded, or raise STORE_CONNECT_TIMEOUT", cfg.ConnectTimeout)
	}
	return fmt.Errorf("%s cannot be used: %s", what, cause)
}
