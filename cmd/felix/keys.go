package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/felix-gateway/felix/internal/quota"
	"github.com/felix-gateway/felix/internal/store"
)

// openService opens the configured store (migrating it when AUTO_MIGRATE
// is on) for the one-shot commands. They never create a database: in the
// wrong folder they would report an empty one.
func openService(ctx context.Context, e env) (*quota.Service, func(), error) {
	cfg, err := loadConfig(e, false)
	if err != nil {
		return nil, nil, err
	}
	if err := databaseExists(cfg.DatabaseURL); err != nil {
		return nil, nil, err
	}
	st, err := openStore(ctx, cfg.DatabaseURL, cfg.AutoMigrate, store.Options{MaxConns: 2})
	if err != nil {
		return nil, nil, err
	}
	cfg.InstanceID = "cli"
	return newService(cfg, st, newLogger(cfg, e.stderr)), func() { st.Close() }, nil
}

// databaseExists refuses a SQLite DATABASE_URL whose file does not exist:
// only serve and migrate create a database.
func databaseExists(databaseURL string) error {
	kind, path, err := store.Parse(databaseURL)
	if err != nil || kind != store.SQLiteKind {
		return err
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		return nil // an unreadable file gets the store's own error
	}
	if !filepath.IsAbs(path) && !strings.HasPrefix(path, ".") {
		path = "./" + path
	}
	return fmt.Errorf("no database at %s; set DATABASE_URL or run from the folder that holds it ('felix migrate' creates a new one)", path)
}

const keysUsage = `create [--key K] [--calls N] [--name NAME] | get KEY | set KEY N | list [--search S] [--limit N] [--offset N]`

func keysCmd(ctx context.Context, e env, args []string) error {
	summary := "Manage API keys directly in the database (no running server needed):\n" +
		"  create   create a key (generated unless --key is given); prints it once\n" +
		"  get      print a key's statistics\n" +
		"  set      set a key's remaining calls\n" +
		"  list     list keys, newest first\n" +
		"Add --json before the subcommand for JSON output."
	fs := newFlags(e, "keys", keysUsage, summary, []string{"DATABASE_URL", "AUTO_MIGRATE"})
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	sub, rest := fs.Arg(0), fs.Args()[1:]
	sfs := newFlags(e, "keys "+sub, "", summary, nil)
	var (
		key    = sfs.String("key", "", "the key to create (default: generate fx_ + 32 random characters)")
		calls  = sfs.Int64("calls", 0, "initial remaining calls")
		name   = sfs.String("name", "", "a name for the key (owner, purpose)")
		search = sfs.String("search", "", "only keys whose display prefix or name matches")
		limit  = sfs.Int("limit", 50, "how many keys to list")
		offset = sfs.Int("offset", 0, "how many keys to skip")
	)
	if err := parseFlags(e, sfs, rest); err != nil {
		return err
	}
	if n, ok := map[string]int{"create": 0, "get": 1, "set": 2, "list": 0}[sub]; !ok || sfs.NArg() != n {
		fs.Usage()
		return errUsage
	}
	var setTo int64
	if sub == "set" {
		n, err := strconv.ParseInt(sfs.Arg(1), 10, 64)
		if err != nil {
			return fmt.Errorf("remaining calls %q is not an integer", sfs.Arg(1))
		}
		setTo = n
	}
	svc, closeStore, err := openService(ctx, e)
	if err != nil {
		return err
	}
	defer closeStore()
	out := keyPrinter{w: e.stdout, json: *asJSON}

	switch sub {
	case "create":
		k, full, err := svc.CreateKey(ctx, *key, *name, *calls)
		if err != nil {
			return err
		}
		if !out.json {
			fmt.Fprintf(e.stdout, "API key (shown only now): %s\n\n", full)
		}
		return out.print(full, k)
	case "get":
		k, err := svc.Key(ctx, sfs.Arg(0))
		if err != nil {
			return err
		}
		return out.print("", k)
	case "set":
		k, err := svc.SetRemaining(ctx, sfs.Arg(0), setTo)
		if err != nil {
			return err
		}
		return out.print("", k)
	default: // list
		keys, err := svc.ListKeys(ctx, quota.ListOptions{Search: *search, Limit: *limit, Offset: *offset})
		if err != nil {
			return err
		}
		return out.print("", keys...)
	}
}

type keyPrinter struct {
	w    io.Writer
	json bool
}

// print writes keys as a table or JSON; full replaces the masked key of a
// single key just created.
func (p keyPrinter) print(full string, keys ...quota.Key) error {
	out := make([]quota.Stats, len(keys))
	for i, k := range keys {
		out[i] = k.Stats()
		if full != "" {
			out[i].APIKey = full
		}
	}
	if p.json {
		enc := json.NewEncoder(p.w)
		enc.SetIndent("", "  ")
		if len(out) == 1 && full != "" {
			return enc.Encode(out[0])
		}
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tNAME\tTOTAL\tSUCCESSFUL\tREMAINING\tIN FLIGHT\tCREATED")
	for _, k := range out {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", k.ID, k.APIKey, k.Name, k.TotalCalls, k.SuccessfulCalls, k.RemainingCalls, k.ReservedCalls, k.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func statsCmd(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "stats", "[--days N] [--json]", "Print site statistics: total generations, today's, and the daily history.", []string{"DATABASE_URL", "STATS_TIMEZONE"})
	days := fs.Int("days", 30, "how many days of history")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	svc, closeStore, err := openService(ctx, e)
	if err != nil {
		return err
	}
	defer closeStore()
	st, err := svc.SiteStats(ctx, *days)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.stdout).Encode(map[string]any{
			"totalGenerations": st.TotalGenerations, "dailyGenerations": st.DailyGenerations, "days": st.Days})
	}
	fmt.Fprintf(e.stdout, "Total generations: %d\nToday:             %d\n\n", st.TotalGenerations, st.DailyGenerations)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATE\tGENERATIONS")
	for _, d := range st.Days {
		fmt.Fprintf(tw, "%s\t%d\n", d.Date, d.Generations)
	}
	return tw.Flush()
}
