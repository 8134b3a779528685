package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
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
	st, err := startStore(ctx, cfg, cfg.AutoMigrate, false, store.Options{MaxConns: 2})
	if err != nil {
		return nil, nil, err
	}
	cfg.InstanceID = "cli"
	return newService(cfg, st, newLogger(cfg, e.stderr), nil), func() { st.Close() }, nil
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

// subcommand is one "felix keys" subcommand: its arguments, what it does,
// and how to run it with its own flags.
type subcommand struct {
	name, args, summary string
	nargs               int // positional arguments it takes
	flags               func(fs *flag.FlagSet) func(ctx context.Context, c keysCtx) error
}

// keysCtx is what a subcommand runs with.
type keysCtx struct {
	svc  *quota.Service
	out  io.Writer
	json bool
	args []string
}

// A key is addressed by its id, its display prefix (when only one key has
// it) or its full plaintext.
const keyArg = "ID|PREFIX|KEY"

var keySubcommands = []subcommand{
	{"list", "[--search S] [--status S] [--limit N]", "list keys, newest first", 0, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		search := fs.String("search", "", "only keys whose name, note or display prefix matches")
		status := fs.String("status", "", "only keys with this status: active, disabled, expired or exhausted")
		limit := fs.Int("limit", 50, "how many keys to list (1 to 500)")
		return func(ctx context.Context, c keysCtx) error {
			keys, _, err := c.svc.ListKeys(ctx, quota.KeyFilter{Query: *search, Status: *status, Limit: min(max(*limit, 1), 500)})
			if err != nil {
				return err
			}
			return c.printKeys("", keys...)
		}
	}},
	{"show", keyArg, "print a key", 1, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return func(ctx context.Context, c keysCtx) error {
			k, err := c.resolve(ctx, c.args[0])
			if err != nil {
				return err
			}
			return c.printKeys("", k)
		}
	}},
	{"create", "[--key K] [--calls N] [--name NAME] [--note NOTE] [--expires TIME]", "create a key (generated unless --key is given); prints it once", 0, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		key := fs.String("key", "", "the key to create (default: generate fx_ + 32 random characters)")
		calls := fs.Int64("calls", 0, "initial remaining calls")
		name := fs.String("name", "", "a name for the key (owner, purpose)")
		note := fs.String("note", "", "a note for operators")
		expires := fs.String("expires", "", "when the key stops working, RFC 3339 (e.g. 2026-12-31T23:59:59Z)")
		limits := policyFlags(fs)
		return func(ctx context.Context, c keysCtx) error {
			spec := quota.KeySpec{Key: *key, Remaining: *calls, Name: *name, Note: *note}
			if *expires != "" {
				t, err := parseTime(*expires)
				if err != nil {
					return err
				}
				spec.ExpiresAt = &t
			}
			change, err := limits()
			if err != nil {
				return err
			}
			spec.Policies = quota.Policies{RateLimit: change.RateLimit, MaxConcurrent: change.MaxConcurrent, Refill: change.Refill}
			spec.Policies.CostPerImage = change.CostPerImage != nil && *change.CostPerImage
			k, full, err := c.svc.CreateKey(ctx, spec)
			if err != nil {
				return err
			}
			if !c.json {
				fmt.Fprintf(c.out, "API key (shown only now): %s\n\n", full)
			}
			return c.printKeys(full, k)
		}
	}},
	{"topup", keyArg + " N", "add N calls to a key (a negative N removes them)", 2, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return func(ctx context.Context, c keysCtx) error {
			n, err := parseCalls(c.args[1])
			if err != nil {
				return err
			}
			return c.change(ctx, func(id int64) (quota.Key, error) { return c.svc.TopUp(ctx, id, n) })
		}
	}},
	{"set", keyArg + " N", "set a key's remaining calls", 2, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return func(ctx context.Context, c keysCtx) error {
			n, err := parseCalls(c.args[1])
			if err != nil {
				return err
			}
			return c.change(ctx, func(id int64) (quota.Key, error) { return c.svc.ChangeKey(ctx, id, quota.KeyChange{Remaining: &n}) })
		}
	}},
	{"disable", keyArg, "switch a key off: its calls are refused (403 key_disabled)", 1, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return setDisabled(true)
	}},
	{"enable", keyArg, "switch a disabled key on again", 1, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return setDisabled(false)
	}},
	{"expire", keyArg + " TIME|never", "set when a key stops working (RFC 3339), or never", 2, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return func(ctx context.Context, c keysCtx) error {
			change := quota.KeyChange{ClearExpiry: c.args[1] == "never"}
			if !change.ClearExpiry {
				t, err := parseTime(c.args[1])
				if err != nil {
					return err
				}
				change.ExpiresAt = &t
			}
			return c.change(ctx, func(id int64) (quota.Key, error) { return c.svc.ChangeKey(ctx, id, change) })
		}
	}},
	{"limits", keyArg + " [--rate N/PERIOD|none] [--max-concurrent N|none] [--cost-per-image true|false] [--refill N/PERIOD|none]",
		"set a key's policies: rate limit, concurrency cap, cost per image, refill", 1, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
			limits := policyFlags(fs)
			return func(ctx context.Context, c keysCtx) error {
				change, err := limits()
				if err != nil {
					return err
				}
				return c.change(ctx, func(id int64) (quota.Key, error) { return c.svc.ChangeKey(ctx, id, change) })
			}
		}},
	{"delete", keyArg, "delete a key: it stops working at once; its usage and events stay for the books", 1, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return func(ctx context.Context, c keysCtx) error {
			k, err := c.resolve(ctx, c.args[0])
			if err != nil {
				return err
			}
			if err := c.svc.DeleteKey(ctx, k.ID); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "deleted key %d (%s…)\n", k.ID, k.Prefix)
			return nil
		}
	}},
	{"events", keyArg, "print a key's events: every change to it by an operator", 1, func(fs *flag.FlagSet) func(context.Context, keysCtx) error {
		return func(ctx context.Context, c keysCtx) error {
			k, err := c.resolve(ctx, c.args[0])
			if err != nil {
				return err
			}
			events, err := c.svc.KeyEvents(ctx, k.ID)
			if err != nil {
				return err
			}
			if c.json {
				return writeIndented(c.out, events)
			}
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AT\tACTION\tCALLS\tBEFORE\tAFTER\tDETAIL")
			for _, e := range events {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Format(time.RFC3339), e.Action, optInt(e.Calls), optInt(e.Before), optInt(e.After), e.Detail)
			}
			return tw.Flush()
		}
	}},
}

// policyFlags defines the flags of a key's policies and returns what reads
// them into a change (unset flags change nothing; "none" clears).
func policyFlags(fs *flag.FlagSet) func() (quota.KeyChange, error) {
	rate := fs.String("rate", "", "rate limit as N/PERIOD, e.g. 60/minute (PERIOD: second, minute, hour or day), or none")
	concurrent := fs.String("max-concurrent", "", "most calls in flight at once, or none")
	perImage := fs.String("cost-per-image", "", "true: a call costs its batch_size; false: a call costs 1")
	refill := fs.String("refill", "", "set remaining calls to N at each PERIOD's start, as N/PERIOD (PERIOD: day or month), or none")
	return func() (quota.KeyChange, error) {
		var c quota.KeyChange
		if *rate == "none" {
			c.ClearRateLimit = true
		} else if *rate != "" {
			n, per, err := perPeriod("--rate", *rate)
			if err != nil {
				return c, err
			}
			c.RateLimit = &quota.RateLimit{Requests: n, Per: per}
		}
		if *concurrent == "none" {
			c.ClearMaxConcurrent = true
		} else if *concurrent != "" {
			n, err := strconv.ParseInt(*concurrent, 10, 64)
			if err != nil {
				return c, fmt.Errorf("--max-concurrent %q is not an integer or none", *concurrent)
			}
			c.MaxConcurrent = &n
		}
		if *perImage != "" {
			b, err := strconv.ParseBool(*perImage)
			if err != nil {
				return c, fmt.Errorf("--cost-per-image %q is not true or false", *perImage)
			}
			c.CostPerImage = &b
		}
		if *refill == "none" {
			c.ClearRefill = true
		} else if *refill != "" {
			n, every, err := perPeriod("--refill", *refill)
			if err != nil {
				return c, err
			}
			c.Refill = &quota.Refill{Calls: n, Every: every}
		}
		return c, nil
	}
}

// perPeriod reads N/PERIOD.
func perPeriod(flag, s string) (int64, string, error) {
	num, period, ok := strings.Cut(s, "/")
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || period == "" {
		return 0, "", fmt.Errorf("%s %q is not N/PERIOD, e.g. 60/minute", flag, s)
	}
	return n, period, nil
}

func setDisabled(disabled bool) func(context.Context, keysCtx) error {
	return func(ctx context.Context, c keysCtx) error {
		return c.change(ctx, func(id int64) (quota.Key, error) {
			return c.svc.ChangeKey(ctx, id, quota.KeyChange{Disabled: &disabled})
		})
	}
}

func keysCmd(ctx context.Context, e env, args []string) error {
	var summary strings.Builder
	summary.WriteString("Manage API keys directly in the database (no running server needed).\nA key is addressed by its id, its display prefix (when unique) or the full key.\n\nSubcommands:\n")
	for _, sc := range keySubcommands {
		fmt.Fprintf(&summary, "  %-8s %s\n", sc.name, sc.summary)
	}
	summary.WriteString("\nRun 'felix keys <subcommand> --help' for its flags; every subcommand takes --json.")
	fs := newFlags(e, "keys", "<subcommand> [flags] [args]", summary.String(), []string{"DATABASE_URL", "AUTO_MIGRATE"})
	asJSON := fs.Bool("json", false, "print JSON (also accepted after the subcommand)")
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	name := fs.Arg(0)
	for _, sc := range keySubcommands {
		if sc.name == name {
			return sc.run(ctx, e, fs.Args()[1:], *asJSON)
		}
	}
	fs.Usage()
	return errors.Join(errUsage, fmt.Errorf("unknown subcommand %q of felix keys", name))
}

// run parses the subcommand's own flags (before or after its arguments)
// and runs it.
func (sc subcommand) run(ctx context.Context, e env, args []string, asJSONDefault bool) error {
	fs := newFlags(e, "keys "+sc.name, sc.args+" [--json]", sc.summary+".", []string{"DATABASE_URL", "AUTO_MIGRATE"})
	asJSON := fs.Bool("json", asJSONDefault, "print JSON instead of a table")
	do := sc.flags(fs)
	positional, err := parseInterspersed(e, fs, args)
	if err != nil {
		return err
	}
	if len(positional) != sc.nargs {
		fs.Usage()
		return errors.Join(errUsage, fmt.Errorf("felix keys %s takes %d argument(s): %s", sc.name, sc.nargs, sc.args))
	}
	svc, closeStore, err := openService(ctx, e)
	if err != nil {
		return err
	}
	defer closeStore()
	return do(ctx, keysCtx{svc: svc, out: e.stdout, json: *asJSON, args: positional})
}

// parseInterspersed parses flags that come before, between or after the
// positional arguments, which it returns.
func parseInterspersed(e env, fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := parseFlags(e, fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

var digits = regexp.MustCompile(`^[0-9]+$`)

// resolve finds the key an argument names: an id, a display prefix shared
// by no other key, or a full key.
func (c keysCtx) resolve(ctx context.Context, arg string) (quota.Key, error) {
	if digits.MatchString(arg) {
		id, err := strconv.ParseInt(arg, 10, 64)
		if err == nil {
			return c.svc.KeyByID(ctx, id)
		}
	}
	keys, _, err := c.svc.ListKeys(ctx, quota.KeyFilter{Query: arg, Limit: 500})
	if err != nil {
		return quota.Key{}, err
	}
	var found []quota.Key
	for _, k := range keys {
		if k.Prefix == strings.TrimSuffix(arg, "…") {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if k, err := c.svc.Key(ctx, arg); err == nil {
			return k, nil
		}
		return quota.Key{}, fmt.Errorf("no key has the id, display prefix or value %q: see felix keys list", arg)
	}
	ids := make([]string, len(found))
	for i, k := range found {
		ids[i] = strconv.FormatInt(k.ID, 10)
	}
	return quota.Key{}, fmt.Errorf("%d keys have the display prefix %q (ids %s): name one by its id", len(found), arg, strings.Join(ids, ", "))
}

// change applies a change to the key in c.args[0] and prints it.
func (c keysCtx) change(ctx context.Context, apply func(id int64) (quota.Key, error)) error {
	k, err := c.resolve(ctx, c.args[0])
	if err != nil {
		return err
	}
	if k, err = apply(k.ID); err != nil {
		return err
	}
	return c.printKeys("", k)
}

// printKeys writes keys as a table or JSON; full replaces the masked key of
// a single key just created.
func (c keysCtx) printKeys(full string, keys ...quota.Key) error {
	now := c.svc.Now()
	out := make([]quota.Stats, len(keys))
	for i, k := range keys {
		out[i] = k.Stats(now)
		if full != "" {
			out[i].APIKey = full
		}
	}
	if c.json {
		if len(out) == 1 && full != "" {
			return writeIndented(c.out, out[0])
		}
		return writeIndented(c.out, out)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tNAME\tSTATUS\tTOTAL\tSUCCESSFUL\tREMAINING\tIN FLIGHT\tEXPIRES\tLIMITS\tCREATED")
	for _, k := range out {
		expires := "never"
		if k.ExpiresAt != nil {
			expires = k.ExpiresAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", k.ID, k.APIKey, k.Name, k.Status, k.TotalCalls, k.SuccessfulCalls,
			k.RemainingCalls, k.ReservedCalls, expires, limitsOf(k), k.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// limitsOf describes a key's policies in a few words ("-" for none).
func limitsOf(k quota.Stats) string {
	var parts []string
	if k.RateLimit != nil {
		parts = append(parts, fmt.Sprintf("%d/%s", k.RateLimit.Requests, k.RateLimit.Per))
	}
	if k.MaxConcurrent != nil {
		parts = append(parts, fmt.Sprintf("≤%d at once", *k.MaxConcurrent))
	}
	if k.CostPerImage {
		parts = append(parts, "per image")
	}
	if k.Refill != nil {
		parts = append(parts, fmt.Sprintf("refill %d/%s", k.Refill.Calls, k.Refill.Every))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func optInt(p *int64) string {
	if p == nil {
		return ""
	}
	return strconv.FormatInt(*p, 10)
}

func parseCalls(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("calls %q is not an integer", s)
	}
	return n, nil
}

// parseTime reads an RFC 3339 time or a date (midnight UTC).
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (2026-12-31T23:59:59Z) or a date (2026-12-31)", s)
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
